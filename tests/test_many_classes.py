"""A few thousand classes end to end on Spark: a default fit on long-tailed text-like rows
with string labels, its top-k classes against numpy's, RankingEvaluator on them, the labels
StringIndexer wrote, and a save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from svb_spark import SVBLogisticRegression
from svb_spark.datasets import tagged_text, to_dataframe

K, D = 2000, 1 << 13


@pytest.fixture(scope="module")
def tagged(spark):
    """Train and test frames of 2,000 classes (about 8 training rows each, a class owning 4 of
    2^13 hashed features) whose labels are strings, and the test rows as CSR."""
    from pyspark.sql import functions as F

    X, y = tagged_text(K, np.random.default_rng(7), skew=0.0, num_features=D)(20000)
    cut = 16000

    def frame(rows):
        df = to_dataframe(spark, X[rows], y[rows]).withColumn("id", F.monotonically_increasing_id())
        df = df.withColumn("tag", F.format_string("tag-%04d", F.col("label").cast("int")))
        return df.repartition(2)  # the rows' order is the ids' (below), not the partitions'

    train, test = frame(slice(0, cut)).cache(), frame(slice(cut, None)).cache()
    yield train, test, X[cut:], y[cut:]
    train.unpersist()
    test.unpersist()


def test_a_default_fit_of_2000_classes_ranks_them_as_numpy_and_keeps_its_labels(tagged, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.evaluation import RankingEvaluator
    from pyspark.ml.feature import StringIndexer
    from pyspark.sql import functions as F

    train, test, X_test, y_test = tagged
    estimator = SVBLogisticRegression(
        numWorkers=2, topK=5, topKCol="topK", topKProbabilityCol="topKProbability",
        topKLabelsCol="topKLabels", probabilityCol="", rawPredictionCol="",
    )  # fmt: skip
    indexer = StringIndexer(inputCol="tag", outputCol="label", handleInvalid="keep")
    fitted = Pipeline(stages=[indexer, estimator]).fit(train.drop("label"))
    model = fitted.stages[-1]
    assert model.numClasses >= 1990 and len(model.labels) == model.numClasses

    scored = fitted.transform(test.drop("label")).orderBy("id").collect()
    W, b = model.coefficientMatrix.toArray(), model.interceptVector.toArray()
    margins = np.asarray(X_test @ W.T) + b
    p = np.exp(margins - margins.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(np.array([r.topK for r in scored]), order)
    np.testing.assert_allclose(
        np.array([r.topKProbability for r in scored]),
        np.take_along_axis(p, order, axis=1),
        rtol=1e-9,
    )
    labels = np.asarray(model.labels)
    assert all(r.topKLabels == labels[np.asarray(r.topK, dtype=int)].tolist() for r in scored)
    # The fit learned: its most probable label is the row's own for most rows.
    top1 = np.mean([r.topKLabels[0] == r.tag for r in scored])
    assert top1 > 0.5

    relevant = fitted.transform(test.drop("label")).withColumn("relevant", F.array("label"))
    precision = RankingEvaluator(
        predictionCol="topK", labelCol="relevant", metricName="precisionAtK", k=5
    ).evaluate(relevant)
    own = np.array([r.label for r in scored])
    expected = np.mean([(np.asarray(r.topK) == c).sum() / 5 for r, c in zip(scored, own)])
    assert precision == pytest.approx(expected) and precision > 0.1
    summary = model.summary
    print(
        f"{model.numClasses} classes: {summary.solver} over {summary.exchange}, "
        f"{summary.totalIterations} epochs ({summary.stopReason}); top-1 {top1:.3f}, "
        f"precision@5 {precision:.3f}"
    )

    fitted.write().overwrite().save(str(tmp_path / "tags"))
    loaded = PipelineModel.load(str(tmp_path / "tags"))
    assert loaded.stages[-1].labels == model.labels
    again = loaded.transform(test.drop("label")).orderBy("id").collect()
    assert [r.topKLabels for r in again] == [r.topKLabels for r in scored]


def test_summary_metrics_of_100000_classes_are_mllibs_without_a_k_by_k_matrix(spark):
    import tracemalloc

    import pandas as pd
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    from svb_spark.summary import SVBLogisticRegressionSummary

    rng = np.random.default_rng(5)
    label = rng.integers(0, 100_000, 20_000)
    prediction = np.where(rng.random(20_000) < 0.6, label, rng.integers(0, 100_000, 20_000))
    frame = pd.DataFrame({"label": label.astype(float), "prediction": prediction.astype(float)})
    df = spark.createDataFrame(frame)
    summary = SVBLogisticRegressionSummary(
        df, predictionCol="prediction", labelCol="label", weightCol="", probabilityCol="",
        featuresCol="",
    )  # fmt: skip
    tracemalloc.start()
    try:
        accuracy, f1 = summary.accuracy, summary.weightedFMeasure()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 << 20  # a 100,000 x 100,000 matrix would be 80 GB
    assert accuracy == pytest.approx((label == prediction).mean())
    mllib = MulticlassClassificationEvaluator(metricName="weightedFMeasure").evaluate(df)
    assert f1 == pytest.approx(mllib, rel=1e-9)


def test_multiclass_metrics_aggregate_a_frame_without_the_k_wide_columns(spark):
    from tests.support.data import to_frame

    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(300, 5)), rng.integers(0, 40, 300)
    model = SVBLogisticRegression(numWorkers=2, maxIter=3).fit(to_frame(spark, X, y))
    for summary in (model.summary, model.evaluate(to_frame(spark, X, y))):
        assert not {"probability", "rawPrediction"} & set(summary._metric_frame.columns)
        assert {"probability", "rawPrediction"} <= set(summary.predictions.columns)
        rows = summary.predictions.select("label", "prediction").collect()
        assert summary.accuracy == pytest.approx(np.mean([r.label == r.prediction for r in rows]))
