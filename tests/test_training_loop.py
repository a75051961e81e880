"""The full training loop over the in-process exchange: replicas and the reference SGD."""

import dataclasses
import hashlib

import numpy as np
import pytest

from svb_spark.core import numerics, standardization
from svb_spark.core.config import TrainingConfig
from svb_spark.core.stopping import epochs_settled, validation_stalled
from svb_spark.testing import train_in_process
from tests.support.data import blobs, training_config
from tests.support.reference import reference_sgd


@pytest.mark.parametrize(
    "kind, sync_interval", [("p2p", 1), ("p2p", 4), ("dense", 1), ("dense", 4)]
)
def test_replicas_are_bit_identical_after_every_exchange(kind, sync_interval):
    parts = blobs()
    digests = {}

    def record(rank, step, W, b):
        digests.setdefault(step, {})[rank] = hashlib.sha256(W.tobytes() + b.tobytes()).hexdigest()

    config = training_config(parts, dtype="float32", exchange=kind, sync_interval=sync_interval)
    results = train_in_process(parts, config, on_exchange=record)
    total_steps = 8 * 9  # 8 epochs of ceil(130 / 16) steps
    assert len(digests) == -(-total_steps // sync_interval)
    for step, by_rank in digests.items():
        assert len(by_rank) == 3 and len(set(by_rank.values())) == 1, f"differ after {step}"
    assert all(r.steps == total_steps for r in results)
    assert {r.exchanges for r in results} == {len(digests)}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"fit_intercept": False, "mean": None},
        {"reg_scale": None, "reg_param": 0.0},
        {"reg_scale": np.linspace(0.5, 2.0, 6)},
    ],
)
def test_distributed_loop_equals_single_process_sgd_on_the_global_batches(overrides):
    parts = blobs()
    config = training_config(parts, **overrides)
    results = train_in_process(parts, config)
    W, b, history = reference_sgd(parts, config)
    np.testing.assert_allclose(results[0].W, W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].b, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)
    assert results[0].steps == 8 * 9


def test_dense_gradient_exchange_equals_sufficient_vectors():
    parts = blobs()
    sv = train_in_process(parts, training_config(parts))[0]
    dense = train_in_process(parts, training_config(parts, exchange="dense"))[0]
    np.testing.assert_allclose(dense.W, sv.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dense.objective_history, sv.objective_history, rtol=1e-12)
    # Same steps, different bytes: per step and peer, K (D + 1) floats instead of B (K + D);
    # rank 0 sends its 130 rows once per epoch, for 8 epochs, to 2 peers.
    assert dense.payload_sent == 2 * 72 * 4 * (6 + 1) * 8
    assert sv.payload_sent == 2 * 8 * 130 * (4 + 6) * 8


def test_bounded_staleness_exchanges_less_and_still_learns():
    parts = blobs(seed=5, rows=(600, 600))
    exact = train_in_process(parts, training_config(parts, max_iter=20, reg_param=0.0))[0]
    stale = train_in_process(
        parts, training_config(parts, max_iter=20, reg_param=0.0, sync_interval=4)
    )[0]
    assert stale.exchanges * 4 == exact.exchanges == exact.steps == stale.steps
    assert stale.objective_history[-1] == pytest.approx(exact.objective_history[-1], rel=0.05)


def test_tolerance_stops_every_worker_after_the_same_epoch():
    parts = blobs(seed=3)
    config = training_config(parts, max_iter=200, tol=1e-3)
    results = train_in_process(parts, config)
    epochs = {r.total_iterations for r in results}
    assert len(epochs) == 1 and epochs.pop() < 200
    assert all(r.converged for r in results)
    _, _, history = reference_sgd(parts, config)
    assert len(history) == results[0].total_iterations


def test_training_learns_the_planted_teacher():
    parts = blobs(seed=5, rows=(600, 600))
    config = training_config(parts, max_iter=30, reg_param=0.0)
    result = train_in_process(parts, config)[0]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    W, b = standardization.unstandardize(result.W, result.b, config.mean, config.scale)
    accuracy = (numerics.raw_margins(W, b, X).argmax(axis=1) == y).mean()
    # The teacher's own accuracy under its Gumbel noise is the ceiling.
    assert accuracy > 0.75
    assert result.objective_history[-1] < result.objective_history[0]


