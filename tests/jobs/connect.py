"""Fit, transform, save and load over Spark Connect (remote("local[2]")); print JSON.

Run by test_connect.py in its own process: a Python process cannot reliably hold a classic
session (the suite's) and a Connect session side by side.
"""

import json
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

import numpy as np  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from svb_spark import SVBLogisticRegression, SVBLogisticRegressionModel  # noqa: E402
from svb_spark.spark.scoring import add_prediction_columns  # noqa: E402
from svb_spark.spark.session import available_task_slots, default_parallelism, spark_context  # noqa: E402
from tests.support.data import planted, to_frame  # noqa: E402

started = time.perf_counter()
spark = SparkSession.builder.remote("local[2]").getOrCreate()
out = {"start_seconds": time.perf_counter() - started}
assert spark_context(spark) is None, "expected a Connect session without a SparkContext"
out["default_parallelism"] = default_parallelism(spark)
out["task_slots"] = available_task_slots(spark)

X, y, _ = planted(n=300)
df = to_frame(spark, X, y)
model = SVBLogisticRegression(numWorkers=2, maxIter=3, dtype="float64").fit(df)
out["history"] = model.summary.objectiveHistory
out["accuracy"] = model.summary.accuracy
predicted = np.array([r.prediction for r in model.transform(df).select("prediction").collect()])

path = os.path.join(tempfile.mkdtemp(prefix="svb-connect-"), "model")
model.write().overwrite().save(path)
loaded = SVBLogisticRegressionModel.load(path)
out["same_coefficients"] = bool(
    np.array_equal(loaded.coefficientMatrix.toArray(), model.coefficientMatrix.toArray())
)
again = np.array([r.prediction for r in loaded.transform(df).select("prediction").collect()])
out["same_predictions"] = bool(np.array_equal(predicted, again))
out["evaluate_accuracy"] = loaded.evaluate(df).accuracy

# Connect has no broadcast variables: scoring in class blocks falls back to the closure.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    blocked = add_prediction_columns(
        df,
        model.coefficientMatrix.toArray(),
        model.interceptVector.toArray(),
        features="features",
        raw_col="",
        probability_col="",
        prediction_col="prediction",
        thresholds=None,
        block_bytes=1,
    )
out["block_warnings"] = [str(w.message) for w in caught]
blocked_predictions = np.array([r.prediction for r in blocked.select("prediction").collect()])
out["block_same_predictions"] = bool(np.array_equal(predicted, blocked_predictions))

warm = SVBLogisticRegression(numWorkers=2, maxIter=1, dtype="float64", initialModel=model).fit(df)
out["warm_first_objective"] = warm.summary.objectiveHistory[0]

for name, call in (
    ("to_mllib_error", lambda: model.toMLlib()),
    ("broadcast_error", lambda: SVBLogisticRegression(exchange="broadcast").fit(df)),
):
    try:
        call()
        out[name] = None
    except Exception as error:
        out[name] = f"{type(error).__name__}: {error}"
out["seconds"] = time.perf_counter() - started
print("RESULT " + json.dumps(out))
spark.stop()
