"""Binary classification as MLlib's LogisticRegression does it: threshold, the binary summary,
the model's uid, coefficients/intercept, and the MLlib params accepted without effect.

Ported from the binary parts of pyspark's LogisticRegression docstring and of
``pyspark/ml/tests/test_classification.py`` and ``test_training_summary.py``; every expected
value comes from MLlib (or scikit-learn) in the same run.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.linalg import Vectors
from pyspark.sql import Row

from svb_spark import SVBLogisticRegression
from svb_spark.classification import SVBLogisticRegressionModel
from svb_spark.spark import scoring
from svb_spark.summary import (
    SVBBinaryLogisticRegressionSummary,
    SVBBinaryLogisticRegressionTrainingSummary,
    SVBLogisticRegressionSummary,
    binary_confusions,
)

THRESHOLDS = (0.0, 0.3, 1.0)


@pytest.fixture(scope="module")
def bdf(spark):
    """The binary data of pyspark's LogisticRegression docstring."""
    return spark.createDataFrame(
        [
            Row(label=1.0, weight=1.0, features=Vectors.dense(0.0, 5.0)),
            Row(label=0.0, weight=2.0, features=Vectors.dense(1.0, 2.0)),
            Row(label=1.0, weight=3.0, features=Vectors.dense(2.0, 1.0)),
            Row(label=0.0, weight=4.0, features=Vectors.dense(3.0, 3.0)),
        ]
    )


def _noisy_binary(spark, rows: int, seed: int, partitions: int):
    """Rows of 3 Gaussian features, a noisy linear label and weights in [0.5, 2)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 3))
    y = (X @ np.array([1.5, -1.0, 0.5]) + rng.normal(size=rows) > 0.3).astype(float)
    w = rng.uniform(0.5, 2.0, size=rows)
    data = [(Vectors.dense(x), float(label), float(weight)) for x, label, weight in zip(X, y, w)]
    # a local list arrives in the default parallelism's partitions (two); coalesce only merges
    return spark.createDataFrame(data, ["features", "label", "weight"]).coalesce(partitions)


@pytest.fixture(scope="module")
def binary_df(spark):
    return _noisy_binary(spark, 300, seed=7, partitions=2).cache()


@pytest.fixture(scope="module")
def mllib_fit(binary_df):
    return LogisticRegression(maxIter=3, weightCol="weight").fit(binary_df)


@pytest.fixture
def mllib_binomial(mllib_fit):
    """A fresh copy of MLlib's binomial fit, which a test may set params on."""
    return mllib_fit.copy()


def _as_svb(mllib_model, rows: int) -> SVBLogisticRegressionModel:
    """MLlib's binomial model as SVB's binomial (1 row) or 2-class softmax (2 rows) model: the
    softmax of margins (0, m) is sigmoid(m), so all three give the same probabilities."""
    w = mllib_model.coefficients.toArray()
    c = mllib_model.intercept
    if rows == 1:
        return SVBLogisticRegressionModel(w[None, :], np.array([c]))
    return SVBLogisticRegressionModel(np.vstack([np.zeros_like(w), w]), np.array([0.0, c]))


def _columns(frame, *names):
    rows = frame.select(*names).collect()

    def value(v):
        return v.toArray() if hasattr(v, "toArray") else v

    return [np.array([value(r[name]) for r in rows]) for name in names]


def test_threshold_params_follow_mllib(spark):
    # pyspark's test_logistic_regression_check_thresholds
    assert SVBLogisticRegression(threshold=0.5, thresholds=[0.5, 0.5]).getThreshold() == 0.5
    with pytest.raises(ValueError, match="inconsistent"):
        LogisticRegression(threshold=0.42, thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"'threshold' \(0\.42\) and 'thresholds'"):
        SVBLogisticRegression(threshold=0.42, thresholds=[0.5, 0.5])

    def steps(estimator):
        seen = [estimator.getThreshold(), estimator.isSet("threshold")]
        estimator.setThreshold(0.3)
        seen += [estimator.getThreshold(), estimator.getThresholds(), estimator.isSet("thresholds")]
        # pyspark's estimator inherits a setThresholds that leaves threshold set
        estimator.clear(estimator.threshold)
        estimator.setThresholds([0.2, 0.6])
        seen += [estimator.getThreshold(), estimator.isSet("threshold")]
        return seen

    assert steps(SVBLogisticRegression()) == steps(LogisticRegression())

    # A zero threshold for one class: MLlib's Scala computes 1 / (1 + t0 / t1) in floating
    # point (pyspark's Python getThreshold would divide by zero).
    for thresholds in ([0.4, 0.0], [0.0, 0.4]):
        mllib = LogisticRegression(thresholds=thresholds)
        mllib._transfer_params_to_java()
        expected = mllib._java_obj.getThreshold()
        assert SVBLogisticRegression(thresholds=thresholds).getThreshold() == expected

    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"'threshold' parameter .* \[0, 1\]"):
            SVBLogisticRegression().setThreshold(bad)


