"""Elastic net and bounds in the training core (svb_spark.core.penalty): every solver with
bit-identical replicas and the single-process reference's result, the lazy L1 of sparse
replicas, converged L1 against scikit-learn, bounds against scipy's L-BFGS-B, and the
default (alpha = 0, no bounds) taking exactly the L2 operations."""

import dataclasses
import hashlib
import warnings

import numpy as np
import pytest
from scipy import sparse
from scipy.optimize import minimize as scipy_minimize
from sklearn.linear_model import LogisticRegression

from svb_spark.core import numerics, penalty
from svb_spark.core.config import TrainingConfig
from svb_spark.core.penalty import LazyPenalty, Penalty, soft_threshold
from svb_spark.core.solvers import lbfgs
from svb_spark.core.weights import ReplicaWeights
from svb_spark.testing import train_in_process
from tests.support.data import blobs, training_config
from tests.support.reference import reference_sgd

K, D = 4, 6


def _binary(parts):
    return [(X, (y >= 2).astype(np.int64), w) for X, y, w in parts]


def _sparse(parts):
    """The blobs with most entries zeroed, as CSR, and the same rows dense."""
    dense = [(X * (X > 3), y, w) for X, y, w in parts]
    return [(sparse.csr_matrix(X), y, w) for X, y, w in dense], dense


def _box(num_classes, seed=1):
    """Bounds on W with some boxes that exclude zero (lower > 0), and on b."""
    rng = np.random.default_rng(seed)
    lower = np.where(rng.random((num_classes, D)) < 0.3, 0.02, -0.3)
    return dict(
        lower_W=lower,
        upper_W=np.full((num_classes, D), 0.3),
        lower_b=np.full(num_classes, -0.1),
        upper_b=np.full(num_classes, 0.2),
    )


def _fit(parts, config):
    """Every worker's result, the model (blocks joined in the class-sharded mode) and
    whether every replica held the same weights after every exchange."""
    seen: dict[int, list[bytes]] = {}

    def record(rank, step, W, b):
        digest = hashlib.sha256(np.ascontiguousarray(W).tobytes() + b.tobytes()).digest()
        seen.setdefault(rank, []).append(digest)

    results = train_in_process(parts, config, on_exchange=record)
    if config.exchange == "sharded":
        W = np.concatenate([r.W for r in results])
        b = np.concatenate([r.b for r in results])
        return results, W, b, True
    return results, results[0].W, results[0].b, len({tuple(v) for v in seen.values()}) == 1


def _assert_equal_to_reference(results, W, b, reference, zeros_expected=True):
    W_ref, b_ref, history = reference
    np.testing.assert_allclose(W, W_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(b, b_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)
    if zeros_expected:
        assert (W == 0).any()
        np.testing.assert_array_equal(W == 0, W_ref == 0)
        assert not np.signbit(W[W == 0]).any()  # +0.0, as MLlib's compressed matrix needs


# -- the penalty's pieces ----------------------------------------------------------------------


@pytest.mark.parametrize("feature_major", [False, True])
def test_the_soft_threshold_gives_exact_zeros_in_either_layout(feature_major):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(K, D))
    W = numerics.feature_major_zeros(K, D, np.float64) if feature_major else np.zeros((K, D))
    W[...] = values
    t = rng.uniform(0.2, 1.0, size=D)
    soft_threshold(W, t)
    expected = np.sign(values) * np.maximum(np.abs(values) - t, 0.0)
    np.testing.assert_allclose(W, expected, rtol=0, atol=1e-15)
    assert ((W == 0) == (np.abs(values) <= t)).all()
    assert not np.signbit(W[W == 0]).any()


def test_the_penalty_value_is_mllibs_elastic_net_with_per_feature_scales():
    rng = np.random.default_rng(1)
    W = rng.normal(size=(K, D))
    c, s = rng.uniform(0.5, 2.0, D), rng.uniform(0.5, 2.0, D)
    config = training_config(blobs(), reg_param=0.3, elastic_net=0.25, reg_scale=c, l1_scale=s)
    value = Penalty.of(config).value(W, factor=0.5)
    model = 0.5 * W
    expected = 0.3 * (0.75 / 2 * (c * model**2).sum() + 0.25 * (s * np.abs(model)).sum())
    assert value == pytest.approx(expected, rel=1e-12)


