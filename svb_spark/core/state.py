"""What a checkpoint holds: everything a replica (or a class-sharded worker's block) needs to go
on from a step as if it had never stopped. The core decides what goes in and when;
:mod:`svb_spark.spark.checkpoint` writes and reads it (Arrow IPC, through pyarrow.fs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ReplicaState:
    """Everything a replica needs to go on from ``step`` as if it had never stopped."""

    values: np.ndarray  # the replica's arrays, flattened (see ReplicaWeights.flat)
    feature_major: bool
    factor: float
    step: int
    history: list[float]
    converged: bool
    epoch_loss: float
    epoch_weight: float
    plan: dict
    validation_history: list[float] = field(default_factory=list)
    validation_accuracy: list[float] = field(default_factory=list)
    validation_pending: bool = False
