"""Bad input fails on the driver, before any barrier stage, naming the column, value and fix."""

import pytest
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F

import svb_spark.classification as classification
from svb_spark import SVBLogisticRegression


@pytest.fixture(autouse=True)
def no_barrier_stage(monkeypatch):
    def refuse(*_):
        raise AssertionError("the barrier stage was planned despite bad input")

    monkeypatch.setattr(classification, "barrier_training_task", refuse)


def frame(spark, rows, schema="features vector, label double"):
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    if schema == "features vector, label double":
        schema = StructType(
            [StructField("features", VectorUDT()), StructField("label", DoubleType())]
        )
    return spark.createDataFrame(rows, schema)


def good_rows():
    return [(Vectors.dense([float(i), 1.0]), float(i % 2)) for i in range(6)]


def fit(df, **params):
    return SVBLogisticRegression(**{"numWorkers": 2, "maxIter": 1, **params}).fit(df)


@pytest.mark.parametrize(
    "bad_label, expected",
    [
        (1.5, r"Column 'label' must hold integer class indices .* found 1\.5.*StringIndexer"),
        (-1.0, r"Column 'label' must hold integer class indices .* found -1\.0"),
        (float("nan"), r"Column 'label' must hold integer class indices .* found nan"),
        (None, r"Column 'label' has 1 null value.*dropna"),
    ],
)
def test_labels_must_be_class_indices(spark, bad_label, expected):
    rows = good_rows() + [(Vectors.dense([1.0, 2.0]), bad_label)]
    with pytest.raises(ValueError, match=expected):
        fit(frame(spark, rows))


def test_label_at_or_above_num_classes(spark):
    rows = good_rows() + [(Vectors.dense([1.0, 2.0]), 3.0)]
    with pytest.raises(ValueError, match=r"label 3, but numClasses is 3.*at least 4"):
        fit(frame(spark, rows), numClasses=3)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_features(spark, value):
    rows = good_rows() + [(Vectors.dense([1.0, value]), 1.0)]
    with pytest.raises(
        ValueError,
        match=rf"Column 'features' has the non-finite value {value} at feature index 1.*Imputer",
    ):
        fit(frame(spark, rows))


def test_vectors_of_different_sizes(spark):
    rows = good_rows() + [(Vectors.sparse(5, [0], [1.0]), 1.0)]
    with pytest.raises(
        ValueError,
        match=r"Column 'features' holds vectors of different sizes \(2 and 5\).*VectorAssembler",
    ):
        fit(frame(spark, rows))


def test_null_feature_vectors(spark):
    rows = good_rows() + [(None, 1.0)]
    with pytest.raises(ValueError, match=r"Column 'features' has 1 null vector"):
        fit(frame(spark, rows))


def test_empty_dataframe(spark):
    with pytest.raises(ValueError, match="The training DataFrame is empty"):
        fit(frame(spark, good_rows()).filter(F.col("label") > 10))


@pytest.mark.parametrize(
    "params, expected",
    [
        (
            {"featuresCol": "pixels"},
            r"The features column 'pixels' does not exist.*\['features', 'label'\]",
        ),
        ({"labelCol": "digit"}, r"The label column 'digit' does not exist"),
        ({"weightCol": "w"}, r"The weight column 'w' does not exist"),
    ],
)
def test_missing_columns(spark, params, expected):
    with pytest.raises(ValueError, match=expected):
        fit(frame(spark, good_rows()), **params)


def test_wrong_column_types(spark):
    df = frame(spark, good_rows())
    with pytest.raises(
        TypeError, match=r"Column 'label' \(label\) must be numeric; got string.*StringIndexer"
    ):
        fit(df.withColumn("label", F.col("label").cast("string")))
    with pytest.raises(
        TypeError, match=r"Column 'text' must be a vector .* got string.*VectorAssembler"
    ):
        fit(df.withColumn("text", F.lit("a")), featuresCol="text")


def test_bad_weights(spark):
    df = frame(spark, good_rows()).withColumn("w", F.when(F.col("label") == 1, -2.0).otherwise(1.0))
    with pytest.raises(ValueError, match=r"Column 'w' has the weight -2\.0"):
        fit(df, weightCol="w")


def test_more_workers_than_task_slots(spark):
    with pytest.raises(ValueError, match=r"numWorkers=3 but the cluster has only 2 free task slot"):
        SVBLogisticRegression(numWorkers=3).fit(frame(spark, good_rows()))


@pytest.mark.parametrize(
    "params, expected",
    [
        (
            {"batchSize": 0},
            "The 'batchSize' parameter of SVBLogisticRegression must be an int > 0. Got 0 instead",
        ),
        (
            {"stepSize": 0.0},
            "The 'stepSize' parameter of SVBLogisticRegression must be a float > 0. "
            "Got 0.0 instead",
        ),
        ({"stepSize": -1.0}, "'stepSize' parameter .* must be a float > 0. Got -1.0"),
        ({"regParam": -0.1}, "'regParam' parameter .* must be a float >= 0. Got -0.1"),
        ({"maxIter": -1}, "'maxIter' parameter .* must be an int >= 0. Got -1"),
        (
            {"exchange": "carrier-pigeon"},
            "'exchange' parameter .* must be one of p2p. Got 'carrier-pigeon'",
        ),
        ({"dtype": "float16"}, "'dtype' parameter .* must be one of float32, float64"),
        (
            {"thresholds": [0.5, 0.5, 0.5]},
            "'thresholds' parameter has 3 values but the data has 2 classes",
        ),
    ],
)
def test_out_of_range_params(spark, params, expected):
    with pytest.raises(ValueError, match=expected):
        fit(frame(spark, good_rows()), **params)


def test_wrong_param_types_fail_when_set():
    with pytest.raises(TypeError):
        SVBLogisticRegression(maxIter="ten")
    with pytest.raises(TypeError):
        SVBLogisticRegression(batchSize=2.5)