def test_binary_predictions_honour_threshold_as_mllib(spark, binary_df, mllib_binomial):
    """MLlib's binomial model and SVB's two forms of it predict the same rows at every threshold,
    through transform (closure and block scoring) and predict."""
    vectors = [row.features for row in binary_df.select("features").limit(20).collect()]
    binomial, softmax = _as_svb(mllib_binomial, 1), _as_svb(mllib_binomial, 2)
    assert binomial.numClasses == softmax.numClasses == mllib_binomial.numClasses == 2
    np.testing.assert_allclose(binomial.coefficients.toArray(), mllib_binomial.coefficients)
    assert binomial.intercept == mllib_binomial.intercept

    for threshold in THRESHOLDS:
        for model in (mllib_binomial, binomial, softmax):
            model.setThreshold(threshold)
        expected_raw, expected_p, expected = _columns(
            mllib_binomial.transform(binary_df), "rawPrediction", "probability", "prediction"
        )
        if threshold == 0.0:
            assert expected.min() == 1.0
        if threshold == 1.0:
            assert expected.max() == 0.0
        for model in (binomial, softmax):
            raw, probability, prediction = _columns(
                model.transform(binary_df), "rawPrediction", "probability", "prediction"
            )
            np.testing.assert_array_equal(prediction, expected, err_msg=f"t={threshold}")
            np.testing.assert_allclose(probability, expected_p, rtol=1e-12, atol=1e-15)
            # the binomial model's margins are MLlib's [-m, m], the softmax model's (0, m)
            margin = raw[:, 1] - raw[:, 0] if model is softmax else raw[:, 1]
            np.testing.assert_allclose(margin, expected_raw[:, 1], rtol=1e-12)
            singles = [model.predict(v) for v in vectors]
            assert singles == [mllib_binomial.predict(v) for v in vectors]
        np.testing.assert_allclose(
            _columns(binomial.transform(binary_df), "rawPrediction")[0], expected_raw, rtol=1e-12
        )

    # thresholds [t0, t1] are the threshold 1 / (1 + t0 / t1)
    mllib_binomial.clear(mllib_binomial.threshold)
    for model in (mllib_binomial, binomial, softmax):
        model.setThresholds([0.35, 0.65])
    expected = _columns(mllib_binomial.transform(binary_df), "prediction")[0]
    for model in (binomial, softmax):
        assert model.getThreshold() == mllib_binomial.getThreshold()
        predicted = _columns(model.transform(binary_df), "prediction")[0]
        np.testing.assert_array_equal(predicted, expected)


def test_block_scoring_honours_threshold(spark, binary_df, mllib_binomial, monkeypatch):
    monkeypatch.setattr(scoring, "SCORE_IN_BLOCKS_ABOVE", 0)  # every model scored in blocks
    for threshold, forms in ((0.8, (1, 2)), (0.0, (2,))):
        mllib_binomial.setThreshold(threshold)
        expected_p, expected = _columns(
            mllib_binomial.transform(binary_df), "probability", "prediction"
        )
        for rows in forms:
            model = _as_svb(mllib_binomial, rows).setThreshold(threshold)
            probability, prediction = _columns(
                model.transform(binary_df), "probability", "prediction"
            )
            np.testing.assert_array_equal(prediction, expected)
            np.testing.assert_allclose(probability, expected_p, rtol=1e-12, atol=1e-15)


def test_coefficients_and_intercept_raise_for_multinomial_models_as_mllib(spark):
    svb = SVBLogisticRegressionModel(np.array([[1.0, -1.0], [-1.0, 1.0]]), np.zeros(2))
    mllib = svb.toMLlib()  # a multinomial MLlib model of the same two rows
    for name, message in (
        ("coefficients", "Multinomial models contain a matrix of coefficients"),
        ("intercept", "Multinomial models contain a vector of intercepts"),
    ):
        with pytest.raises(Exception, match=message):
            getattr(mllib, name)
        with pytest.raises(RuntimeError, match=message):
            getattr(svb, name)


