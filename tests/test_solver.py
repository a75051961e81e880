"""The numerics on their own: gradients, sufficient vectors, schedules, predictions."""

import numpy as np
import pytest

from svb_spark.core import loss, numerics, standardization


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    K, D, B = 5, 8, 40
    X = rng.normal(size=(B, D))
    y = rng.integers(0, K, size=B)
    w = rng.uniform(0.5, 2.0, size=B)
    W = rng.normal(scale=0.3, size=(K, D))
    b = rng.normal(scale=0.3, size=K)
    return W, b, X, y, w


def test_softmax_rows_sum_to_one_and_survive_huge_margins():
    p = loss.softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]]))
    assert np.allclose(p.sum(axis=1), 1.0)
    assert np.isfinite(p).all()
    assert p[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("reg_param", [0.0, 0.3])
def test_gradient_matches_finite_differences(problem, reg_param):
    W, b, X, y, w = problem
    reg_scale = np.linspace(0.5, 2.0, W.shape[1])
    dW, db = numerics.gradient(W, b, X, y, w, reg_param, reg_scale)
    eps = 1e-6

    def f(W_, b_):
        return numerics.objective(W_, b_, X, y, w, reg_param, reg_scale)

    for k, j in [(0, 0), (2, 5), (4, 7), (1, 3)]:
        Wp, Wm = W.copy(), W.copy()
        Wp[k, j] += eps
        Wm[k, j] -= eps
        assert dW[k, j] == pytest.approx((f(Wp, b) - f(Wm, b)) / (2 * eps), rel=1e-5, abs=1e-8)
    for k in range(len(b)):
        bp, bm = b.copy(), b.copy()
        bp[k] += eps
        bm[k] -= eps
        assert db[k] == pytest.approx((f(W, bp) - f(W, bm)) / (2 * eps), rel=1e-5, abs=1e-8)


def test_sufficient_vector_rebuild_equals_dense_gradient_step(problem):
    W, b, X, y, w = problem
    lr, reg = 0.1, 0.05
    dW, db = numerics.gradient(W, b, X, y, w, reg)
    expected_W, expected_b = W - lr * dW, b - lr * db

    # Split the batch over three "workers", rebuild from their concatenated vectors.
    parts = np.array_split(np.arange(len(y)), 3)
    vectors = [numerics.sufficient_vectors(W, b, X[p], y[p], w[p]) for p in parts]
    U = np.concatenate([u for u, _ in vectors])
    V = np.concatenate([X[p] for p in parts])
    W2, b2 = W.copy(), b.copy()
    numerics.apply_sufficient_vectors(W2, b2, U, V, w.sum(), lr, reg)
    np.testing.assert_allclose(W2, expected_W, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b2, expected_b, rtol=1e-12, atol=1e-12)
    # The loss sums of the parts add up to the batch's.
    total_loss = sum(loss for _, loss in vectors)
    assert total_loss / w.sum() == pytest.approx(numerics.objective(W, b, X, y, w, 0.0))


def test_no_intercept_update_without_fit_intercept(problem):
    W, b, X, y, w = problem
    U, _ = numerics.sufficient_vectors(W, b, X, y, w)
    b2 = b.copy()
    numerics.apply_sufficient_vectors(W.copy(), b2, U, X, w.sum(), 0.1, 0.0, fit_intercept=False)
    assert (b2 == b).all()


def test_curvature_is_the_top_eigenvalue_of_the_second_moment():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 6)) * np.array([5.0, 1, 1, 1, 1, 1])
    w = np.ones(500)
    A = np.hstack([X, np.ones((500, 1))])
    expected = np.linalg.eigvalsh(A.T @ A / 500)[-1]
    assert numerics.curvature(X, w, fit_intercept=True, iterations=200) == pytest.approx(
        expected, rel=1e-6
    )
    assert numerics.curvature(X[:0], w[:0], True) == 0.0


