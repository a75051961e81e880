"""Elastic net, L1 and bounds on Spark, as MLlib's LogisticRegression: the same params, checks
and results. Ported from pyspark's LogisticRegression docstring and its tests
(``test_binomial_logistic_regression_with_bound``,
``test_multinomial_logistic_regression_with_bound``); every expected value comes from MLlib
fitted in the same run on the same data."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.linalg import DenseMatrix, Matrices, SparseMatrix, Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

from svb_spark import SVBLogisticRegression
from svb_spark.classification import SVBLogisticRegressionModel
from tests.support.data import to_frame


@pytest.fixture(scope="module")
def iris(spark):
    """scikit-learn's bundled iris (what MLlib's sample multiclass data is), 2 partitions."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    return to_frame(spark, X, y).repartition(2).cache()


@pytest.fixture(scope="module")
def bdf(spark):
    """The binary data of pyspark's bound test."""
    return spark.createDataFrame(
        [
            (1.0, 1.0, Vectors.dense(0.0, 5.0)),
            (0.0, 2.0, Vectors.dense(1.0, 2.0)),
            (1.0, 3.0, Vectors.dense(2.0, 1.0)),
            (0.0, 4.0, Vectors.dense(3.0, 3.0)),
        ],
        ["label", "weight", "features"],
    ).coalesce(2)


def test_mllibs_reference_fits_run_on_javas_blas_and_lapack(spark):
    # The suite's session keeps netlib off the system's native libraries (see conftest): with
    # OpenBLAS loaded natively the driver's JVM died in MLlib's bounded fits below.
    netlib = spark._jvm.dev.ludovic.netlib
    for instance in (netlib.blas.BLAS.getInstance(), netlib.lapack.LAPACK.getInstance()):
        assert not instance.getClass().getSimpleName().startswith("JNI")


def _converged(**params):
    return dict(tol=1e-10, maxIter=500, **params)


def test_l1_multinomial_equals_mllib_with_its_zeros(iris):
    # pyspark's docstring case: regParam=0.1, elasticNetParam=1.0, family="multinomial".
    params = _converged(regParam=0.1, elasticNetParam=1.0, family="multinomial")
    theirs = LogisticRegression(**params).fit(iris)
    ours = SVBLogisticRegression(numWorkers=2, dtype="float64", **params).fit(iris)
    assert ours.summary.solver == "lbfgs"
    W, W_mllib = ours.coefficientMatrix.toArray(), theirs.coefficientMatrix.toArray()
    np.testing.assert_array_equal(W == 0, W_mllib == 0)
    assert (W == 0).sum() >= 4  # L1 zeroed some coefficients
    np.testing.assert_allclose(W, W_mllib, atol=1e-3)
    np.testing.assert_allclose(
        ours.interceptVector.toArray(), theirs.interceptVector.toArray(), atol=1e-3
    )
    # Compressed as MLlib's: the same storage for the same zeros.
    assert type(ours.coefficientMatrix) is type(theirs.coefficientMatrix)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_elastic_net_binomial_equals_mllib(spark, alpha):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 6))
    y = (X @ np.array([2.0, -1.0, 0.0, 0.0, 0.5, 0.0]) + rng.logistic(size=300) > 0).astype(float)
    df = to_frame(spark, X, y).repartition(2).cache()
    params = _converged(regParam=0.05, elasticNetParam=alpha, standardization=False)
    theirs = LogisticRegression(**params).fit(df)
    ours = SVBLogisticRegression(numWorkers=2, dtype="float64", **params).fit(df)
    np.testing.assert_array_equal(
        ours.coefficients.toArray() == 0, theirs.coefficients.toArray() == 0
    )
    np.testing.assert_allclose(
        ours.coefficients.toArray(), theirs.coefficients.toArray(), atol=1e-3
    )
    assert ours.intercept == pytest.approx(theirs.intercept, abs=1e-3)


@pytest.mark.parametrize("solver", ["sgd", "saga"])
def test_stochastic_solvers_reach_mllibs_l1_objective_with_exact_zeros(iris, solver):
    from sklearn.datasets import load_iris

    params = dict(regParam=0.1, elasticNetParam=1.0, family="multinomial")
    theirs = LogisticRegression(tol=1e-10, maxIter=500, **params).fit(iris)
    ours = SVBLogisticRegression(
        numWorkers=2, solver=solver, maxIter=200, tol=0.0, batchSize=16, **params
    ).fit(iris)
    assert (ours.coefficientMatrix.toArray() == 0).any()
    X, y = load_iris(return_X_y=True)
    std = X.std(axis=0, ddof=1)

    def objective(model):  # MLlib's: mean cross-entropy + regParam |W std|_1
        W, b = model.coefficientMatrix.toArray(), model.interceptVector.toArray()
        margins = X @ W.T + b
        margins -= margins.max(axis=1, keepdims=True)
        log_p = margins - np.log(np.exp(margins).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(y)), y].mean() + 0.1 * np.abs(W * std).sum()

    # Minibatch steps near the optimum of a problem with correlated features: close, not on it.
    assert objective(ours) <= objective(theirs) * 1.03