def test_docstring_example_binary_fit(spark, bdf, tmp_path):
    """pyspark's LogisticRegression docstring, binary half, against MLlib on the same data."""
    blor = LogisticRegression(weightCol="weight", regParam=0.01)
    svb = SVBLogisticRegression(weightCol="weight", regParam=0.01, numWorkers=2)
    blor_model, svb_model = blor.fit(bdf), svb.fit(bdf)

    assert svb_model.uid == svb.uid and blor_model.uid == blor.uid
    assert svb_model.numClasses == blor_model.numClasses == 2
    for model in (blor_model, svb_model):
        model.setThreshold(0.1)
        assert model.getThreshold() == 0.1
        assert model.evaluate(bdf).accuracy == model.summary.accuracy
    assert isinstance(svb_model.summary, SVBBinaryLogisticRegressionTrainingSummary)
    assert isinstance(svb_model.evaluate(bdf), SVBBinaryLogisticRegressionSummary)

    test0 = spark.createDataFrame([Row(features=Vectors.dense(-1.0, 1.0))])
    test1 = spark.createDataFrame([Row(features=Vectors.sparse(2, [0], [1.0]))])
    for test in (test0, test1):
        expected = blor_model.transform(test).head().prediction
        assert svb_model.transform(test).head().prediction == expected
        assert svb_model.predict(test.head().features) == blor_model.predict(test.head().features)

    # save and load keep the threshold, on the model and on the estimator
    svb.setThreshold(0.25)
    svb.save(str(tmp_path / "lr"))
    assert SVBLogisticRegression.load(str(tmp_path / "lr")).getThreshold() == 0.25
    svb_model.save(str(tmp_path / "lr_model"))
    loaded = SVBLogisticRegressionModel.load(str(tmp_path / "lr_model"))
    assert loaded.getThreshold() == 0.1 and loaded.uid == svb_model.uid
    assert svb_model.transform(test0).take(1) == loaded.transform(test0).take(1)


def test_binomial_model_round_trips_and_converts_to_mllib(
    spark, binary_df, mllib_binomial, tmp_path
):
    model = _as_svb(mllib_binomial, 1).setThreshold(0.7)
    model.save(str(tmp_path / "binomial"))
    loaded = SVBLogisticRegressionModel.load(str(tmp_path / "binomial"))
    assert loaded.numClasses == 2 and loaded.getThreshold() == 0.7
    np.testing.assert_array_equal(loaded.coefficients.toArray(), model.coefficients.toArray())
    mllib = model.toMLlib()
    assert mllib.getThreshold() == 0.7
    np.testing.assert_array_equal(mllib.coefficients.toArray(), model.coefficients.toArray())
    expected = _columns(mllib.transform(binary_df), "prediction")[0]
    np.testing.assert_array_equal(_columns(model.transform(binary_df), "prediction")[0], expected)


def _curve(frame, x: str, y: str) -> np.ndarray:
    return np.array([(r[x], r[y]) for r in frame.collect()])


def _assert_same_binary_metrics(svb, mllib) -> None:
    for name, x, y in (
        ("roc", "FPR", "TPR"),
        ("pr", "recall", "precision"),
        ("fMeasureByThreshold", "threshold", "F-Measure"),
        ("precisionByThreshold", "threshold", "precision"),
        ("recallByThreshold", "threshold", "recall"),
    ):
        ours, theirs = _curve(getattr(svb, name), x, y), _curve(getattr(mllib, name), x, y)
        assert ours.shape == theirs.shape, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15, err_msg=name)
    assert svb.areaUnderROC == pytest.approx(mllib.areaUnderROC, rel=1e-12)
    for name in ("accuracy", "weightedPrecision", "weightedRecall", "weightedFalsePositiveRate"):
        assert getattr(svb, name) == pytest.approx(getattr(mllib, name), rel=1e-12), name
    assert svb.labels == list(mllib.labels)


