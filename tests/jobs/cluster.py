"""Fit on local-cluster[2,1,1024] (two executor JVMs) and print the result as JSON.

Arguments: the exchange mode (default p2p) and, optionally, "forget" to make broadcast-mode
tasks drop their cached replicas every round, and "four" for four workers on
local-cluster[2,2,1024], which also prints the single-process reference's coefficients.
Run by test_local_cluster.py in its own process: a Python process holds one SparkContext,
and the suite's local[2] session is already running.
"""

import functools
import json
import os
import sys
import tempfile
import time

# Worker and executor scratch space, instead of the pyspark package directory.
os.environ["SPARK_WORKER_DIR"] = tempfile.mkdtemp(prefix="svb-worker-")

from svb_spark import SVBLogisticRegression  # noqa: E402
from svb_spark.spark import broadcast  # noqa: E402
from svb_spark.spark.session import local_session  # noqa: E402
from tests.support.data import planted_frame  # noqa: E402

four = "four" in sys.argv[2:]
cores = 2 if four else 1
spark = local_session(
    f"local-cluster[2,{cores},1024]",
    app_name="svb_spark-local-cluster",
    **{"spark.executor.memory": "512m", "spark.default.parallelism": str(2 * cores)},
)
# A barrier stage needs both executors registered; they take a few seconds to start.
deadline = time.time() + 120
while spark.sparkContext._jsc.sc().getExecutorIds().size() < 2 and time.time() < deadline:
    time.sleep(0.5)

exchange = sys.argv[1] if len(sys.argv) > 1 else "p2p"
# SGD: the broadcast mode trains with it, and the reference below is SGD too.
estimator = SVBLogisticRegression(
    weightCol="weight", numWorkers=2 * cores, maxIter=4, dtype="float64", exchange=exchange,
    solver="sgd",
)  # fmt: skip
if "forget" in sys.argv[2:]:  # every broadcast-mode task rebuilds its replica each round
    broadcast._round_task = functools.partial(broadcast._round_task, forget_replica=True)
df = planted_frame(spark).cache()
model = estimator.fit(df)
result = {
    "coefficients": model.coefficientMatrix.toArray().tolist(),
    "workers": model.summary.workers,
    "rebuilds": model.summary.replicaRebuilds,
    "exchanges": model.summary.exchanges,
    "driver_pid": os.getpid(),
}
if four:
    from tests.support.data import planted
    from tests.support.reference import reference_model

    W, _, _ = reference_model(
        df, *planted(), 4, batch_size=32, max_iter=4, tol=1e-6, reg_param=0.0,
        fit_intercept=True, step_size=1.0, seed=estimator.getSeed(), dtype="float64",
    )  # fmt: skip
    result["reference"] = W.tolist()
print("RESULT " + json.dumps(result))
spark.stop()
