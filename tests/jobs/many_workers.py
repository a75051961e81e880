"""A default sparse fit of 10,000 classes on eight one-core executor JVMs
(local-cluster[8,1,1024]): what auto picks, whether the fit holds rows out, and the bytes a
step sent against the cost model's. Printed as JSON; run by test_local_cluster.py in its own
process. On 2 cores the eight workers are oversubscribed, so only bytes and counts are exact.
"""

import json
import os
import tempfile
import time

# Worker and executor scratch space, instead of the pyspark package directory.
os.environ["SPARK_WORKER_DIR"] = tempfile.mkdtemp(prefix="svb-worker-")

import numpy as np  # noqa: E402

from svb_spark import SVBLogisticRegression, datasets  # noqa: E402
from svb_spark.spark.session import local_session  # noqa: E402

WORKERS, CLASSES = 8, 10_000
spark = local_session(
    f"local-cluster[{WORKERS},1,1024]",
    app_name="svb_spark-many-workers",
    **{"spark.executor.memory": "512m", "spark.default.parallelism": str(WORKERS)},
)
# A barrier stage needs every executor registered; they take a few seconds to start.
deadline = time.time() + 180
while spark.sparkContext._jsc.sc().getExecutorIds().size() < WORKERS and time.time() < deadline:
    time.sleep(0.5)

# 21 rows a class on average: enough for the default to hold a tenth out (20 and more).
draw = datasets.tagged_text(CLASSES, np.random.default_rng(0), num_features=1 << 12)
X, y = draw(21 * CLASSES)
df = datasets.to_dataframe(spark, X, y, num_partitions=WORKERS).cache()
# Every param at its default but maxIter: the choice and a step's bytes do not depend on it.
summary = SVBLogisticRegression(maxIter=2).fit(df).summary
print("RESULT " + json.dumps({
    "workers": summary.numWorkers,
    "exchange": summary.exchange,
    "reason": summary.exchangeReason,
    "solver": summary.solver,
    "held_out_epochs": len(summary.validationAccuracy),
    "steps": summary.steps,
    "payload_per_exchange": summary.payloadBytesPerExchange,
    "predicted": summary.predictedBytesPerStep,
}))  # fmt: skip
spark.stop()
