"""Comparisons of training results that several test modules make."""

from __future__ import annotations

import numpy as np


def assert_judged_alike(sharded: list, replicated) -> None:
    """Every sharded worker's held-out histories, best epoch, stop and steps are the
    replicated fit's, and its blocks, stacked in rank order, are the replicated model."""
    assert replicated.validation_history
    for result in sharded:
        np.testing.assert_allclose(
            result.validation_history, replicated.validation_history, rtol=1e-6
        )
        np.testing.assert_allclose(
            result.validation_accuracy, replicated.validation_accuracy, rtol=1e-12
        )
        assert result.best_epoch == replicated.best_epoch
        assert (result.stop_reason, result.steps) == (replicated.stop_reason, replicated.steps)
    W = np.vstack([r.W for r in sharded])
    b = np.concatenate([r.b for r in sharded])
    np.testing.assert_allclose(W, replicated.W, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b, replicated.b, rtol=1e-5, atol=1e-7)
