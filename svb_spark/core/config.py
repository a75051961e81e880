"""What every worker of a fit trains with: the config (plain values, pickled into the task
closure) and the plan the workers agree on at the rendezvous."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svb_spark.core import numerics
from svb_spark.transport import codec
from svb_spark.transport.tls import TlsFiles

# Below this fraction of non-zero features, rows are kept as CSR end to end: sparse products
# then beat dense GEMMs, and V travels as (index, value) pairs. The decision depends on the
# values only, so dense and sparse copies of the same data train the same model.
SPARSE_DENSITY = 0.1


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a worker needs, as plain values (it is pickled into the task closure)."""

    num_classes: int
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
    exchange_timeout: float = 120.0
    message_kind: str = codec.SV  # codec.SV, codec.DENSE (the baseline) or codec.SHARDED
    sync_interval: int = 1  # local steps between exchanges
    sparse: bool = False  # rows as CSR; the replica is then kept as factor * W
    verify_interval: int = 0  # exchanges between replica checksum comparisons; 0 = never
    checkpoint_dir: str | None = None  # this fit's checkpoint directory (path or URI), or None
    checkpoint_interval: int = 10  # epochs between checkpoints
    tls: TlsFiles | None = None  # PEM paths for mutual TLS between workers, or None
    solver: str = "sgd"  # a name in svb_spark.core.solvers.SOLVERS: "sgd", "saga", "asgd", "lbfgs"
    # With a validation column: MLlib's validationTol, relative; None without one.
    validation_tol: float | None = None

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
        **settings,
    ) -> TrainingConfig:
        """The config of a fit on data with these per-feature ``mean`` and ``std``.

        Training always runs on standardized features (SGD's conditioning); with
        ``standardization`` off, the penalty acts on the original coefficients, as in MLlib.
        Rows sparser than :data:`SPARSE_DENSITY` train as CSR, scaled but never centered
        (centering would densify them); centering also needs an intercept to absorb the shift.
        ``settings`` are the remaining fields.
        """
        std = np.asarray(std, dtype=np.float64)
        scale = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
        sparse = density < SPARSE_DENSITY
        return cls(
            num_classes=num_classes,
            num_features=num_features,
            fit_intercept=fit_intercept,
            scale=scale,
            mean=np.asarray(mean, dtype=np.float64) if fit_intercept and not sparse else None,
            reg_scale=None if standardization else scale * scale,
            sparse=sparse,
            **settings,
        )


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
        base_learning_rate=numerics.base_learning_rate(config.step_size, max(curvatures)),
        num_workers=len(row_counts),
        total_weight=float(sum(row_counts if weight_sums is None else weight_sums)),
    )
