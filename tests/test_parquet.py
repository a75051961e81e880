"""Parquet input with a vector column: fit, transform, evaluate, with Spark's defaults."""

import pytest

from svb_spark import SVBLogisticRegression

COLUMNAR_UDF_INPUT = "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"


@pytest.mark.parametrize("columnar", ["true", "false"])
def test_fit_transform_evaluate_on_parquet_vectors(spark, digits_frames, tmp_path, columnar):
    # Spark 4.3 feeds pandas UDFs columnar Parquet batches that cannot carry vector columns;
    # training and scoring go through mapInArrow, which must work with either setting.
    train, test = digits_frames
    previous = spark.conf.get(COLUMNAR_UDF_INPUT, None)
    spark.conf.set(COLUMNAR_UDF_INPUT, columnar)
    try:
        train.write.parquet(str(tmp_path / "train"))
        test.write.parquet(str(tmp_path / "test"))
        train_pq = spark.read.parquet(str(tmp_path / "train"))
        test_pq = spark.read.parquet(str(tmp_path / "test"))
        model = SVBLogisticRegression(numWorkers=2, maxIter=3).fit(train_pq)
        assert model.summary.accuracy > 0.9
        scored = model.transform(test_pq)
        assert scored.groupBy("prediction").count().count() == 10
        assert model.evaluate(test_pq).accuracy > 0.9
    finally:
        if previous is None:
            spark.conf.unset(COLUMNAR_UDF_INPUT)
        else:
            spark.conf.set(COLUMNAR_UDF_INPUT, previous)
