"""A worker's rows: standardized in place, held out or trained on, and the minibatch of any
global step (a pure function of seed, rank and step)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from svb_spark.core import numerics
from svb_spark.core.config import Plan, TrainingConfig


@dataclass
class LocalPartition:
    """A worker's standardized rows, and the minibatch of any global step."""

    X: np.ndarray  # dense, or scipy.sparse CSR
    y: np.ndarray
    w: np.ndarray
    curvature: float
    # SAGA: the last U row this worker computed for each of its rows (zeros before the first
    # visit); rows x K, kept only by the worker that owns the rows.
    memory: np.ndarray | None = None
    # The worker's held-out rows (X, y, weights), standardized alike, when the fit has a
    # validation column or validationFraction's rows; scored after every epoch (the latter
    # also trained on in a last pass, see svb_spark.core.solvers.stochastic).
    held_out: tuple | None = None
    _order: tuple[int, np.ndarray] | None = field(default=None, repr=False)
    _held_out_order: np.ndarray | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def weight(self) -> float:
        return float(self.w.sum(dtype=np.float64))

    def batch_rows(self, step: int, plan: Plan, config: TrainingConfig, rank: int) -> np.ndarray:
        """The local row numbers this worker contributes to global step ``step``.

        Each epoch shuffles the partition with a generator seeded by (seed, rank, epoch), so
        any process can reproduce any step's batch without having seen the earlier ones.
        """
        epoch, position = divmod(step, plan.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([config.seed & 0xFFFFFFFF, rank, epoch])
            self._order = (epoch, rng.permutation(self.rows))
        return self._order[1][position * config.batch_size : (position + 1) * config.batch_size]

    def held_out_batch(self, position: int, config: TrainingConfig, rank: int) -> tuple:
        """The held-out rows (X, y, w) this worker contributes to step ``position`` of the
        last pass over them, shuffled as an epoch numbered maxIter would be (no epoch of
        training has that number); none when the worker holds none."""
        if self.held_out is None:
            return self.X[:0], self.y[:0], self.w[:0]
        if self._held_out_order is None:
            rng = np.random.default_rng([config.seed & 0xFFFFFFFF, rank, config.max_iter])
            self._held_out_order = rng.permutation(self.held_out[1].shape[0])
        start = position * config.batch_size
        rows = self._held_out_order[start : start + config.batch_size]
        return tuple(part[rows] for part in self.held_out)

    def saga_memory(self, num_classes: int) -> np.ndarray:
        """SAGA's per-row memory, made (zeros) on first use."""
        if self.memory is None:
            self.memory = np.zeros((self.rows, num_classes), dtype=self.w.dtype)
        return self.memory


def prepare_partition(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    config: TrainingConfig,
    held_out: np.ndarray | None = None,
    with_curvature: bool = True,
) -> LocalPartition:
    """Standardize the rows in place in the training dtype and estimate their curvature.

    ``held_out`` (a boolean mask, with a validation column) sets rows apart: they are
    standardized alike and only scored. ``with_curvature=False`` skips the curvature's
    passes, for a solver whose steps do not use it (:attr:`Solver.steps_by_curvature`).
    CSR rows are only scaled, never centered (centering would make them dense), as in MLlib.
    """
    X = _standardize(X, config)
    w = w.astype(config.dtype, copy=False)
    kept = None
    if held_out is not None:
        kept = (X[held_out], y[held_out], w[held_out])
        X, y, w = X[~held_out], y[~held_out], w[~held_out]
    curvature = numerics.curvature(X, w, config.fit_intercept) if with_curvature else 0.0
    return LocalPartition(X, y, w, curvature, held_out=kept)


def _standardize(X, config: TrainingConfig):
    X = X.astype(config.dtype, copy=False)
    if config.sparse:
        X.data *= config.scale.astype(config.dtype)[X.indices]
    else:
        if config.mean is not None:
            X -= config.mean.astype(config.dtype)
        X *= config.scale.astype(config.dtype)
    return X


def stack_rows(blocks: list):
    """Row-wise concatenation of dense or CSR blocks."""
    if isinstance(blocks[0], np.ndarray):
        return np.concatenate(blocks)
    from scipy import sparse

    return sparse.vstack(blocks, format="csr")
