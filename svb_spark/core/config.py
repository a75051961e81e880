"""What every worker of a fit trains with: the config (plain values, pickled into the task
closure) and the plan the workers agree on at the rendezvous."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from svb_spark.core import numerics
from svb_spark.core.loss import MULTINOMIAL, Loss

# Below this fraction of non-zero features, rows are kept as CSR end to end: sparse products
# then beat dense GEMMs, and V travels as (index, value) pairs. The decision depends on the
# values only, so dense and sparse copies of the same data train the same model.
SPARSE_DENSITY = 0.1


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a worker needs, as plain values (it is pickled into the task closure)."""

    num_classes: int  # rows of W: the classes, or 1 for the binomial loss
    num_features: int
    batch_size: int
    max_iter: int
    tol: float
    reg_param: float
    fit_intercept: bool
    step_size: float
    seed: int
    dtype: str
    scale: np.ndarray  # 1 / std per feature (0 for constant features), or ones
    mean: np.ndarray | None = None  # subtracted before scaling; None = scale only
    reg_scale: np.ndarray | None = None  # per-feature L2 multiplier; None = 1
    exchange: str = "p2p"  # a name in svb_spark.core.modes.MODES
    loss: Loss = MULTINOMIAL  # the family (see svb_spark.core.loss)
    sync_interval: int = 1  # local steps between exchanges
    sparse: bool = False  # rows as CSR; the replica is then kept as factor * W
    verify_interval: int = 0  # exchanges between replica checksum comparisons; 0 = never
    checkpoint_dir: str | None = None  # this fit's checkpoint directory (path or URI), or None
    checkpoint_interval: int = 10  # epochs between checkpoints
    solver: str = "sgd"  # a name in svb_spark.core.solvers.SOLVERS: "sgd", "saga", "asgd", "lbfgs"
    # With held-out rows (a validation column's or validationFraction's): validationTol,
    # relative; None without them.
    validation_tol: float | None = None
    # Without a validation column: the fraction of rows held out (chosen by a hash of the row
    # id and the seed, see svb_spark.spark.contract) to stop on, as a validation column's;
    # 0 = none. See svb_spark.core.solvers.auto.automatic_holdout.
    holdout_fraction: float = 0.0
    # MLlib's elasticNetParam alpha: the L2 weight is reg_param * (1 - alpha), the L1 weight
    # reg_param * alpha * l1_scale_j (see svb_spark.core.penalty).
    elastic_net: float = 0.0
    l1_scale: np.ndarray | None = None  # per-feature L1 multiplier; None = 1
    # Bounds in the standardized space: K x D on W, K on b; None = unbounded. Not with L1.
    lower_W: np.ndarray | None = None
    upper_W: np.ndarray | None = None
    lower_b: np.ndarray | None = None
    upper_b: np.ndarray | None = None
    # Where L-BFGS starts its intercepts without a warm start: MLlib's (see
    # solvers.lbfgs.mllib_intercepts), or None for zero.
    start_intercepts: np.ndarray | None = None

    @classmethod
    def from_statistics(
        cls,
        num_classes: int,
        num_features: int,
        mean: np.ndarray,
        std: np.ndarray,
        density: float = 1.0,
        *,
        fit_intercept: bool = True,
        standardization: bool = True,
        coefficient_bounds: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
        intercept_bounds: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
        **settings,
    ) -> TrainingConfig:
        """The config of a fit on data with these per-feature ``mean`` and ``std``.

        Training always runs on standardized features (SGD's conditioning); with
        ``standardization`` off, the penalty acts on the original coefficients, as in MLlib
        (the L2 term of feature j scaled by 1 / std_j^2, the L1 term by 1 / std_j, constant
        features unpenalized). Rows sparser than :data:`SPARSE_DENSITY` train as CSR, scaled
        but never centered (centering would densify them); centering also needs an intercept
        to absorb the shift.

        ``coefficient_bounds`` (lower, upper: K x D or None) are in the original space and
        become ``bound * std_j`` in the standardized one, as MLlib's; ``intercept_bounds``
        (K each, or None) are kept, and a finite one turns centering off, since centering
        moves the intercept (MLlib's ``fitWithMean`` rule). ``settings`` are the remaining
        fields.
        """
        std = np.asarray(std, dtype=np.float64)
        scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
        sparse = density < SPARSE_DENSITY
        lower_b, upper_b = (_bound(b, 1.0) for b in intercept_bounds)
        intercept_bounded = any(b is not None and np.isfinite(b).any() for b in (lower_b, upper_b))
        centered = fit_intercept and not sparse and not intercept_bounded
        return cls(
            num_classes=num_classes,
            num_features=num_features,
            fit_intercept=fit_intercept,
            scale=scale,
            mean=np.asarray(mean, dtype=np.float64) if centered else None,
            reg_scale=None if standardization else scale * scale,
            l1_scale=None if standardization else scale,
            lower_W=_bound(coefficient_bounds[0], std),
            upper_W=_bound(coefficient_bounds[1], std),
            lower_b=lower_b,
            upper_b=upper_b,
            sparse=sparse,
            **settings,
        )

    def for_classes(self, first: int, stop: int) -> TrainingConfig:
        """The config of the classes ``first .. stop - 1`` alone (a class-sharded block)."""

        def rows(array):
            return None if array is None else array[first:stop]

        return dataclasses.replace(
            self,
            num_classes=stop - first,
            lower_W=rows(self.lower_W),
            upper_W=rows(self.upper_W),
            lower_b=rows(self.lower_b),
            upper_b=rows(self.upper_b),
            start_intercepts=rows(self.start_intercepts),
        )


def _bound(bound, std) -> np.ndarray | None:
    """An original-space bound in the standardized space (``bound * std``; a constant
    feature's coefficient is bound to 0, as in MLlib), or None."""
    if bound is None:
        return None
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), np.shape(bound)[-1:])
    with np.errstate(invalid="ignore"):  # an infinite bound on a constant feature
        return np.where(std > 0, np.asarray(bound, dtype=np.float64) * std, 0.0)


@dataclass(frozen=True)
class Plan:
    """What every worker must agree on before the first step."""

    steps_per_epoch: int
    base_learning_rate: float
    num_workers: int
    total_weight: float  # of all workers' rows: SAGA's average gradient is a mean over them


def make_plan(
    row_counts: list[int],
    curvatures: list[float],
    config: TrainingConfig,
    weight_sums: list[float] | None = None,
) -> Plan:
    """Steps per epoch and first-epoch learning rate, identical on every worker.

    Every worker takes the same number of steps per epoch, enough for the largest partition
    to see all its rows once; smaller partitions contribute fewer (possibly zero) rows to the
    last steps. The largest local curvature bounds the global one. ``weight_sums`` are the
    workers' total row weights (default: their row counts).
    """
    return Plan(
        steps_per_epoch=max(1, math.ceil(max(row_counts) / config.batch_size)),
        base_learning_rate=numerics.base_learning_rate(
            config.step_size, max(curvatures), config.loss.hessian_bound
        ),
        num_workers=len(row_counts),
        total_weight=float(sum(row_counts if weight_sums is None else weight_sums)),
    )
