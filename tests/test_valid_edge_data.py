"""Unusual data that is still valid trains for real: empty workers and a single present class."""

from pyspark.ml.linalg import Vectors

from svb_spark import SVBLogisticRegression


def test_fewer_rows_than_workers(spark):
    df = spark.createDataFrame([(Vectors.dense([3.0, -1.0]), 1.0)], ["features", "label"])
    model = SVBLogisticRegression(numWorkers=2, numClasses=2, maxIter=20).fit(df)

    # The worker without a row still joined the barrier stage and every exchange.
    assert model.summary.numWorkers == 2
    assert sorted(worker["rows"] for worker in model.summary.workers) == [0, 1]
    assert model.numClasses == 2
    assert model.transform(df).head().prediction == 1.0


def test_single_present_class_with_num_classes_given(spark):
    rows = [(Vectors.dense([float(i), 1.0]), 0.0) for i in range(6)]
    df = spark.createDataFrame(rows, ["features", "label"])
    model = SVBLogisticRegression(numWorkers=2, numClasses=3, maxIter=20).fit(df)

    assert model.numClasses == 3
    assert {row.prediction for row in model.transform(df).collect()} == {0.0}