def test_a_worker_without_rows_still_takes_part():
    parts = blobs(rows=(50, 0, 40))
    config = training_config(parts)
    results = train_in_process(parts, config)
    W, _, _ = reference_sgd(parts, config)
    np.testing.assert_allclose(results[1].W, W, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind, sync_interval", [("p2p", 1), ("p2p", 3), ("dense", 1)])
def test_sparse_rows_train_the_same_model_as_dense_rows(kind, sync_interval):
    """CSR rows (scale-only standardization, scaled replica) follow the dense trajectory."""
    from scipy import sparse

    rng = np.random.default_rng(9)
    parts = []
    for n in (90, 70):
        X = rng.normal(size=(n, 30)) * (rng.random((n, 30)) < 0.15)
        y = rng.integers(0, 5, size=n)
        parts.append((X, y, rng.uniform(0.5, 2.0, size=n)))
    X_all = np.concatenate([p[0] for p in parts])
    common = dict(
        num_classes=5, num_features=30, batch_size=8, max_iter=4, tol=0.0, reg_param=0.05,
        fit_intercept=True, step_size=1.0, seed=2, dtype="float64",
        scale=1 / X_all.std(axis=0, ddof=1), mean=None, exchange=kind,
        sync_interval=sync_interval,
    )  # fmt: skip
    dense = train_in_process(parts, TrainingConfig(**common))[0]
    csr_parts = [(sparse.csr_matrix(X), y, w) for X, y, w in parts]
    sparse_result = train_in_process(csr_parts, TrainingConfig(**common, sparse=True))[0]
    np.testing.assert_allclose(sparse_result.W, dense.W, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sparse_result.b, dense.b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sparse_result.objective_history, dense.objective_history, rtol=1e-9)
    if kind == "p2p":
        # V travels as CSR: far fewer bytes than the dense rows.
        assert sparse_result.payload_sent < 0.6 * dense.payload_sent


@pytest.mark.parametrize("kind, sync_interval", [("p2p", 1), ("p2p", 4), ("dense", 2)])
def test_every_real_message_fits_the_fits_size_bound(kind, sync_interval):
    from svb_spark.core.solvers import solver_type

    parts = blobs()
    config = training_config(parts, exchange=kind, sync_interval=sync_interval)
    result = train_in_process(parts, config)[0]
    largest_sent_to_one_peer = max(result.sent_per_exchange) / 2
    assert largest_sent_to_one_peer <= solver_type(config).max_message_bytes(config)


@pytest.mark.parametrize("sparse_rows", [False, True])
def test_a_perturbed_replica_is_detected_and_resynchronised_from_rank_0(sparse_rows):
    from scipy import sparse

    parts = blobs()
    config = training_config(
        parts, verify_interval=5, sparse=sparse_rows, **({"mean": None} if sparse_rows else {})
    )
    if sparse_rows:
        parts = [(sparse.csr_matrix(X * (X > 3)), y, w) for X, y, w in parts]
    digests = {}

    def perturb_then_record(rank, step, W, b):
        # Right before a check (every 5th exchange), as a different BLAS or a flipped bit
        # would: this replica fits in one digest block, so the check right after sees it,
        # and it is repaired before any step uses it: the fit ends as if nothing happened.
        if rank == 1 and step == 15:
            W[0, 0] += 1e-3
        digests.setdefault(step, {})[rank] = b.tobytes()

    results = train_in_process(parts, config, on_exchange=perturb_then_record)
    assert [r.resyncs for r in results] == [1, 1, 1]
    # After the resync every replica holds rank 0's weights again, to the last bit.
    for r in results[1:]:
        assert (r.W == results[0].W).all() and (r.b == results[0].b).all()
    clean = train_in_process(parts, config)
    assert all(r.resyncs == 0 for r in clean)
    np.testing.assert_array_equal(clean[0].W, results[0].W)


@pytest.mark.parametrize("where", ["W", "b"])
def test_a_perturbation_outside_the_checked_block_is_found_within_one_cycle(monkeypatch, where):
    from svb_spark.core import loop, weights

    parts = blobs()
    config = training_config(parts, verify_interval=5)
    # 32-byte blocks: the 4 x 6 W and b (224 bytes) take 7 checks to cover.
    monkeypatch.setattr(weights, "DIGEST_BLOCK_BYTES", 32)
    cycle = -(-(4 * 6 + 4) * 8 // 32)
    found = []
    verify = loop.verify_replicas

    def record(replica, rounds, check):
        resynced = verify(replica, rounds, check)
        if resynced and rounds.rank == 0:
            found.append(check)
        return resynced

    monkeypatch.setattr(loop, "verify_replicas", record)

    def perturb(rank, step, W, b):
        # W[0, 0] is in block 0 and b in every check; step 15 is check 2's exchange.
        if rank == 1 and step == 15:
            (W if where == "W" else b[None, :])[0, 0] += 1e-3

    results = train_in_process(parts, config, on_exchange=perturb)
    assert [r.resyncs for r in results] == [1, 1, 1]
    assert found == ([cycle] if where == "W" else [2])  # block 0 comes round at check 7
    assert found[0] - 2 <= cycle
    for r in results[1:]:
        assert (r.W == results[0].W).all() and (r.b == results[0].b).all()


@pytest.mark.parametrize("kind", ["p2p", "dense"])
def test_saga_replicas_agree_after_every_exchange_including_the_average_gradient(kind):
    parts = blobs()
    digests = {}

    def record(rank, step, W, b):
        digests.setdefault(step, {})[rank] = hashlib.sha256(W.tobytes() + b.tobytes()).hexdigest()

    # verify_interval=1 compares the checksum of W, b, A and a after every exchange.
    config = training_config(
        parts, dtype="float32", exchange=kind, solver="saga", verify_interval=1
    )
    results = train_in_process(parts, config, on_exchange=record)
    assert len(digests) == 8 * 9
    assert all(len(set(by_rank.values())) == 1 for by_rank in digests.values())
    assert [(r.replica_checks, r.resyncs) for r in results] == [(8 * 9, 0)] * 3


@pytest.mark.parametrize(
    "overrides",
    [{}, {"fit_intercept": False, "mean": None}, {"reg_scale": np.linspace(0.5, 2.0, 6)}],
)
def test_saga_loop_equals_single_process_saga_on_the_global_batches(overrides):
    parts = blobs()
    config = training_config(parts, solver="saga", **overrides)
    results = train_in_process(parts, config)
    W, b, history = reference_sgd(parts, config)
    np.testing.assert_allclose(results[0].W, W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].b, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)


@pytest.mark.parametrize("overrides", [{}, {"sync_interval": 2}, {"reg_param": 0.0}])
def test_averaged_sgd_equals_the_mean_of_the_reference_iterates(overrides):
    parts = blobs()
    config = training_config(parts, solver="asgd", **overrides)
    digests = {}

    def record(rank, step, W, b):
        digests.setdefault(step, set()).add((W.tobytes(), b.tobytes()))

    results = train_in_process(parts, config, on_exchange=record)
    assert all(len(replicas) == 1 for replicas in digests.values())  # bit-identical
    for other in results[1:]:
        assert (other.W == results[0].W).all() and (other.b == results[0].b).all()
    if config.sync_interval == 1:
        W, b, history = reference_sgd(parts, config)
        np.testing.assert_allclose(results[0].W, W, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(results[0].b, b, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)
    # The same steps as SGD: only the model returned differs (the mean, not the last iterate).
    sgd = train_in_process(parts, dataclasses.replace(config, solver="sgd"))[0]
    assert sgd.objective_history == results[0].objective_history
    assert not np.allclose(sgd.W, results[0].W)


def test_saga_sends_the_bytes_of_sgd_and_reaches_the_optimum_sgd_does_not():
    from sklearn.linear_model import LogisticRegression

    parts = blobs(seed=4, rows=(400, 300))
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    w = np.concatenate([p[2] for p in parts])
    settings = dict(max_iter=60, tol=0.0, reg_param=0.01)
    sgd = train_in_process(parts, training_config(parts, **settings))[0]
    saga = train_in_process(parts, training_config(parts, solver="saga", **settings))[0]
    assert saga.payload_sent == sgd.payload_sent  # dU travels instead of U: same shape

    # The optimum, from scikit-learn on the same standardized rows and objective.
    config = training_config(parts)
    Xs = (X - config.mean) * config.scale
    C = 1.0 / (0.01 * w.sum())
    optimum = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(Xs, y, sample_weight=w)
    best = numerics.objective(optimum.coef_, optimum.intercept_, Xs, y, w, 0.01)

    def gap(result):
        return numerics.objective(result.W, result.b, Xs, y, w, 0.01) / best - 1.0

    print(f"relative objective gap after 60 epochs: SGD {gap(sgd):.2e}, SAGA {gap(saga):.2e}")
    assert gap(saga) < 1e-4 < gap(sgd)


def test_the_tol_rule_fires_on_a_plateau_of_epochs_scaled_by_the_first():
    falling = [2.0 / (1 + e) for e in range(80)]  # separable data: towards zero for ever
    assert not epochs_settled(falling[:8], 1e-3)
    # Windows 3 epochs apart differ by about 6 / e^2: below 3e-3 x 2 from about epoch 32.
    fired = next(t for t in range(1, 81) if epochs_settled(falling[:t], 3e-3))
    assert 28 < fired < 40
    # MLlib's default tol is below the noise of an epoch's objective: the bar is the noise.
    assert next(t for t in range(1, 81) if epochs_settled(falling[:t], 1e-6)) == fired
    looser = next(t for t in range(1, 81) if epochs_settled(falling[:t], 3e-2))
    assert looser < fired  # a tol above the noise is the bar
    assert not epochs_settled([1.0] * 5, 0.5)  # fewer than two windows
    assert epochs_settled([1.0] * 6, 1e-9)
    assert not epochs_settled([1.0] * 6, 0.0)  # tol 0: only maxIter stops


def test_the_tol_rule_fires_once_the_objective_is_within_its_bar_of_zero():
    # 20,000 classes of text at 10 rows a class: the model memorises its rows.
    memorised = [2.85, 0.436, 0.0544, 0.00636, 0.000818, 0.000362, 0.000181]
    assert not epochs_settled(memorised[:3], 1e-6)
    assert epochs_settled(memorised[:4], 1e-6)  # 0.00636 <= 3e-3 x 2.85: nothing left
    assert not epochs_settled(memorised[:4], 0.0)
    # A penalized objective settles above zero: the windows judge it.
    settling = [2.85, 1.2, 1.0, 0.95, 0.93, 0.925, 0.924]
    assert not any(epochs_settled(settling[:t], 1e-6) for t in range(1, 6))


def _overfitting_parts(held_out_fraction=0.5):
    """Few noisy rows of many features: the held-out loss falls, then rises."""
    rng = np.random.default_rng(21)
    parts = []
    for n in (60, 50):
        X = rng.normal(size=(n, 40))
        y = (X[:, 0] + 1.5 * rng.normal(size=n) > 0).astype(int) + 2 * (X[:, 1] > 0)
        parts.append((X, y, np.ones(n), rng.random(n) < held_out_fraction))
    return parts


def _validation_config(parts, **overrides):
    X = np.concatenate([p[0] for p in parts])
    config = TrainingConfig.from_statistics(
        4, X.shape[1], X.mean(axis=0), X.std(axis=0), batch_size=8, max_iter=60, tol=0.0,
        reg_param=0.0, step_size=1.0, seed=3, dtype="float64", validation_tol=0.01,
    )  # fmt: skip
    return dataclasses.replace(config, **overrides)


def test_held_out_rows_are_scored_but_never_trained_on():
    parts = _overfitting_parts()
    config = _validation_config(parts, max_iter=3)  # too few epochs to stop on validation
    with_validation = train_in_process(parts, config)[0]
    training_rows_only = [(X[~m], y[~m], w[~m]) for X, y, w, m in parts]
    plain = train_in_process(training_rows_only, dataclasses.replace(config, validation_tol=None))
    assert with_validation.objective_history == plain[0].objective_history
    assert len(with_validation.validation_history) == 3
    assert with_validation.stop_reason == "maxIter"


def test_validation_stops_a_fit_that_overfits_and_returns_the_best_model():
    parts = _overfitting_parts()
    config = _validation_config(parts, verify_interval=1)  # the best copy is checked too
    results = train_in_process(parts, config)
    result = results[0]
    history = result.validation_history
    assert result.stop_reason == "validation" and result.converged
    assert len(result.objective_history) < config.max_iter
    assert result.best_epoch == int(np.argmin(history)) < len(history) - 1
    assert all(r.resyncs == 0 and r.replica_checks > 0 for r in results)
    # The returned weights are the best epoch's: their held-out loss is the lowest seen.
    held = [(X[m], y[m], w[m]) for X, y, w, m in parts]
    Xh = np.concatenate([(X - config.mean) * config.scale for X, _, _ in held])
    yh = np.concatenate([y for _, y, _ in held])
    wh = np.concatenate([w for _, _, w in held])
    loss = numerics.objective(result.W, result.b, Xh, yh, wh, 0.0)
    assert loss == pytest.approx(min(history), rel=1e-9)


def test_validation_stalls_only_after_patience_epochs_without_improvement():
    assert not validation_stalled([1.0, 0.9, 0.95, 0.96], tol=0.01)  # 3 epochs: not enough
    assert validation_stalled([1.0, 0.9, 0.95, 0.96, 0.97], tol=0.01)
    assert not validation_stalled([1.0, 0.9, 0.95, 0.96, 0.85], tol=0.01)
    assert validation_stalled([1.0, 0.9, 0.9, 0.899, 0.9], tol=0.01)  # 0.1% < validationTol
