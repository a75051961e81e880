"""The interface every optimizer implements, and the facts of a fit that decide which apply.

A :class:`Solver` is one worker's optimizer. It owns, in one place: its refusals
(:meth:`Solver.why_not`), its memory formula (:meth:`Solver.memory_bytes`), its per-worker
state, its message for the next exchange and its update from everyone's messages, its epoch
objective and stopping rule, its checkpoints, and its result. The one loop
(:func:`svb_spark.core.loop.train`) and the broadcast mode's driver run any of them alike.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from svb_spark.core.config import Plan, TrainingConfig
from svb_spark.core.modes import MODES
from svb_spark.core.partition import LocalPartition
from svb_spark.core.state import ReplicaState
from svb_spark.core.stopping import best_validation_epoch


@dataclass(frozen=True)
class FitFacts:
    """What the driver knows of a fit before it starts: the data's shape and the params that
    choose the solver and the exchange mode. Plain values, so the choice is testable
    without Spark."""

    num_classes: int
    num_features: int
    num_workers: int
    num_rows: int
    sparse: bool
    nonzeros_per_row: float | None
    batch_size: int
    dtype: str
    sync_interval: int = 1
    validation: bool = False  # a validationIndicatorCol is set
    solver: str = "auto"  # the solver param
    exchange: str = "auto"  # the exchange param
    worker_memory: int | None = None  # bytes a worker may hold, None where unknown
    worker_memory_key: str = "spark.executor.memory"  # the setting that gives it
    driver_memory: int | None = None  # bytes the driver may hold, None where unknown
    tol: float = 0.0  # the tol param
    validation_fraction: float = 0.0  # the validationFraction param


@dataclass
class Outcome:
    """What a worker's solver ends with: the model (in the standardized space) and why."""

    W: np.ndarray
    b: np.ndarray
    stop_reason: str  # "validation", "holdout", "tol" or "maxIter"
    best_epoch: int | None = None  # with held-out rows: the epoch of the model returned