def test_binomial_bounds_as_pysparks_test(bdf, tmp_path):
    params = dict(
        regParam=0.01,
        weightCol="weight",
        lowerBoundsOnCoefficients=Matrices.dense(1, 2, [-1.0, -1.0]),
        upperBoundsOnIntercepts=Vectors.dense(0.0),
    )
    theirs = LogisticRegression(**params).fit(bdf)
    ours = SVBLogisticRegression(numWorkers=2, dtype="float64", **_converged(**params)).fit(bdf)
    np.testing.assert_allclose(
        ours.coefficients.toArray(), theirs.coefficients.toArray(), atol=1e-3
    )
    assert ours.intercept == pytest.approx(theirs.intercept, abs=1e-3)
    # pyspark's test: [-0.2944, -0.0484] and 0.0
    np.testing.assert_allclose(ours.coefficients.toArray(), [-0.2944, -0.0484], atol=1e-3)
    # The bounds are params of the estimator and the model: saved and loaded with them.
    ours.write().overwrite().save(str(tmp_path / "model"))
    loaded = SVBLogisticRegressionModel.load(str(tmp_path / "model"))
    assert loaded.getLowerBoundsOnCoefficients().toArray().tolist() == [[-1.0, -1.0]]
    assert loaded.getUpperBoundsOnIntercepts().toArray().tolist() == [0.0]
    estimator = SVBLogisticRegression(**params)
    estimator.write().overwrite().save(str(tmp_path / "estimator"))
    again = SVBLogisticRegression.load(str(tmp_path / "estimator"))
    assert again.getLowerBoundsOnCoefficients() == estimator.getLowerBoundsOnCoefficients()


def test_multinomial_bounds_as_pysparks_test(iris):
    params = _converged(
        regParam=0.01,
        lowerBoundsOnCoefficients=DenseMatrix(3, 4, range(12), isTransposed=True),
        upperBoundsOnIntercepts=Vectors.dense(0.0, 0.0, 0.0),
    )
    # Converged: at MLlib's default maxIter (100) its L-BFGS-B stops short of the optimum here.
    theirs = LogisticRegression(**params).fit(iris)
    ours = SVBLogisticRegression(numWorkers=2, dtype="float64", **params).fit(iris)
    W = ours.coefficientMatrix.toArray()
    assert (W >= np.arange(12).reshape(3, 4) - 1e-12).all()
    assert (ours.interceptVector.toArray() <= 1e-12).all()
    # Within 1e-3 of the largest coefficient (11 here), the parity of tests/test_mllib_parity.py
    np.testing.assert_allclose(W, theirs.coefficientMatrix.toArray(), atol=1e-3 * np.abs(W).max())
    # The softmax is the same for intercepts shifted alike, and the bounds leave room for a
    # shift: the optimum's intercepts are equal up to one constant. Both fits stop by MLlib's
    # bounded rule (a projected gradient step under 1e-5, whatever tol) on unscaled features,
    # where that leaves them a few 1e-3 apart: within 1e-3 of the largest coefficient.
    shift = ours.interceptVector.toArray() - theirs.interceptVector.toArray()
    np.testing.assert_allclose(shift, shift.mean(), atol=1e-3 * np.abs(W).max())


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(elasticNetParam=0.5, lowerBoundsOnCoefficients=Matrices.dense(1, 2, [0.0, 0.0])),
         "only supports L2 regularization, but got elasticNetParam = 0.5"),
        (dict(fitIntercept=False, upperBoundsOnIntercepts=Vectors.dense(0.0)),
         "don't set bounds on intercepts if fitting without intercept"),
        (dict(lowerBoundsOnCoefficients=Matrices.dense(2, 2, [0.0] * 4)),
         r"'lowerBoundsOnCoefficients' parameter .* \(1, 2\) here, but found: \(2, 2\)"),
        (dict(lowerBoundsOnIntercepts=Vectors.dense(1.0),
              upperBoundsOnIntercepts=Vectors.dense(0.0)),
         "lowerBoundsOnIntercepts should always be less than or equal to upperBoundsOnIntercepts"),
        (dict(elasticNetParam=1.5), "'elasticNetParam' parameter .* must be a float in \\[0, 1\\]"),
    ],
)  # fmt: skip
def test_what_mllib_refuses_is_refused_before_training(bdf, params, message):
    with pytest.raises(ValueError, match=message):
        SVBLogisticRegression(numWorkers=2, **params).fit(bdf)


def test_a_grid_over_reg_param_and_elastic_net_in_cross_validator(iris):
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=30)
    grid = (
        ParamGridBuilder()
        .addGrid(estimator.regParam, [0.01, 0.1])
        .addGrid(estimator.elasticNetParam, [0.0, 1.0])
        .build()
    )
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=grid, evaluator=evaluator,
                        numFolds=2, seed=1)  # fmt: skip
    model = cv.fit(iris)
    assert len(model.avgMetrics) == 4 and all(0.5 < m <= 1.0 for m in model.avgMetrics)
    best = model.bestModel
    assert best.getElasticNetParam() in (0.0, 1.0) and best.getRegParam() in (0.01, 0.1)


def test_a_sparse_solution_is_a_sparse_matrix(iris):
    model = SVBLogisticRegression(
        numWorkers=2, regParam=0.5, elasticNetParam=1.0, family="multinomial", maxIter=200
    ).fit(iris)
    matrix = model.coefficientMatrix
    assert isinstance(matrix, SparseMatrix)
    assert (matrix.toArray() != 0).sum() == len(matrix.values)
