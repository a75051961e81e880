"""Full-batch L-BFGS over the mesh (solver="lbfgs"): the iteration, its stopping rule, the
in-process loop against the single-process reference, and fits on Spark."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from svb_spark import SVBLogisticRegression
from svb_spark.core import numerics
from svb_spark.core.solvers import FitFacts, check_memory, choose, lbfgs
from svb_spark.core.stopping import QuasiNewtonConvergence
from svb_spark.testing import train_in_process
from tests.support.data import blobs, planted_frame, training_config
from tests.support.data import planted as _planted
from tests.support.reference import reference_lbfgs, reference_model, worker_partitions


def test_minimize_finds_the_minimum_of_a_quadratic():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(8, 8))
    A, c = M @ M.T + np.eye(8), rng.normal(size=8)

    def evaluate(x):
        return 0.5 * x @ A @ x - c @ x, A @ x - c

    x, history, converged = lbfgs.minimize(evaluate, np.zeros(8), 100, 0.0)
    np.testing.assert_allclose(x, np.linalg.solve(A, c), rtol=1e-6, atol=1e-8)
    assert converged  # the gradient's floor (1e-8) or the precision limit of the objective
    assert all(later <= earlier for earlier, later in zip(history, history[1:]))


def test_mllibs_function_value_test_compares_with_the_largest_of_the_last_twenty():
    rule = QuasiNewtonConvergence(1e-3)
    assert rule.check(np.zeros(1), 10.0, np.ones(1)) is None  # the start: |start| = 10
    # The memory starts with +inf, so 20 iterations pass before the test can fire, however
    # flat the objective.
    flat = [rule.check(np.zeros(1), 5.0, np.ones(1)) for _ in range(20)]
    assert flat[:19] == [None] * 19 and flat[19] == "function values"
    # Then the objective is compared with the largest of the last 20: within tol x |start|.
    rule = QuasiNewtonConvergence(1e-3)
    rule.check(np.zeros(1), 10.0, np.ones(1))
    falling = [rule.check(np.zeros(1), 5.0 - 0.002 * t, np.ones(1)) for t in range(40)]
    assert set(falling) == {None}  # 19 x 0.002 > 1e-3 x 10
    rule = QuasiNewtonConvergence(1e-3)
    rule.check(np.zeros(1), 10.0, np.ones(1))
    falling = [rule.check(np.zeros(1), 5.0 - 0.0005 * t, np.ones(1)) for t in range(40)]
    assert falling.index("function values") == 19  # 19 x 0.0005 < 1e-2


def test_mllibs_gradient_and_projected_step_tests():
    rule = QuasiNewtonConvergence(1e-6)
    # relative to the current objective, with a floor of 1e-8
    assert rule.check(np.zeros(2), 2.0, np.array([1e-6, 1e-6])) == "gradient"
    assert QuasiNewtonConvergence(1e-6).check(np.zeros(2), 2.0, np.array([3e-6, 0.0])) is None
    assert QuasiNewtonConvergence(0.0).check(np.zeros(1), 2.0, np.array([1e-9])) == "gradient"
    # OWL-QN is judged by its pseudo-gradient, not the smooth one.
    rule = QuasiNewtonConvergence(1e-6)
    assert rule.check(np.zeros(1), 2.0, np.ones(1), adjusted=np.zeros(1)) == "gradient"
    # A bounded fit stops where the projected gradient step moves nothing by 1e-5, even with
    # a large gradient pointing out of the box.
    bounds = (np.array([0.0, -np.inf]), np.array([np.inf, np.inf]))
    rule = QuasiNewtonConvergence(1e-6, bounds)
    assert rule.check(np.array([0.0, 1.0]), 2.0, np.array([5.0, 2e-6])) == "projected step"
    rule = QuasiNewtonConvergence(1e-6, bounds)
    assert rule.check(np.array([0.0, 1.0]), 2.0, np.array([5.0, 2e-5])) is None


def test_a_search_that_fails_drops_the_pairs_once_then_stops():
    # A kink at the minimum: near it, no step of the quasi-Newton direction decreases
    # |x|, and the retry from the gradient fails too.
    def evaluate(x):
        return float(np.abs(x).sum() + 1e-3 * x @ x), np.sign(x) + 2e-3 * x

    x, history, converged = lbfgs.minimize(evaluate, np.array([1.0, -2.0]), 100, 0.0)
    assert converged and len(history) < 100
    assert np.abs(x).max() < 1e-2


@pytest.mark.parametrize("num_workers", [1, 2, 3])
def test_in_process_fit_has_identical_replicas_and_equals_the_reference(num_workers):
    parts = blobs()
    X, y, w = (np.concatenate(columns) for columns in zip(*parts))
    split = np.array_split(np.arange(len(y)), num_workers)
    partitions = [(X[i], y[i], w[i]) for i in split]
    config = training_config(parts, solver="lbfgs", max_iter=30, tol=1e-6)
    seen = {}  # (iterations done, rank): the point each exchange left to evaluate next

    def observe(rank, iteration, W, b):
        seen[iteration, rank] = (W.copy(), b.copy())

    results = train_in_process(partitions, config, on_exchange=observe)
    iterations = {iteration for iteration, _ in seen}
    assert iterations == set(range(len(results[0].objective_history) + 1))
    for iteration in iterations:  # bit-identical replicas after every exchange
        W0, b0 = seen[iteration, 0]
        for rank in range(1, num_workers):
            assert (seen[iteration, rank][0] == W0).all() and (seen[iteration, rank][1] == b0).all()

    for other in results[1:]:  # every worker ran the same iterations on the same sums
        assert (other.W == results[0].W).all() and (other.b == results[0].b).all()
        assert other.objective_history == results[0].objective_history
    W, b, history = reference_lbfgs(partitions, config)
    # The workers sum per partition, the reference over all rows: rounding apart, equal.
    np.testing.assert_allclose(results[0].W, W, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(results[0].b, b, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)
    assert results[0].stop_reason == "tol" and len(history) < 30


def test_csr_rows_train_the_model_of_dense_rows():
    from scipy import sparse

    parts = blobs()
    config = training_config(parts, solver="lbfgs", max_iter=10, tol=0.0)
    config = dataclasses.replace(config, mean=None)  # CSR rows are scaled, never centered
    dense = train_in_process(parts, config)[0]
    csr = [(sparse.csr_matrix(X), y, w) for X, y, w in parts]
    ours = train_in_process(csr, dataclasses.replace(config, sparse=True))[0]
    np.testing.assert_allclose(ours.W, dense.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.objective_history, dense.objective_history, rtol=1e-12)


def test_lbfgs_reaches_the_optimum_of_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    parts = blobs(rows=(300, 250))
    config = training_config(parts, solver="lbfgs", max_iter=200, tol=1e-12, reg_param=0.01)
    result = train_in_process(parts, config)[0]

    X = np.concatenate([(p[0] - config.mean) * config.scale for p in parts])
    y, w = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
    # scikit-learn's objective is sum_i w_i CE + ||W||^2 / (2C); ours divides it by sum w.
    reference = LogisticRegression(C=1.0 / (0.01 * w.sum()), tol=1e-12, max_iter=10_000)
    reference.fit(X, y, sample_weight=w)
    optimum = numerics.objective(reference.coef_, reference.intercept_, X, y, w, 0.01)
    ours = numerics.objective(result.W, result.b, X, y, w, 0.01)
    assert ours <= optimum * (1 + 1e-4)
    assert result.objective_history[-1] == pytest.approx(ours, rel=1e-9)


def test_bytes_per_iteration_are_the_loss_and_the_gradient():
    parts = blobs()
    config = training_config(parts, solver="lbfgs", max_iter=5, tol=0.0)
    result = train_in_process(parts, config)[0]
    K, D, peers = 4, 6, 2
    assert result.payload_sent == result.exchanges * peers * (K * (D + 1) + 1) * 8
    # The biggest message a worker accepts is that one, plus slack for Arrow's padding.
    largest = lbfgs.LbfgsSolver.max_message_bytes(config)
    assert (K * (D + 1) + 1) * 8 < largest <= (K * (D + 1) + 1) * 8 + (1 << 16)


def test_a_checkpoint_directory_does_not_resume_lbfgs(tmp_path):
    parts = blobs()
    config = training_config(parts, solver="lbfgs", max_iter=5, tol=0.0)
    config = dataclasses.replace(config, checkpoint_dir=str(tmp_path), checkpoint_interval=1)
    first = train_in_process(parts, config)[0]
    # Nothing was written, so a retried stage starts afresh and ends at the same model.
    again = train_in_process(parts, config, resume_from=str(tmp_path))[0]
    assert (first.W == again.W).all() and again.resumed_from_step == 0


def test_the_memory_check_counts_lbfgs_vectors():
    def facts(K, D):
        return FitFacts(K, D, 2, 1000, False, None, 64, "float32", worker_memory=64 << 20,
                        worker_memory_key="spark.executor.pyspark.memory")  # fmt: skip

    check_memory(facts(10, 1000), "lbfgs", "p2p")  # 26 x 10 x 1001 x 8 = 2 MB: fits
    with pytest.raises(ValueError) as error:
        check_memory(facts(400, 1000), "lbfgs", "p2p")
    message = str(error.value)
    assert "L-BFGS's 26 vectors of numClasses x (numFeatures + 1) x 8 bytes" in message
    assert "26 x 400 x 1001 x 8" in message and "solver='sgd'" in message
    assert "dtype='float32'" not in message
    check_memory(facts(1000, 9000), "sgd", "p2p")  # one replica, 36 MB: fits
    with pytest.raises(ValueError, match=r"averaged SGD's 2 x numClasses x numFeatures"):
        check_memory(facts(1000, 9000), "asgd", "p2p")


@pytest.fixture(scope="module")
def planted(spark):
    X, y, w = _planted()
    return X, y, w, planted_frame(spark).cache()


def test_spark_fit_equals_the_single_process_reference(spark, planted):
    X, y, w, df = planted
    settings = dict(max_iter=40, tol=1e-6, reg_param=0.01, fit_intercept=True, step_size=1.0,
                    seed=5, dtype="float64", batch_size=16, solver="lbfgs")  # fmt: skip
    model = SVBLogisticRegression(
        solver="lbfgs", weightCol="weight", numWorkers=2, maxIter=40, tol=1e-6, regParam=0.01,
        dtype="float64",
    ).fit(df)  # fmt: skip
    assert min(len(p[1]) for p in worker_partitions(df, 2)) > 0
    W, b, history = reference_model(df, X, y, w, 2, **settings)
    summary = model.summary
    assert summary.solver == "lbfgs" and summary.stopReason == "tol"
    np.testing.assert_allclose(model.coefficientMatrix.toArray(), W, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(model.interceptVector.toArray(), b, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(summary.objectiveHistory, history, rtol=1e-9)
    assert summary.totalIterations == len(history) < 40
    assert "lbfgs" in summary.exchangeReason


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (dict(exchange="sharded"), "exchange='sharded' trains with SGD only"),
        (dict(syncInterval=2), "syncInterval is 2"),
        (dict(validationIndicatorCol="held"), "validationIndicatorCol is set"),
    ],
)
def test_lbfgs_where_it_does_not_apply_is_refused(spark, planted, params, reason):
    from pyspark.sql import functions as F

    df = planted[3].withColumn("held", F.rand(seed=1) < 0.2)
    with pytest.raises(ValueError, match="'lbfgs' but " + reason.replace("(", r"\(")):
        SVBLogisticRegression(solver="lbfgs", numWorkers=2, **params).fit(df)


def test_auto_takes_lbfgs_for_small_dense_models_only(spark, planted):
    assert choose(_facts(4, 6)).solver == "lbfgs"
    assert choose(_facts(4, 6, sparse=True)).solver == "sgd"
    too_big = lbfgs.AUTO_MAX_COEFFICIENTS // 100
    assert choose(_facts(100, too_big)).solver == "saga"
    # ... unless the fit holds rows out to stop on: then SGD, whose decaying step stops
    # near its best held-out loss where SAGA converges to an overfit optimum.
    large = dict(num_rows=10_000, tol=3e-3, validation_fraction=0.1)
    assert choose(_facts(100, too_big, **large)).solver == "sgd"
    assert choose(_facts(100, too_big, **{**large, "tol": 0.0})).solver == "saga"
    assert choose(_facts(100, too_big, **{**large, "num_rows": 9_999})).solver == "saga"
    assert choose(_facts(4, 6, exchange="broadcast")).solver == "sgd"
    # The binomial family: one row of gradient, L-BFGS even for 2^20 sparse features...
    assert choose(_facts(1, 1 << 20, sparse=True)).solver == "lbfgs"
    # ... unless a worker cannot hold L-BFGS's vectors (26 x 2^20 x 8 bytes = 218 MB).
    tight = dataclasses.replace(_facts(1, 1 << 20, sparse=True), worker_memory=100 << 20)
    assert choose(tight).solver == "sgd"
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=2)
    assert estimator.fit(planted[3]).summary.solver == "lbfgs"


@pytest.mark.parametrize(
    ("sparse", "exchange", "validation", "reason"),
    [
        (True, "p2p", False, "the features are sparse"),
        (False, "sharded", False, "exchange='sharded' trains with SGD only"),
        (False, "p2p", True, "validationIndicatorCol is set"),
    ],
)
def test_averaged_sgd_where_it_does_not_apply_is_refused(sparse, exchange, validation, reason):
    assert choose(_facts(4, 6, solver="asgd")).solver == "asgd"
    facts = _facts(4, 6, sparse, solver="asgd", exchange=exchange, validation=validation)
    with pytest.raises(ValueError, match="is 'asgd' but " + reason):
        choose(facts)


def _facts(K, D, sparse=False, num_rows=1000, **params):
    return FitFacts(K, D, 2, num_rows, sparse, 5.0 if sparse else None, 16, "float32", **params)


def test_the_pre_pass_keeps_the_weighted_label_histogram_up_to_its_bound():
    import pyarrow as pa

    from svb_spark.spark.inspection import HISTOGRAM_MAX_CLASSES, _PartitionStats

    def histogram(labels, weights):
        stats = _PartitionStats()
        for part in (slice(0, 2), slice(2, None)):  # two batches, the second reaching further
            batch = pa.RecordBatch.from_pydict(
                {"features": [[1.0, 2.0]] * len(labels[part]), "label": labels[part],
                 "weight": weights[part]}
            )  # fmt: skip
            stats.update(batch, "features", "label", "weight")
        return stats.class_weights

    assert histogram([0.0, 0.0, 2.0, 2.0], [1.0, 2.0, 0.5, 0.25]).tolist() == [3.0, 0.0, 0.75]
    assert histogram([0.0, 1.0, 1.0, float(HISTOGRAM_MAX_CLASSES)], [1.0] * 4) is None
