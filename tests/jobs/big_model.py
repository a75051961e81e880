"""A model larger than an executor's Python memory, on local-cluster[2,1,...]: the replicated
modes are refused on the driver with their formula, the class-sharded mode trains, saves, loads
and scores it. Prints what happened as JSON.

1500 classes x 2^18 hashed features in float64 is a 3.1 GB replica; each executor's Python
workers are capped at 2.9 GB (``spark.executor.pyspark.memory``, enforced by Spark as an
address-space limit), so a worker can hold a block of 750 classes (1.6 GB) but not a replica.
"""

import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

os.environ["SPARK_WORKER_DIR"] = tempfile.mkdtemp(prefix="svb-worker-")

from svb_spark import SVBLogisticRegression, SVBLogisticRegressionModel, datasets  # noqa: E402
from svb_spark.spark.session import local_session  # noqa: E402


def stage(name: str) -> None:
    """A progress line with the driver's resident memory, on stderr."""
    with open("/proc/self/status") as status:
        rss = next(line.split()[1] for line in status if line.startswith("VmRSS"))
    print(f"{time.strftime('%X')} {name}: driver RSS {int(rss) >> 10} MB", file=sys.stderr)


CLASSES, FEATURES, CAP = int(sys.argv[1]) if len(sys.argv) > 1 else 1500, 2**18, "2900m"
spark = local_session(
    "local-cluster[2,1,2048]",
    app_name="svb_spark-big-model",
    **{
        "spark.executor.memory": "1g",
        "spark.executor.pyspark.memory": CAP,
        # Spark caps the workers' address space; Arrow's default allocator (mimalloc) would
        # reserve 1 GiB of it up front.
        "spark.executorEnv.ARROW_DEFAULT_MEMORY_POOL": "system",
        "spark.driver.memory": "8g",
        "spark.driver.maxResultSize": "0",
        "spark.default.parallelism": "2",
    },
)
deadline = time.time() + 120
while spark.sparkContext._jsc.sc().getExecutorIds().size() < 2 and time.time() < deadline:
    time.sleep(0.5)

X, y = datasets.planted_sparse(rows=3000, num_features=FEATURES, num_classes=CLASSES, seed=2)
df = datasets.to_dataframe(spark, X, y, 2).cache()
result = {"replica_bytes": CLASSES * FEATURES * 8, "cap_bytes": 2900 << 20}
params = dict(numWorkers=2, maxIter=1, tol=0.0, dtype="float64", numClasses=CLASSES)
try:
    SVBLogisticRegression(exchange="p2p", solver="sgd", **params).fit(df)
    result["p2p_refused"] = ""
except ValueError as error:
    result["p2p_refused"] = str(error)

stage("refused")
started = time.perf_counter()
model = SVBLogisticRegression(exchange="auto", **params).fit(df)
result["fit_seconds"] = time.perf_counter() - started
summary = model.summary
result.update(
    exchange=summary.exchange,
    reason=summary.exchangeReason,
    peak_rss=[worker["peak_rss"] for worker in summary.workers],
    peak_address_space=[worker["peak_address_space"] for worker in summary.workers],
    shape=[model.numClasses, model.numFeatures],
)
stage("fitted")
path = tempfile.mkdtemp(prefix="svb-big-model-")
try:
    model.write().overwrite().save(path)
    stage("saved")
    loaded = SVBLogisticRegressionModel.load(path)
    result["loaded_equal"] = bool(
        np.array_equal(loaded._W, model._W) and np.array_equal(loaded._b, model._b)
    )
finally:
    shutil.rmtree(path, ignore_errors=True)
stage("loaded")
rows = loaded.transform(df.limit(200)).select("features", "prediction").collect()
W, b = model._W, model._b
expected = [int(np.argmax(W[:, r.features.indices] @ r.features.values + b)) for r in rows]
result["scored"] = len(rows)
result["predictions_agree"] = float(np.mean([r.prediction for r in rows] == np.array(expected)))
print("RESULT " + json.dumps(result))
spark.stop()
sys.exit(0)