def test_from_statistics_puts_mllibs_penalty_and_bounds_in_the_standardized_space():
    mean, std = np.array([1.0, 2.0, 3.0]), np.array([2.0, 0.0, 0.5])
    lower, upper = np.array([[-1.0, -np.inf, 0.5]]), np.array([[1.0, np.inf, 2.0]])
    config = TrainingConfig.from_statistics(
        1, 3, mean, std, standardization=False, coefficient_bounds=(lower, upper),
        intercept_bounds=(np.array([-1.0]), None), batch_size=8, max_iter=1, tol=0.0,
        reg_param=0.1, step_size=1.0, seed=0, dtype="float64", elastic_net=0.5,
    )  # fmt: skip
    # Without standardization MLlib's L1 weight of feature j is regParamL1 / std_j (0 for a
    # constant feature), its bounds are bound * std_j.
    np.testing.assert_array_equal(config.l1_scale, [0.5, 0.0, 2.0])
    np.testing.assert_array_equal(config.lower_W, [[-2.0, 0.0, 0.25]])
    np.testing.assert_array_equal(config.upper_W, [[2.0, 0.0, 1.0]])
    np.testing.assert_array_equal(config.lower_b, [-1.0])
    assert config.upper_b is None
    # A finite intercept bound turns centering off: the intercept is bounded as it is.
    assert config.mean is None
    unbounded = TrainingConfig.from_statistics(
        1, 3, mean, std, batch_size=8, max_iter=1, tol=0.0, reg_param=0.1, step_size=1.0,
        seed=0, dtype="float64",
    )  # fmt: skip
    assert unbounded.mean is not None and unbounded.l1_scale is None


