"""Bad input fails on the driver, before any barrier stage, naming the column, value and fix."""

import re

import pytest
from pyspark.ml.linalg import Vectors
from pyspark.sql import functions as F

import svb_spark.fitting as fitting
from svb_spark import SVBLogisticRegression
from svb_spark.params import _VALUE_RULES
from svb_spark.spark.session import check_barrier_mode_supported, spark_conf, worker_memory
from tests.support.data import live_spark_conf


@pytest.fixture(autouse=True)
def no_barrier_stage(monkeypatch):
    def refuse(*_):
        raise AssertionError("the barrier stage was planned despite bad input")

    monkeypatch.setattr(fitting, "fit_by_barrier_stage", refuse)
    monkeypatch.setattr(fitting, "fit_by_broadcast", refuse)


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
        (float("inf"), r"Column 'label' must hold integer class indices .* found inf"),
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
    with pytest.raises(TypeError) as raised:
        fit(df.withColumn("label", F.col("label").cast("string")))
    message = str(raised.value)
    assert re.match(
        r"Column 'label' must hold numeric class indices .*; got string\. .*StringIndexer", message
    )
    assert message.count("'label'") == 1 and "(label)" not in message
    with pytest.raises(
        TypeError, match=r"Column 'text' must be a vector .* got string.*VectorAssembler"
    ):
        fit(df.withColumn("text", F.lit("a")), featuresCol="text")


@pytest.mark.parametrize(
    "odd_weight, even_weight, expected",
    [
        (-2.0, 1.0, r"Column 'w' has the weight -2\.0; instance weights must be finite and >= 0"),
        (float("nan"), 1.0, r"Column 'w' has the weight nan; instance weights must be finite"),
        (None, 1.0, r"Column 'w' has 3 null weight\(s\).*fillna\(\{'w': 1\.0\}\)"),
        (0.0, 0.0, r"Column 'w' has no positive weight; found a sum of 0\.0 over 6 row\(s\)"),
    ],
)
def test_bad_weights(spark, odd_weight, even_weight, expected):
    weight = F.when(F.col("label") == 1, F.lit(odd_weight)).otherwise(F.lit(even_weight))
    df = frame(spark, good_rows()).withColumn("w", weight.cast("double"))
    with pytest.raises(ValueError, match=expected):
        fit(df, weightCol="w")


def test_weight_column_of_strings(spark):
    df = frame(spark, good_rows()).withColumn("w", F.lit("heavy"))
    with pytest.raises(
        TypeError, match=r"Column 'w' must hold numeric instance weights; got string"
    ):
        fit(df, weightCol="w")


def test_single_class_when_num_classes_is_inferred(spark):
    rows = [(Vectors.dense([float(i), 1.0]), 1.0) for i in range(4)]
    with pytest.raises(
        ValueError,
        match=r"Column 'label' holds a single class: every one of the 4 row\(s\) has the label "
        r"1.*Check the filters.*set numClasses \(>= 2\)",
    ):
        fit(frame(spark, rows))


def test_more_workers_than_task_slots(spark):
    with pytest.raises(ValueError, match=r"numWorkers=3 but the cluster has only 2 free task slot"):
        SVBLogisticRegression(numWorkers=3).fit(frame(spark, good_rows()))


def test_dynamic_allocation(spark):
    # Spark ignores dynamic allocation in local mode unless its testing flag is set.
    dynamic = {"spark.dynamicAllocation.enabled": "true", "spark.dynamicAllocation.testing": "true"}
    with (
        live_spark_conf(spark, dynamic),
        pytest.raises(
            ValueError,
            match=r"'spark.dynamicAllocation.enabled' is true.*barrier stage.*"
            r"--conf spark.dynamicAllocation.enabled=false",
        ),
    ):
        fit(frame(spark, good_rows()))
    assert spark.sparkContext.getConf().get("spark.dynamicAllocation.enabled") is None


def test_dynamic_allocation_flag_alone_is_ignored_in_local_mode(spark):
    # Spark's own rule: local mode has one fixed executor, so barrier stages run.
    with live_spark_conf(spark, {"spark.dynamicAllocation.enabled": "true"}):
        check_barrier_mode_supported(spark)


def test_a_conf_key_is_read_live_without_copying_the_whole_conf(spark, monkeypatch):
    # SparkContext.getConf() copies every entry, one py4j call each: a fit reads a dozen keys.
    monkeypatch.setattr(type(spark.sparkContext), "getConf", lambda sc: pytest.fail("copied"))
    key = "spark.svb.test.live"
    assert spark_conf(spark, key) is None
    assert spark_conf(spark, key, "fallback") == "fallback"
    with live_spark_conf(spark, {key: "set"}):
        assert spark_conf(spark, key) == "set"


