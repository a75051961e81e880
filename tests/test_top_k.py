"""The top-k columns: each row's k most probable classes, best first, their probabilities and
their StringIndexer labels, from the whole margins or merged across class blocks; pyspark's
RankingEvaluator takes them as they are."""

from __future__ import annotations

import numpy as np
import pytest

from svb_spark import SVBLogisticRegression, SVBLogisticRegressionModel
from svb_spark.core import loss
from svb_spark.spark.scoring import add_prediction_columns
from tests.support.data import to_frame


def _expected(W, b, X, k):
    """The k most probable classes by numpy: probabilities of the whole softmax, sorted down
    (ties: the lower class first), and those probabilities."""
    margins = X @ W.T + b
    p = np.exp(margins - margins.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    order = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(p, order, axis=1)


def test_the_running_top_k_over_blocks_is_the_top_k_of_the_whole_margins():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(50, 37))
    raw[:, 5] = raw[:, 9]  # ties go to the lower class
    whole_classes, whole_p = loss.top_k(raw, loss.MULTINOMIAL.outputs(raw)[1], 7)
    for width in (1, 4, 37):
        running = loss.RunningSoftmax(50, top_k=7)
        for start in range(0, 37, width):
            running.add(raw[:, start : start + width], start)
        classes, p = running.top()
        np.testing.assert_array_equal(classes, whole_classes)
        np.testing.assert_allclose(p, whole_p, rtol=1e-12)
    assert loss.top_k(raw[:, :3], raw[:, :3], 10)[0].shape == (50, 3)  # k past K: all K


def test_ranking_a_wide_block_is_a_whole_sort_and_gives_its_scores_back():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 3, size=(200, 60)).astype(float)  # ties everywhere
    scores[rng.random(scores.shape) < 0.6] = -np.inf  # rows that run out of finite scores
    scores[:5, 7] = np.nan
    before = scores.copy()
    keyed = np.where(np.isnan(scores), np.inf, -scores)
    whole = np.lexsort((np.broadcast_to(np.arange(60), scores.shape), keyed), axis=1)[:, :6]
    np.testing.assert_array_equal(loss.ranked(scores, 6), whole)
    np.testing.assert_array_equal(scores, before)


@pytest.fixture(scope="module")
def many_classes(spark):
    rng = np.random.default_rng(1)
    K, D = 300, 12
    W, b = rng.normal(size=(K, D)), rng.normal(size=K)
    X = rng.normal(size=(200, D))
    y = rng.integers(0, K, 200)
    return W, b, X, y, to_frame(spark, X, y, extra={"id": np.arange(len(y))})


@pytest.mark.parametrize("block_bytes", [None, 50 * 13 * 8], ids=["whole", "class blocks"])
@pytest.mark.parametrize("wide", [True, False], ids=["with probability", "top-k only"])
def test_top_k_columns_equal_numpys_in_every_scoring_path(many_classes, block_bytes, wide):
    W, b, X, _, df = many_classes
    rows = add_prediction_columns(
        df, W, b, features="features", raw_col="rawPrediction" if wide else "",
        probability_col="probability" if wide else "", prediction_col="prediction",
        thresholds=None, block_bytes=block_bytes, top_k=5, top_k_col="topK",
        top_k_probability_col="topKProbability",
    ).orderBy("id").collect()  # fmt: skip
    classes, p = _expected(W, b, X, 5)
    np.testing.assert_array_equal(np.array([r.topK for r in rows]), classes)
    np.testing.assert_allclose(np.array([r.topKProbability for r in rows]), p, rtol=1e-9)
    assert [r.prediction for r in rows] == classes[:, 0].tolist()


def test_ranking_evaluator_takes_the_top_k_column_as_it_is(many_classes):
    from pyspark.ml.evaluation import RankingEvaluator
    from pyspark.sql import functions as F

    W, b, X, y, df = many_classes
    model = SVBLogisticRegressionModel(W, b).setTopKCol("topK").setTopK(5)
    scored = model.transform(df).withColumn("relevant", F.array(F.col("label")))
    assert dict(scored.dtypes)["topK"] == "array<double>"
    evaluator = RankingEvaluator(
        predictionCol="topK", labelCol="relevant", metricName="precisionAtK", k=5
    )
    classes, _ = _expected(W, b, X, 5)
    expected = np.mean([(classes[i] == y[i]).sum() / 5 for i in range(len(y))])
    assert evaluator.evaluate(scored) == pytest.approx(expected)


def test_string_indexer_labels_come_out_as_top_k_labels_and_survive_save_and_load(spark, tmp_path):
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.linalg import Vectors

    names = ["setosa", "versicolor", "virginica", "other"]
    rng = np.random.default_rng(2)
    centers = rng.normal(scale=4.0, size=(4, 3))
    y = rng.integers(0, 4, 400)
    X = centers[y] + rng.normal(size=(400, 3))
    df = spark.createDataFrame(
        [(Vectors.dense(x), names[t]) for x, t in zip(X, y)], ["features", "species"]
    )
    pipeline = Pipeline(stages=[
        StringIndexer(inputCol="species", outputCol="label"),
        SVBLogisticRegression(numWorkers=2, topK=2, topKCol="topK", topKLabelsCol="topKLabels"),
    ])  # fmt: skip
    fitted = pipeline.fit(df)
    model = fitted.stages[-1]
    assert sorted(model.labels) == sorted(names)
    rows = fitted.transform(df).limit(50).collect()
    for row in rows:
        assert row.topKLabels == [model.labels[int(c)] for c in row.topK]
    accuracy = np.mean([r.topKLabels[0] == r.species for r in rows])
    assert accuracy > 0.9
    fitted.write().overwrite().save(str(tmp_path / "pipeline"))
    loaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert loaded.stages[-1].labels == model.labels
    again = loaded.transform(df).limit(50).collect()
    assert [r.topKLabels for r in again] == [r.topKLabels for r in rows]


def test_top_k_labels_without_labels_say_where_labels_come_from(many_classes):
    W, b, _, _, df = many_classes
    model = SVBLogisticRegressionModel(W, b).setTopKLabelsCol("names")
    with pytest.raises(ValueError, match="topKLabelsCol is 'names' but the model has no class"):
        model.transform(df)


def test_a_binomial_models_top_k_ranks_its_two_classes(spark):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2))
    df = to_frame(spark, X, rng.integers(0, 2, 40), extra={"id": np.arange(40)})
    model = SVBLogisticRegressionModel(np.array([[2.0, -1.0]]), np.array([0.3]))
    rows = model.setTopKCol("topK").setTopKProbabilityCol("p").transform(df).orderBy("id").collect()
    m = X @ np.array([2.0, -1.0]) + 0.3
    p1 = 1.0 / (1.0 + np.exp(-m))
    assert [r.topK[0] for r in rows] == (p1 > 0.5).astype(float).tolist()
    np.testing.assert_allclose([r.p[0] for r in rows], np.maximum(p1, 1 - p1), rtol=1e-12)


def test_top_k_is_off_by_default_and_refuses_k_below_one(many_classes):
    W, b, _, _, df = many_classes
    model = SVBLogisticRegressionModel(W, b)
    assert model.transform(df).columns == [*df.columns, "rawPrediction", "probability",
                                            "prediction"]  # fmt: skip
    with pytest.raises(ValueError, match="'topK' parameter .* must be an int >= 1. Got 0"):
        model.setTopK(0).setTopKCol("topK").transform(df)