def test_curvature_stops_once_the_estimate_settles():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 6)) * np.array([5.0, 1, 1, 1, 1, 1])
    w = np.ones(500)
    passes = []

    class Counted(np.ndarray):
        def __matmul__(self, other):
            passes.append(1)
            return np.asarray(self) @ other

    settled = numerics.curvature(X.view(Counted), w, True, iterations=200)
    assert len(passes) < 2 * 60  # two products a pass; 200 passes without the early stop
    assert settled == pytest.approx(numerics.curvature(X, w, True, 200, rtol=0.0), rel=1e-8)


def test_learning_rate_decays_from_the_base():
    base = numerics.base_learning_rate(1.0, 4.0)
    assert base == pytest.approx(0.5)
    rates = [numerics.learning_rate(base, e) for e in range(5)]
    assert rates[0] == base and all(a > b for a, b in zip(rates, rates[1:]))


def test_unstandardize_reproduces_the_same_margins():
    rng = np.random.default_rng(1)
    X = rng.normal(3.0, 2.0, size=(20, 4))
    mean, scale = X.mean(0), 1 / X.std(0)
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    W0, b0 = standardization.unstandardize(W, b, mean, scale)
    np.testing.assert_allclose(
        numerics.raw_margins(W0, b0, X), numerics.raw_margins(W, b, (X - mean) * scale), atol=1e-10
    )


@pytest.mark.parametrize("feature_major", [False, True])
def test_unstandardize_weights_writes_into_a_given_buffer(feature_major):
    rng = np.random.default_rng(2)
    W = rng.normal(size=(3, 5)).astype(np.float32)
    if feature_major:
        W = np.ascontiguousarray(W.T).T
    b, mean, scale = rng.normal(size=3), rng.normal(size=5), rng.uniform(0.5, 2.0, size=5)
    buffer = np.full(15, np.nan)
    W_out = standardization.unstandardize_weights(W, scale, out=buffer)
    b_out = standardization.unstandardize_intercept(W_out, b, mean)
    W_new, b_new = standardization.unstandardize(W, b, mean, scale)
    assert np.shares_memory(W_out, buffer) and not np.isnan(buffer).any()
    np.testing.assert_array_equal(W_out, W_new)
    np.testing.assert_array_equal(b_out, b_new)
    assert W_out.flags.f_contiguous == feature_major


def test_thresholds_follow_mllib():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    assert loss.predictions_from_probabilities(p).tolist() == [0.0, 2.0]
    # p / t: row 0 -> [1.0, 1.5, 0.4]
    assert loss.predictions_from_probabilities(p, [0.5, 0.2, 0.5]).tolist() == [1.0, 2.0]
    # A zero threshold wins outright.
    assert loss.predictions_from_probabilities(p, [0.5, 0.0, 0.5]).tolist() == [1.0, 1.0]


@pytest.mark.parametrize("form", ["vectors", "gradient"])
def test_a_saga_step_follows_its_formula_from_vectors_or_their_gradient(form):
    rng = np.random.default_rng(0)
    W, A = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    b, a = rng.normal(size=4), rng.normal(size=4)
    a_before = a.copy()
    dU, V = rng.normal(size=(5, 4)), rng.normal(size=(5, 6))
    lr, batch_weight, total, seen, reg = 0.3, 5.0, 50.0, 1.7, 0.01
    G, g = dU.T @ V, dU.sum(axis=0)
    expected_W = (1 - lr * reg) * W - lr * (G / batch_weight + seen * A)
    expected_b = b - lr * (g / batch_weight + seen * a)
    expected_A = A + G / total
    update = ("vectors", dU, V) if form == "vectors" else ("gradient", G, g)
    numerics.apply_saga(W, b, A, a, update, batch_weight, total, lr, reg, 1.0, seen)
    np.testing.assert_allclose(W, expected_W, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b, expected_b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(A, expected_A, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a, a_before + g / total, rtol=1e-12, atol=1e-14)
