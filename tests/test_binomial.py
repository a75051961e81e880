"""The binomial family on Spark: family="auto" trains MLlib's binomial model on 2 classes (one
row of coefficients, sigmoid of one margin) in every solver and mesh mode; "multinomial" keeps
two rows; the result equals MLlib's, fitted on the same data in the same session."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.classification import LogisticRegression

from svb_spark import SVBLogisticRegression
from svb_spark.classification import SVBLogisticRegressionModel
from tests.support.data import planted, to_frame


@pytest.fixture(scope="module")
def binary(spark):
    X, y, w = planted(seed=3, n=400, K=2, D=5)
    return to_frame(spark, X, y, extra={"weight": w}).repartition(2).cache()


@pytest.fixture(scope="module")
def mllib_binomial(binary):
    return LogisticRegression(regParam=0.05, weightCol="weight", tol=1e-10).fit(binary)


def _svb(**params):
    settings = dict(regParam=0.05, weightCol="weight", numWorkers=2, tol=1e-9, maxIter=300)
    return SVBLogisticRegression(**{**settings, **params})


def test_two_classes_train_mllibs_binomial_model(binary, mllib_binomial):
    model = _svb().fit(binary)
    assert model.getFamily() == "auto" and model.summary.solver == "lbfgs"
    assert model.coefficientMatrix.numRows == 1 and model.numClasses == 2
    np.testing.assert_allclose(
        model.coefficients.toArray(), mllib_binomial.coefficients.toArray(), atol=1e-3
    )
    assert model.intercept == pytest.approx(mllib_binomial.intercept, abs=1e-3)
    rows = binary.limit(20).collect()
    for row in rows:
        ours, theirs = model.predictRaw(row.features), mllib_binomial.predictRaw(row.features)
        np.testing.assert_allclose(ours.toArray(), theirs.toArray(), atol=1e-2)
        assert ours[0] == -ours[1]
    ours = [r.prediction for r in model.transform(binary).select("prediction").collect()]
    theirs = [r.prediction for r in mllib_binomial.transform(binary).select("prediction").collect()]
    assert np.mean(np.equal(ours, theirs)) > 0.99


def test_family_multinomial_keeps_two_rows_as_mllib(binary):
    mllib = LogisticRegression(regParam=0.05, weightCol="weight", tol=1e-10, family="multinomial")
    theirs = mllib.fit(binary)
    ours = _svb(family="multinomial").fit(binary)
    assert ours.coefficientMatrix.numRows == theirs.coefficientMatrix.numRows == 2
    np.testing.assert_allclose(
        ours.coefficientMatrix.toArray(), theirs.coefficientMatrix.toArray(), atol=1e-3
    )
    with pytest.raises(RuntimeError):
        ours.coefficients  # noqa: B018  (a multinomial model has no single vector, as MLlib)


@pytest.mark.parametrize(
    "solver, exchange",
    [("sgd", "p2p"), ("saga", "p2p"), ("asgd", "p2p"), ("sgd", "dense"), ("sgd", "broadcast")],
)
def test_every_solver_and_mode_trains_the_binomial_model(binary, mllib_binomial, solver, exchange):
    model = _svb(solver=solver, exchange=exchange, maxIter=30, tol=0.0, batchSize=16).fit(binary)
    assert (model.summary.solver, model.summary.exchange) == (solver, exchange)
    assert model.coefficientMatrix.numRows == 1
    # Stochastic solvers after 30 epochs: near the optimum, not on it.
    np.testing.assert_allclose(
        model.coefficients.toArray(), mllib_binomial.coefficients.toArray(), atol=0.1, rtol=0.1
    )


def test_what_the_binomial_family_cannot_do_is_refused(spark, binary):
    with pytest.raises(ValueError, match="binomial family has one row"):
        _svb(exchange="sharded").fit(binary)
    X, y, w = planted(seed=1, n=90, K=3, D=4)
    three = to_frame(spark, X, y)
    with pytest.raises(ValueError, match="Binomial family only supports 1 or 2 outcome classes"):
        SVBLogisticRegression(family="binomial", numWorkers=2).fit(three)
    with pytest.raises(ValueError, match="'family' parameter .* must be one of"):
        SVBLogisticRegression(family="poisson", numWorkers=2).fit(three)


def test_binomial_warm_starts_in_both_directions(binary, mllib_binomial):
    # From MLlib's binomial model, a binomial fit starts at the optimum and stays there.
    warm = _svb(initialModel=mllib_binomial, maxIter=2).fit(binary)
    np.testing.assert_allclose(
        warm.coefficients.toArray(), mllib_binomial.coefficients.toArray(), atol=1e-3
    )
    # A binomial SVB model starts a multinomial fit as its two rows (0, w).
    two_rows = _svb(family="multinomial", initialModel=warm, maxIter=0).fit(binary)
    W = two_rows.coefficientMatrix.toArray()
    np.testing.assert_allclose(W[1] - W[0], warm.coefficients.toArray(), atol=1e-9)


def test_a_binomial_model_saves_loads_and_converts(binary, tmp_path):
    model = _svb(maxIter=20).fit(binary)
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = SVBLogisticRegressionModel.load(str(tmp_path / "m"))
    assert loaded.uid == model.uid and loaded.getFamily() == "auto"
    assert (loaded.coefficients.toArray() == model.coefficients.toArray()).all()
    assert loaded.intercept == model.intercept
    mllib = model.toMLlib()
    assert not mllib.coefficientMatrix.numRows > 1
    np.testing.assert_allclose(mllib.coefficients.toArray(), model.coefficients.toArray())