# -- the default is the L2 fit of before ----------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, {"solver": "saga"}, {"solver": "lbfgs"}, {"exchange": "sharded"},
     {"sparse": True, "mean": None}],
)  # fmt: skip
def test_alpha_zero_without_bounds_takes_exactly_the_l2_operations(overrides, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a penalty operation ran in a fit without L1 or bounds")

    for name in ("soft_threshold", "_clip", "_subtract_clipped"):
        monkeypatch.setattr(penalty, name, refuse)
    monkeypatch.setattr(LazyPenalty, "__init__", refuse)
    monkeypatch.setattr(lbfgs.OrthantWise, "__init__", refuse)
    monkeypatch.setattr(lbfgs.Box, "__init__", refuse)
    parts = blobs()
    if overrides.get("sparse"):
        parts, _ = _sparse(parts)
    config = training_config(blobs(), elastic_net=0.0, **overrides)
    assert Penalty.of(config).l2 == config.reg_param and not Penalty.of(config).active
    results, W, _, identical = _fit(parts, config)
    assert identical and np.isfinite(W).all()


# -- every solver, against the reference ----------------------------------------------------------

SOLVER_CASES = {
    "sgd": dict(),
    "sgd, dense gradients": dict(exchange="dense"),
    "sgd, syncInterval 3": dict(sync_interval=3),
    "saga": dict(solver="saga"),
    "saga, dense gradients": dict(solver="saga", exchange="dense"),
    "averaged sgd": dict(solver="asgd"),
    "lbfgs (OWL-QN)": dict(solver="lbfgs", max_iter=15),
    "class-sharded sgd": dict(exchange="sharded"),
    "binomial sgd": dict(num_classes=1),
    "binomial saga": dict(num_classes=1, solver="saga"),
    "binomial lbfgs (OWL-QN)": dict(num_classes=1, solver="lbfgs", max_iter=15),
}


@pytest.mark.parametrize("case", SOLVER_CASES)
def test_every_solver_with_elastic_net_has_identical_replicas_and_the_reference_result(case):
    overrides = SOLVER_CASES[case]
    parts = _binary(blobs()) if overrides.get("num_classes") == 1 else blobs()
    config = training_config(parts, reg_param=0.1, elastic_net=0.5, **overrides)
    results, W, b, identical = _fit(parts, config)
    assert identical
    if config.sync_interval > 1:  # stale local steps: not the global-batch reference
        assert (W == 0).any()
        return
    # Averaged SGD returns a mean of iterates: a zero only where every iterate had one.
    _assert_equal_to_reference(
        results, W, b, reference_sgd(parts, config), zeros_expected=case != "averaged sgd"
    )


SPARSE_CASES = {
    "elastic net, L2 in the factor": dict(elastic_net=0.5),
    "L1 scaled per feature (standardization off)": dict(
        elastic_net=1.0, l1_scale=np.linspace(0.2, 2.0, D), reg_scale=np.linspace(0.5, 2.0, D)
    ),
    "elastic net with a per-feature L2 (eager)": dict(
        elastic_net=0.5, l1_scale=np.linspace(0.2, 2.0, D), reg_scale=np.linspace(0.5, 2.0, D)
    ),
    "class-sharded": dict(elastic_net=0.5, exchange="sharded"),
}


@pytest.mark.parametrize("folds", [False, True])
@pytest.mark.parametrize("case", SPARSE_CASES)
def test_sparse_rows_pay_the_lazy_l1_to_the_eager_reference(case, folds, monkeypatch):
    if folds:  # fold the L2 factor into W every few steps: the debts change units with it
        monkeypatch.setattr(numerics, "_MIN_FACTOR", 0.97)
    csr, dense = _sparse(blobs())
    config = training_config(blobs(), reg_param=0.1, sparse=True, mean=None, **SPARSE_CASES[case])
    results, W, b, identical = _fit(csr, config)
    assert identical
    _assert_equal_to_reference(results, W, b, reference_sgd(dense, config))


@pytest.mark.parametrize(
    "overrides",
    [dict(), dict(solver="saga"), dict(solver="asgd"), dict(exchange="sharded"),
     dict(sparse=True, mean=None), dict(sparse=True, mean=None, exchange="sharded"),
     dict(num_classes=1)],
)  # fmt: skip
def test_bounds_hold_exactly_in_every_solver_and_give_the_reference_result(overrides):
    num_classes = overrides.get("num_classes", K)
    parts = _binary(blobs()) if num_classes == 1 else blobs()
    model_parts = parts
    if overrides.get("sparse"):
        model_parts, parts = _sparse(parts)
    config = training_config(parts, reg_param=0.01, **_box(num_classes), **overrides)
    results, W, b, identical = _fit(model_parts, config)
    assert identical
    box = _box(num_classes)
    assert (W >= box["lower_W"]).all() and (W <= box["upper_W"]).all()
    assert (b >= box["lower_b"]).all() and (b <= box["upper_b"]).all()
    if overrides.get("solver") != "asgd":  # not a mean of iterates: the box binds exactly
        assert ((W == box["lower_W"]) | (W == box["upper_W"])).any()
    _assert_equal_to_reference(results, W, b, reference_sgd(parts, config), zeros_expected=False)


def test_an_l1_iteration_of_lbfgs_exchanges_what_an_l2_iteration_does():
    parts = blobs()
    l2 = train_in_process(parts, training_config(parts, solver="lbfgs", max_iter=5))[0]
    l1 = train_in_process(
        parts, training_config(parts, solver="lbfgs", max_iter=5, elastic_net=1.0)
    )[0]
    assert set(l1.sent_per_exchange) == set(l2.sent_per_exchange)  # one size: the sums


def test_the_lazy_debts_are_in_the_replica_checks_and_its_checkpoints(tmp_path):
    csr, _ = _sparse(blobs())
    config = training_config(blobs(), reg_param=0.1, elastic_net=0.5, sparse=True, mean=None)
    weights = ReplicaWeights(K, D, np.float64, feature_major=True)
    lazy = LazyPenalty(Penalty.of(config), weights.state, D)
    before = weights.digest()
    lazy.total += 0.5
    assert weights.digest() != before
    directory = str(tmp_path / "fit")
    uninterrupted = train_in_process(
        csr, dataclasses.replace(config, checkpoint_dir=directory, checkpoint_interval=3)
    )
    resumed = train_in_process(csr, config, resume_from=directory)
    assert resumed[0].resumed_from_step > 0
    np.testing.assert_array_equal(resumed[0].W, uninterrupted[0].W)
    np.testing.assert_array_equal(resumed[0].b, uninterrupted[0].b)
    assert resumed[0].objective_history == uninterrupted[0].objective_history


# -- converged: scikit-learn and scipy ----------------------------------------------------------


def _standardized_blobs():
    """The blobs standardized once, so that both sides fit the same rows (scale 1, no mean)."""
    parts = blobs()
    X = np.concatenate([p[0] for p in parts])
    mean, std = X.mean(axis=0), X.std(axis=0)
    return [((Xp - mean) / std, yp, wp) for Xp, yp, wp in parts]


@pytest.mark.parametrize("solver", ["lbfgs", "saga"])
@pytest.mark.parametrize("family", ["multinomial", "binomial"])
def test_converged_l1_equals_scikit_learn_with_its_zero_pattern(family, solver):
    parts = _standardized_blobs()
    num_classes, alpha = (K, 0.5) if family == "multinomial" else (1, 1.0)
    if num_classes == 1:
        parts = _binary(parts)
    X, y, w = (np.concatenate(column) for column in zip(*parts))
    reg = 0.05
    settings = dict(max_iter=300, tol=1e-14) if solver == "lbfgs" else dict(max_iter=120)
    config = training_config(
        parts, num_classes=num_classes, solver=solver, reg_param=reg, elastic_net=alpha,
        scale=np.ones(D), mean=None, batch_size=64, **settings,
    )  # fmt: skip
    result = train_in_process(parts, config)[0]
    # Ours: sum_i w_i loss_i / sum_i w_i + reg (alpha |W|_1 + (1 - alpha) / 2 |W|^2), so
    # scikit-learn's C = 1 / (reg sum_i w_i) and l1_ratio = alpha.
    reference = LogisticRegression(
        penalty="elasticnet", solver="saga", l1_ratio=alpha, C=1.0 / (reg * w.sum()),
        tol=1e-10, max_iter=100_000,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's notices on penalty= in newer releases
        reference.fit(X, y, sample_weight=w)
    assert (reference.coef_ == 0).any()
    np.testing.assert_array_equal(result.W == 0, reference.coef_ == 0)
    atol = 1e-6 if solver == "lbfgs" else 1e-4
    np.testing.assert_allclose(result.W, reference.coef_, rtol=0, atol=atol)
    # Softmax intercepts are defined up to a common shift: compare them centered.
    center = (lambda v: v - v.mean()) if num_classes > 1 else (lambda v: v)
    np.testing.assert_allclose(center(result.b), center(reference.intercept_), atol=atol)


@pytest.mark.parametrize("solver", ["lbfgs", "saga"])
@pytest.mark.parametrize("num_classes", [K, 1])
def test_bounded_fits_equal_scipys_lbfgsb_on_the_same_objective(num_classes, solver):
    parts = _standardized_blobs()
    if num_classes == 1:
        parts = _binary(parts)
    X, y, w = (np.concatenate(column) for column in zip(*parts))
    reg, box = 0.01, _box(num_classes, seed=3)
    settings = dict(max_iter=300, tol=1e-14) if solver == "lbfgs" else dict(max_iter=120)
    config = training_config(
        parts, num_classes=num_classes, solver=solver, reg_param=reg, scale=np.ones(D),
        mean=None, batch_size=64, **box, **settings,
    )  # fmt: skip
    result = train_in_process(parts, config)[0]

    def objective(x):
        W, b = x[: num_classes * D].reshape(num_classes, D), x[num_classes * D :]
        loss, gradient = numerics.loss_and_gradient_sums(W, b, X, y, w, config.loss)
        value, gradient = numerics.objective_and_gradient(loss, gradient, W, w.sum(), reg)
        return value, lbfgs.as_vector(gradient)

    lower = np.concatenate([box["lower_W"].ravel(), box["lower_b"]])
    upper = np.concatenate([box["upper_W"].ravel(), box["upper_b"]])
    scipy = scipy_minimize(
        objective, np.clip(np.zeros(lower.size), lower, upper), jac=True, method="L-BFGS-B",
        bounds=list(zip(lower, upper)), options=dict(ftol=1e-15, gtol=1e-12, maxiter=10_000),
    )  # fmt: skip
    active = (scipy.x == lower) | (scipy.x == upper)
    assert active.any()
    x = lbfgs.as_vector(np.hstack([result.W, result.b[:, None]]))
    np.testing.assert_allclose(x, scipy.x, rtol=0, atol=1e-3)
    if solver == "lbfgs" or num_classes == 1:  # converged: the same active set, closely
        np.testing.assert_array_equal((x == lower) | (x == upper), active)
        # MLlib's bounded rule stops once a projected gradient step would move no coordinate
        # by 1e-5, whatever tol: that far from scipy's optimum, and no farther.
        np.testing.assert_allclose(x, scipy.x, rtol=0, atol=1e-6 if solver == "saga" else 2e-4)


# -- the optimizers on problems with a closed-form minimum ---------------------------------------


def test_owlqn_and_the_bounded_lbfgs_reach_closed_form_minima():
    rng = np.random.default_rng(5)
    center, l1 = rng.normal(size=12), np.append(rng.uniform(0.1, 1.0, 11), 0.0)

    def evaluate(x):  # 1/2 |x - c|^2 with curvature, so that L-BFGS has pairs to learn
        d = x - center
        return float(d @ (np.arange(1, 13) * d)) / 2, np.arange(1, 13) * d

    x, _, converged = lbfgs.minimize(evaluate, np.zeros(12), 200, 0.0, l1=l1)
    # Separable: x_i = sign(c_i) max(|c_i| - l1_i / a_i, 0) for curvature a_i.
    a = np.arange(1, 13)
    expected = np.sign(center) * np.maximum(np.abs(center) - l1 / a, 0.0)
    assert converged
    np.testing.assert_allclose(x, expected, atol=1e-9)
    np.testing.assert_array_equal(x == 0, expected == 0)
    lower, upper = np.full(12, -0.3), np.full(12, 0.4)
    x, _, converged = lbfgs.minimize(evaluate, np.zeros(12), 200, 0.0, bounds=(lower, upper))
    assert converged
    # MLlib's bounded rule: stopped once a projected gradient step moves nothing by 1e-5.
    np.testing.assert_allclose(x, np.clip(center, lower, upper), atol=1e-5)