@pytest.mark.parametrize("dtype, itemsize", [("float32", 4), ("float64", 8)])
def test_replica_larger_than_worker_memory(spark, dtype, itemsize):
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    num_features = 200
    key, memory = worker_memory(spark)  # spark.driver.memory in local mode, 1g by default
    num_classes = memory // (num_features * itemsize) + 1
    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    rows = [(Vectors.dense([float(i)] * num_features), float(i % 2)) for i in range(4)]
    needed = num_classes * num_features * itemsize
    with pytest.raises(
        ValueError,
        match=rf"numClasses x numFeatures x {itemsize} bytes \({dtype}\) = {num_classes} x "
        rf"{num_features} x {itemsize} = {needed} bytes .* but {re.escape(key)} is {memory} bytes",
    ):
        fit(
            spark.createDataFrame(rows, schema), numClasses=num_classes, dtype=dtype,
            solver="sgd", exchange="p2p",
        )  # fmt: skip
    # (exchange="auto" would shard the classes instead: see test_sharded.) SAGA also keeps the
    # average gradient and K floats per row of the largest worker.
    with pytest.raises(
        ValueError,
        match=rf"SAGA's \(2 x numClasses x numFeatures \+ rows x numClasses\) x {itemsize} bytes "
        rf".* = \(2 x {num_classes} x {num_features} \+ 3 x {num_classes}\) x {itemsize}.*"
        "use solver='sgd'",
    ):
        fit(
            spark.createDataFrame(rows, schema), numClasses=num_classes, dtype=dtype, exchange="p2p"
        )


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
            "'exchange' parameter .* must be one of p2p.*Got 'carrier-pigeon'",
        ),
        ({"dtype": "float16"}, "'dtype' parameter .* must be one of auto, float32, float64"),
        ({"numClasses": 1}, r"'numClasses' parameter .* must be 0 \(infer .*\) or an int >= 2"),
        ({"maxIter": None}, "'maxIter' parameter .* must be an int >= 0. Got None instead"),
        (
            {"thresholds": [0.5, 0.5, 0.5]},
            "'thresholds' parameter has 3 values but the data has 2 classes",
        ),
    ],
)
def test_out_of_range_params(spark, params, expected):
    with pytest.raises(ValueError, match=expected):
        fit(frame(spark, good_rows()), **params)


# Values tried in order for each rule; the first one the param's type converter accepts and the
# rule rejects is the out-of-range value of its test.
_OUT_OF_RANGE_CANDIDATES = (-1, 0, 1, "no-such-value")


def out_of_range_value(name, is_valid):
    param = SVBLogisticRegression().getParam(name)
    for candidate in _OUT_OF_RANGE_CANDIDATES:
        try:
            value = param.typeConverter(candidate)
        except TypeError:
            continue
        if not is_valid(value):
            return value
    raise AssertionError(f"add an out-of-range value for '{name}' to _OUT_OF_RANGE_CANDIDATES")


@pytest.mark.parametrize(
    "name, is_valid, requirement", _VALUE_RULES, ids=[rule[0] for rule in _VALUE_RULES]
)
def test_every_value_rule(spark, name, is_valid, requirement):
    value = out_of_range_value(name, is_valid)
    expected = (
        f"The '{name}' parameter of SVBLogisticRegression must be {requirement}. "
        f"Got {value!r} instead."
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        fit(frame(spark, good_rows()), **{name: value})


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"maxIter": "ten"}, r'param "maxIter". Could not convert ten to int'),
        ({"batchSize": 2.5}, r'param "batchSize". Could not convert 2.5 to int'),
        ({"tol": "small"}, r'param "tol". Could not convert small to float'),
        ({"fitIntercept": "yes"}, r'param "fitIntercept". Boolean Param requires .* bool'),
        ({"dtype": 32}, r'param "dtype". Could not convert .*int.* to string'),
        ({"thresholds": "0.5"}, r'param "thresholds". Could not convert 0.5 to list of floats'),
    ],
)
def test_wrong_param_types_fail_when_set(params, expected):
    with pytest.raises(TypeError, match=expected):
        SVBLogisticRegression(**params)
    name, value = next(iter(params.items()))
    with pytest.raises(TypeError, match=expected):
        getattr(SVBLogisticRegression(), "set" + name[0].upper() + name[1:])(value)


@pytest.mark.parametrize(
    "values, params, expected",
    [
        ([True, False] * 3, {"validationIndicatorCol": "missing"}, "'missing' does not exist"),
        ([1.0, 0.0] * 3, {}, r"must be boolean; got double.*F\.rand"),
        ([True] * 6, {}, "true on every row, so nothing is left to train on"),
        ([False] * 6, {}, "false on every row, so nothing is held out"),
        ([True, False, None, False, True, False], {}, "1 null value"),
        ([True, False] * 3, {"exchange": "broadcast"}, "validationIndicatorCol needs"),
    ],
)
def test_bad_validation_columns(spark, values, params, expected):
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import BooleanType, DoubleType, StructField, StructType

    indicator = DoubleType() if isinstance(values[0], float) else BooleanType()
    schema = StructType(
        [
            StructField("features", VectorUDT()),
            StructField("label", DoubleType()),
            StructField("isVal", indicator),
        ]
    )
    rows = [(*row, value) for row, value in zip(good_rows(), values)]
    with pytest.raises((ValueError, TypeError), match=expected):
        fit(spark.createDataFrame(rows, schema), **{"validationIndicatorCol": "isVal", **params})


def test_saga_where_it_does_not_apply(spark):
    with pytest.raises(ValueError, match=r"'solver' parameter .* is 'saga' but syncInterval is 2"):
        fit(frame(spark, good_rows()), solver="saga", syncInterval=2)
    sparse_rows = [(Vectors.sparse(400, [i], [1.0]), float(i % 2)) for i in range(6)]
    with pytest.raises(ValueError, match="'saga' but the features are sparse"):
        fit(frame(spark, sparse_rows), solver="saga")
