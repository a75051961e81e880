"""MLlib interop and warm starts on local[2]: toMLlib, and initialModel from SVB or MLlib."""

import numpy as np
import pytest
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.functions import vector_to_array

from svb_spark import SVBLogisticRegression, SVBLogisticRegressionModel
from tests.support.data import to_frame


@pytest.fixture(scope="module")
def digits_model(digits_frames):
    train, _ = digits_frames
    return SVBLogisticRegression(numWorkers=2, maxIter=8, dtype="float64").fit(train)


def _columns(frame, *names):
    rows = frame.select(*[vector_to_array(n).alias(n) for n in names[:-1]], names[-1]).collect()
    return [np.array([r[i] for r in rows], dtype=np.float64) for i in range(len(names))]


def test_to_mllib_predicts_the_same_and_saves_as_mllib(
    spark, digits_frames, digits_model, tmp_path
):
    _, test = digits_frames
    mllib = digits_model.toMLlib()
    assert isinstance(mllib, LogisticRegressionModel)
    assert mllib.numClasses == 10 and mllib.numFeatures == 64
    ours = _columns(digits_model.transform(test), "probability", "rawPrediction", "prediction")
    theirs = _columns(mllib.transform(test), "probability", "rawPrediction", "prediction")
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)

    path = str(tmp_path / "mllib")
    mllib.write().overwrite().save(path)
    loaded = LogisticRegressionModel.load(path)
    np.testing.assert_array_equal(
        loaded.coefficientMatrix.toArray(), digits_model.coefficientMatrix.toArray()
    )
    np.testing.assert_array_equal(
        _columns(loaded.transform(test), "probability", "prediction")[1], ours[2]
    )


def test_warm_start_from_a_converged_model_starts_lower(digits_frames, digits_model):
    train, _ = digits_frames
    cold = SVBLogisticRegression(numWorkers=2, maxIter=1, dtype="float64").fit(train)
    warm = (
        SVBLogisticRegression(numWorkers=2, maxIter=1, dtype="float64")
        .setInitialModel(digits_model)
        .fit(train)
    )
    first_cold = cold.summary.objectiveHistory[0]
    first_warm = warm.summary.objectiveHistory[0]
    assert first_warm < 0.5 * first_cold
    assert first_warm <= digits_model.summary.objectiveHistory[-1] * 1.5


def test_warm_start_from_mllib_and_in_broadcast_mode(spark, digits_frames, digits_model):
    train, _ = digits_frames
    # An MLlib model maps to the same start: one epoch from it equals one from the SVB model.
    runs = [
        SVBLogisticRegression(
            numWorkers=2, maxIter=1, dtype="float64", exchange=exchange, solver="sgd"
        )
        .setInitialModel(start)
        .fit(train)
        .summary.objectiveHistory[0]
        for start, exchange in (
            (digits_model, "p2p"),
            (digits_model.toMLlib(), "p2p"),
            (digits_model, "broadcast"),
        )
    ]
    assert runs[1] == pytest.approx(runs[0], rel=1e-12)
    assert runs[2] == pytest.approx(runs[0], rel=1e-9)


def test_warm_start_from_a_binomial_mllib_model(spark):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    y = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype(float)
    df = to_frame(spark, X, y)
    binomial = LogisticRegression(family="binomial", maxIter=50).fit(df)
    # One SGD epoch each: L-BFGS from MLlib's optimum of separable data may find no step.
    settings = dict(numWorkers=2, maxIter=1, solver="sgd")
    warm = SVBLogisticRegression(initialModel=binomial, **settings).fit(df)
    cold = SVBLogisticRegression(**settings).fit(df)
    assert warm.coefficientMatrix.numRows == 1  # binomial in, binomial out
    assert warm.summary.objectiveHistory[0] < cold.summary.objectiveHistory[0]


def test_warm_start_shape_mismatch_is_a_clear_value_error(spark, digits_frames):
    train, _ = digits_frames
    wrong = SVBLogisticRegressionModel(np.zeros((10, 32)), np.zeros(10))
    with pytest.raises(ValueError, match="has 10 classes x 32 features but the data has 10 "):
        SVBLogisticRegression(numWorkers=2, maxIter=1, initialModel=wrong).fit(train)
    with pytest.raises(TypeError, match="initialModel must be"):
        SVBLogisticRegression(initialModel=np.zeros((10, 64)))


def test_estimator_with_an_initial_model_saves_its_other_params(digits_model, tmp_path):
    estimator = SVBLogisticRegression(maxIter=7, initialModel=digits_model)
    estimator.write().overwrite().save(str(tmp_path / "estimator"))
    loaded = SVBLogisticRegression.load(str(tmp_path / "estimator"))
    assert loaded.getMaxIter() == 7 and not loaded.isSet(loaded.initialModel)
    digits_model.write().overwrite().save(str(tmp_path / "model"))
    by_path = SVBLogisticRegression(initialModel=str(tmp_path / "model"))
    by_path.write().overwrite().save(str(tmp_path / "estimator2"))
    reloaded = SVBLogisticRegression.load(str(tmp_path / "estimator2"))
    assert reloaded.getInitialModel() == str(tmp_path / "model")


def test_to_mllib_refuses_a_model_past_mllibs_matrix_at_once():
    # A 65,536 x 32,769 model (2^31 + 2^16 values) as a read-only view of one row: no memory.
    W = np.broadcast_to(np.zeros((1, (1 << 15) + 1)), (1 << 16, (1 << 15) + 1))
    model = SVBLogisticRegressionModel(W, np.zeros(1 << 16))
    with pytest.raises(ValueError, match=r"at most 2\^31 - 1 values .* 65536 x 32769"):
        model.toMLlib()