def test_binary_summary_agrees_with_mllib_on_the_same_predictions(spark, binary_df):
    """A weighted fit with a threshold: the training summary and evaluate() give MLlib's binary
    metrics, computed by MLlib on the same model (toMLlib) and by scikit-learn on the same
    scores. Also: aggregationDepth and maxBlockSizeInMB are accepted and change nothing."""
    from sklearn.metrics import roc_auc_score

    params = dict(weightCol="weight", threshold=0.3, maxIter=5, numWorkers=2)
    svb = SVBLogisticRegression(**params)
    model = svb.fit(binary_df)
    assert model.uid == svb.uid and model.getThreshold() == 0.3
    summary = model.summary
    assert isinstance(summary, SVBBinaryLogisticRegressionTrainingSummary)
    assert summary.scoreCol == summary.probabilityCol == "probability"
    assert summary.totalIterations > 0 and len(summary.objectiveHistory) > 0

    probability, prediction, label, weight = _columns(
        summary.predictions, "probability", "prediction", "label", "weight"
    )
    np.testing.assert_array_equal(prediction, (probability[:, 1] > 0.3).astype(float))
    expected_auc = roc_auc_score(label, probability[:, 1], sample_weight=weight)
    assert summary.areaUnderROC == pytest.approx(expected_auc, rel=1e-12)

    mllib = model.toMLlib()
    mllib_summary = mllib.evaluate(binary_df)
    assert type(mllib_summary).__name__ == "BinaryLogisticRegressionSummary"
    _assert_same_binary_metrics(summary, mllib_summary)
    evaluated = model.evaluate(binary_df)
    assert isinstance(evaluated, SVBBinaryLogisticRegressionSummary)
    _assert_same_binary_metrics(evaluated, mllib_summary)

    # MLlib's param map carries over; the two params it brings along have no effect.
    mllib_params = LogisticRegression(aggregationDepth=4, maxBlockSizeInMB=2.0, threshold=0.3)
    carried = {
        param.name: value
        for param, value in mllib_params.extractParamMap().items()
        if svb.hasParam(param.name) and mllib_params.isSet(param)
    }
    assert carried == {"aggregationDepth": 4, "maxBlockSizeInMB": 2.0, "threshold": 0.3}
    again = SVBLogisticRegression(
        **params, **{k: v for k, v in carried.items() if k != "threshold"}
    )
    np.testing.assert_array_equal(
        again.fit(binary_df).coefficientMatrix.toArray(), model.coefficientMatrix.toArray()
    )
    for name, value in (("aggregationDepth", 1), ("maxBlockSizeInMB", -1.0)):
        with pytest.raises(ValueError, match=f"'{name}' parameter"):
            SVBLogisticRegression(**{name: value}).fit(binary_df)


def test_binary_confusions_bin_as_binary_classification_metrics():
    """MLlib's binning: with n distinct scores and n // numBins >= 2, runs of n // numBins
    consecutive scores (descending) merge into a point named by the run's first score; the
    last run may be shorter. Fewer scores stay unbinned."""
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    positives = np.array([0.0, 1.0, 1.0, 2.0, 0.0])
    negatives = np.array([1.0, 0.0, 1.0, 0.0, 3.0])
    thresholds, tp, fp = binary_confusions(scores, positives, negatives, num_bins=2)
    assert thresholds.tolist() == [0.9, 0.5, 0.1]
    assert tp.tolist() == [3.0, 4.0, 4.0] and fp.tolist() == [0.0, 4.0, 5.0]
    thresholds, tp, fp = binary_confusions(scores, positives, negatives, num_bins=3)
    assert thresholds.tolist() == [0.9, 0.7, 0.5, 0.3, 0.1]


def test_binary_summary_bins_as_mllib(spark):
    """More than 2 x 1000 distinct scores: MLlib's summary merges runs of consecutive scores.
    MLlib starts its runs afresh in each partition of its sorted scores (two here), so its
    curves may hold one point more than ours, and they run through the same ROC area."""
    frame = _noisy_binary(spark, 2500, seed=3, partitions=1).drop("weight")
    model = SVBLogisticRegressionModel(np.array([[0.0, 0.0, 0.0], [1.5, -1.0, 0.5]]), np.zeros(2))
    evaluated = model.evaluate(frame)
    mllib_summary = model.toMLlib().evaluate(frame)
    ours, theirs = _curve(evaluated.roc, "FPR", "TPR"), _curve(mllib_summary.roc, "FPR", "TPR")
    assert len(ours) == 2 + 2500 // 2  # runs of 2 scores, plus (0, 0) and (1, 1)
    assert 0 <= len(theirs) - len(ours) <= 1
    assert evaluated.areaUnderROC == pytest.approx(mllib_summary.areaUnderROC, abs=1e-3)
    probability = _columns(evaluated.predictions, "probability")[0]
    assert len(np.unique(probability[:, 1])) == 2500  # every score distinct: the bins are real


def test_multiclass_models_keep_the_multiclass_summary(spark):
    frame = spark.createDataFrame(
        [(Vectors.dense([float(i % 3), float(i % 5)]), float(i % 3)) for i in range(12)],
        ["features", "label"],
    )
    model = SVBLogisticRegressionModel(np.eye(3, 2), np.zeros(3))
    mllib = model.toMLlib()
    for m in (model, mllib):
        m.setThreshold(0.9)  # binary only: models of more classes ignore it
    assert type(model.evaluate(frame)) is SVBLogisticRegressionSummary
    expected = _columns(mllib.transform(frame), "prediction")[0]
    np.testing.assert_array_equal(_columns(model.transform(frame), "prediction")[0], expected)
