"""The loss seam: a new loss is one class (its vectors, loss sum, correct rows and outputs),
trained by the solvers, the exchange and the stopping rules without a change elsewhere; the
two families are the gradients of their loss sums."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from svb_spark.core import numerics
from svb_spark.core.loss import BINOMIAL, MULTINOMIAL, Loss, softplus
from svb_spark.testing import train_in_process
from tests.support.data import blobs, training_config
from tests.support.reference import reference_sgd


class SquaredLoss(Loss):
    """Least squares on one-hot targets, ``0.5 w ||m - e_y||^2``: a loss this library does
    not ship, written here as a user would add one."""

    name = "squared"
    hessian_bound = 1.0  # its second derivative in the margins is the identity

    def vectors(self, margins, y, weights):
        margins[np.arange(len(y)), y] -= 1.0
        loss_sum = 0.5 * float((weights * (margins * margins).sum(axis=1)).sum())
        margins *= weights[:, None].astype(margins.dtype, copy=False)
        return margins, loss_sum

    def correct_weight(self, U, y, weights):
        w = weights.astype(U.dtype, copy=False)
        margins = U / w[:, None]
        margins[np.arange(len(y)), y] += 1.0
        return float(weights[margins.argmax(axis=1) == y].sum(dtype=np.float64))

    def outputs(self, margins):
        return margins, margins, None


def test_a_new_loss_is_one_class_trained_by_p2p_sgd_as_the_single_process_reference():
    parts = blobs()
    config = training_config(parts, loss=SquaredLoss(), exchange="p2p", max_iter=6)
    digests = {}

    def record(rank, step, W, b):
        digests.setdefault(step, set()).add(hashlib.sha256(W.tobytes() + b.tobytes()).digest())

    results = train_in_process(parts, config, on_exchange=record)
    assert all(len(seen) == 1 for seen in digests.values())  # identical replicas
    W, b, history = reference_sgd(parts, config)
    np.testing.assert_allclose(results[0].W, W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].b, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)
    assert history[-1] < history[0]
    # It trains its own loss, not the softmax's: the multinomial fit ends elsewhere.
    softmax = train_in_process(parts, training_config(parts, exchange="p2p", max_iter=6))[0]
    assert np.abs(softmax.W - results[0].W).max() > 1e-3


def test_the_class_sharded_mode_refuses_a_loss_that_does_not_split_by_classes():
    parts = blobs()
    config = training_config(parts, loss=SquaredLoss(), exchange="sharded")
    with pytest.raises(ValueError, match="squared loss does not split by blocks of classes"):
        train_in_process(parts, config)


@pytest.mark.parametrize("loss, rows", [(MULTINOMIAL, 4), (BINOMIAL, 1)])
def test_each_familys_vectors_are_the_gradient_of_its_loss_sum(loss, rows):
    rng = np.random.default_rng(rows)
    margins = rng.normal(size=(30, rows))
    y = rng.integers(0, max(rows, 2), size=30)
    w = rng.uniform(0.5, 2.0, size=30)
    U, loss_sum = loss.vectors(margins.copy(), y, w)
    step = 1e-6
    for i, k in [(0, 0), (7, rows - 1), (29, rows // 2)]:
        moved = margins.copy()
        moved[i, k] += step
        _, higher = loss.vectors(moved, y, w)
        assert (higher - loss_sum) / step == pytest.approx(U[i, k], rel=1e-4, abs=1e-6)


def test_the_loss_the_config_carries_decides_the_family_not_its_row_count():
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(20, 3)), rng.integers(0, 2, 20), np.ones(20)
    W, b = rng.normal(size=(1, 3)), np.zeros(1)
    sigmoid, _ = numerics.sufficient_vectors(W, b, X, y, w, BINOMIAL)
    squared, _ = numerics.sufficient_vectors(W, b, X, np.zeros(20, int), w, SquaredLoss())
    np.testing.assert_allclose(squared[:, 0], X @ W[0] - 1.0)
    assert not np.allclose(sigmoid, squared)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_is_logaddexp_in_its_dtype_without_overflow_or_touching_its_input(dtype):
    margins = np.concatenate([np.linspace(-100, 100, 2001), [-1e30, -800, 800, 1e30]])
    margins = margins.astype(dtype)
    before = margins.copy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ours = softplus(margins)
    assert ours.dtype == dtype
    np.testing.assert_allclose(ours, np.logaddexp(dtype(0), margins), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(margins, before)
