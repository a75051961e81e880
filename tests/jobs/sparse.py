"""Fit the K=500, D=2^18 sparse problem in a process of its own and print the result as JSON.

Its own process, because the final coefficients (500 x 2^18 doubles) need a larger driver
than the suite's shared session has.
"""

import json

from svb_spark import SVBLogisticRegression, datasets
from svb_spark.spark.session import local_session

spark = local_session(
    "local[2]",
    app_name="svb_spark-sparse-job",
    **{"spark.driver.memory": "8g", "spark.driver.maxResultSize": "4g"},
)
X, y = datasets.planted_sparse(rows=25000, seed=11)
X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_fraction=0.2, seed=11)
train = datasets.to_dataframe(spark, X_train, y_train).cache()
test = datasets.to_dataframe(spark, X_test, y_test).cache()
model = SVBLogisticRegression(numWorkers=2, maxIter=5, tol=0.0, exchange="p2p").fit(train)
summary = model.summary
print(
    "RESULT "
    + json.dumps(
        {
            "accuracy": model.evaluate(test).accuracy,
            "nonzeros_per_row": X_train.nnz / X_train.shape[0],
            "steps": summary.steps,
            "payload_sent": summary.payloadBytesSent,
            "predicted": summary.predictedBytesPerStep["p2p"],
            "workers": summary.workers,
        }
    )
)
spark.stop()