class Solver(abc.ABC):
    """One worker's optimizer over the exchange; see the module docstring.

    Subclasses set the class attributes and implement the abstract methods. ``history`` holds
    the objective after each epoch (L-BFGS: iteration), the same on every worker.
    """

    name: ClassVar[str]
    unit: ClassVar[str] = "epochs"  # what ``history`` and maxIter count
    # Whether its steps are sized by the rows' curvature (the stochastic solvers): the pass
    # that measures it is skipped otherwise.
    steps_by_curvature: ClassVar[bool] = True
    replicated: ClassVar[bool] = True  # every worker holds the whole model (replica checks)
    checkpoints: ClassVar[bool] = True  # writes checkpoints that a retried stage resumes from
    scores_held_out: ClassVar[bool] = False  # scores held-out rows after every epoch
    # What dtype="auto" trains in: float32 for minibatch steps, whose noise is far above its
    # rounding; L-BFGS's tol needs float64 (see its class).
    auto_dtype: ClassVar[str] = "float32"

    def __init__(
        self,
        config: TrainingConfig,
        plan: Plan,
        rank: int = 0,
        initial: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Worker ``rank``'s solver for the fit of ``config`` and ``plan``, starting from zero
        weights or from ``initial`` (W, b in the standardized space)."""
        self.config, self.plan, self.rank = config, plan, rank
        self.start(initial)

    def start(self, initial: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Make this worker's state: the weights (from ``initial`` when given) and the
        optimizer's own."""
        self.history: list[float] = []
        self.validation_history: list[float] = []  # held-out loss per epoch
        self.validation_accuracy: list[float] = []  # and held-out accuracy
        self.step = 0

    # -- planning, on the driver ------------------------------------------------------------

    @classmethod
    def why_not(cls, facts: FitFacts) -> str | None:
        """Why this solver cannot train a fit with ``facts``, or None (what an exchange mode
        refuses is the mode's: :meth:`svb_spark.core.modes.ExchangeMode.why_not_solver`)."""
        return None

    @classmethod
    def max_message_bytes(cls, config: TrainingConfig) -> int:
        """The largest payload a peer's message can have in the fit of ``config``: by
        default its exchange mode's minibatch messages."""
        return MODES[config.exchange].max_message_bytes(config)

    @classmethod
    def memory_bytes(cls, facts: FitFacts) -> tuple[int, str]:
        """The bytes a worker holds for the model and this solver's state, and the formula
        in words (for the error that says it does not fit)."""
        K, D, size = facts.num_classes, facts.num_features, np.dtype(facts.dtype).itemsize
        formula = f"numClasses x numFeatures x {size} bytes ({facts.dtype}) = {K} x {D} x {size}"
        return K * D * size, formula

    # -- the loop -----------------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """Whether this worker (and so every worker) has stopped."""

    @property
    def stop_reason(self) -> str:
        """Why training stopped (or will): "validation", "holdout", "tol" or "maxIter"."""
        return "maxIter"

    @abc.abstractmethod
    def compute(self, data: LocalPartition) -> Any:
        """This worker's message for the next exchange."""

    @abc.abstractmethod
    def encode(self, message: Any) -> pa.RecordBatch:
        """A message as the transport carries it."""

    @abc.abstractmethod
    def decode(self, batch: pa.RecordBatch) -> Any:
        """A peer's message, as :meth:`compute` made it."""

    @abc.abstractmethod
    def apply(self, messages: list, rounds) -> None:
        """Apply every worker's message of one exchange (indexed by rank). ``rounds``
        (:class:`svb_spark.core.loop.Rounds`) carries the small side exchanges a solver may
        need, such as summing an epoch's loss."""

    @abc.abstractmethod
    def current(self) -> tuple[np.ndarray, np.ndarray]:
        """The weights now (W, b), for observers of every exchange."""

    @abc.abstractmethod
    def outcome(self) -> Outcome:
        """The model this worker returns and why it stopped; called once, after the last
        exchange."""

    def replica_weights(self):
        """The :class:`~svb_spark.core.weights.ReplicaWeights` the replica checks compare,
        or None where workers hold no common replica."""
        return None

    # -- checkpoints --------------------------------------------------------------------------

    def checkpoint_due(self, epochs_before: int) -> bool:
        """Whether the exchange just applied closed an epoch that is a multiple of the
        checkpoint interval (the one rule). The last state is never written: the fit is over
        and its result is on its way."""
        config = self.config
        if not self.checkpoints or config.checkpoint_dir is None or self.done:
            return False
        interval = config.checkpoint_interval
        return len(self.history) // interval > epochs_before // interval

    def save(self, store, data: LocalPartition) -> int:
        """Write what this worker owns of a checkpoint to ``store`` (a
        :class:`svb_spark.spark.checkpoint.CheckpointStore`); the number of files written
        that hold a model."""
        raise ValueError(f"solver='{self.name}' does not checkpoint")

    @classmethod
    def steps_seen(cls, store, rank: int) -> list[int]:
        """The checkpoint steps this worker could resume from."""
        return []

    @classmethod
    def common_step(cls, seen: list[list[int]]) -> int | None:
        """The newest step every worker can resume from, given each rank's
        :meth:`steps_seen`, or None for a fresh start."""
        return None

    @classmethod
    def load(cls, store, data: LocalPartition, rank: int, step: int) -> ReplicaState:
        """The state to resume from at ``step``; per-row state goes into ``data``."""
        raise ValueError(f"solver='{cls.name}' does not checkpoint; a retried stage starts afresh")

    def state(self) -> ReplicaState:
        """A copy of everything needed to go on from this step."""
        raise ValueError(f"solver='{self.name}' does not checkpoint")

    def restore(self, state: ReplicaState) -> None:
        """Go on from a checkpointed ``state``."""
        raise ValueError(f"solver='{self.name}' does not checkpoint; a retried stage starts afresh")


def best_of(history: list[float]) -> int | None:
    """The epoch of the model returned when held-out rows judge the fit (the lowest of their
    judged ``history``; None without held-out rows)."""
    return best_validation_epoch(history) if history else None


def newest_common(seen: list[list[int]]) -> int | None:
    """The newest step in every worker's list of checkpoint steps, or None."""
    common = set(seen[0]).intersection(*map(set, seen[1:]))
    return max(common) if common else None
