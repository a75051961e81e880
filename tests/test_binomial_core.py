"""The binomial family in the training core: one row of weights, sufficient vectors
``w (sigmoid(m) - y)`` and ``x``, in every solver and message kind, with bit-identical replicas
and the single-process reference's result; converged, scikit-learn's binary model."""

import dataclasses
import hashlib

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from svb_spark.core import numerics
from svb_spark.core.loss import BINOMIAL
from svb_spark.testing import train_in_process
from tests.support.data import blobs, training_config
from tests.support.reference import reference_sgd


def _binary_parts():
    """Uneven partitions of a 2-class problem with weights, labels 0 and 1."""
    return [(X, (y >= 2).astype(np.int64), w) for X, y, w in blobs(K=4)]


def test_one_row_of_weights_gives_the_sigmoid_loss_and_vectors():
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(40, 3)), rng.integers(0, 2, 40), rng.uniform(0.5, 2.0, 40)
    W, b = rng.normal(size=(1, 3)) * 10, np.array([0.5])  # large margins: no overflow
    U, loss = numerics.sufficient_vectors(W, b, X, y, w, BINOMIAL)
    m = X @ W[0] + b[0]
    p = 1.0 / (1.0 + np.exp(-m))
    np.testing.assert_allclose(U[:, 0], w * (p - y), atol=1e-12)
    expected = -(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum()
    assert loss == pytest.approx(expected, rel=1e-9)
    assert np.isfinite(loss)


@pytest.mark.parametrize(
    "solver, kind, sync_interval",
    [("sgd", "p2p", 1), ("sgd", "p2p", 3), ("sgd", "dense", 1), ("saga", "p2p", 1),
     ("asgd", "p2p", 1), ("lbfgs", "p2p", 1)],
)  # fmt: skip
def test_every_solver_trains_binomial_with_identical_replicas_as_the_reference(
    solver, kind, sync_interval
):
    parts = _binary_parts()
    config = training_config(
        parts, num_classes=1, solver=solver, exchange=kind, sync_interval=sync_interval
    )
    digests = {}

    def record(rank, step, W, b):
        digests.setdefault(step, set()).add(hashlib.sha256(W.tobytes() + b.tobytes()).digest())

    results = train_in_process(parts, config, on_exchange=record)
    assert all(len(seen) == 1 for seen in digests.values())
    assert results[0].W.shape == (1, 6)
    W, b, history = reference_sgd(parts, config)
    if sync_interval == 1:
        np.testing.assert_allclose(results[0].W, W, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(results[0].b, b, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)


def test_converged_binomial_lbfgs_equals_scikit_learn():
    parts = _binary_parts()
    X, y, w = (np.concatenate(column) for column in zip(*parts))
    reg = 0.05
    # Train in the original space (no standardization), as scikit-learn does.
    config = training_config(
        parts, num_classes=1, solver="lbfgs", max_iter=300, tol=1e-12, reg_param=reg,
        scale=np.ones(6), mean=None,
    )  # fmt: skip
    result = train_in_process(parts, config)[0]
    # Ours: sum_i w_i loss_i / sum_i w_i + reg / 2 |W|^2; scikit-learn's: C sum_i w_i loss_i
    # + 1/2 |W|^2, so C = 1 / (reg sum_i w_i).
    sklearn = LogisticRegression(C=1.0 / (reg * w.sum()), tol=1e-12, max_iter=10_000)
    sklearn.fit(X, y, sample_weight=w)
    np.testing.assert_allclose(result.W[0], sklearn.coef_[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result.b, sklearn.intercept_, rtol=1e-4, atol=1e-6)


def test_binomial_sends_one_column_of_u():
    parts = _binary_parts()
    base = training_config(parts, max_iter=1, solver="sgd")
    two_rows = train_in_process(parts, dataclasses.replace(base, num_classes=2))[0]
    one_row = train_in_process(parts, dataclasses.replace(base, num_classes=1, loss=BINOMIAL))[0]
    # U is B x K float64 and V is B x D: one column of U fewer per row.
    rows = sum(len(y) for _, y, _ in parts[1:])
    assert two_rows.payload_received - one_row.payload_received == 8 * rows
