"""The training core: a worker's rows, its replica, one exchange round, the loop and its
stopping rules. Pure numpy plus an injected :class:`~svb_spark.transport.Exchange`: no Spark.

One worker holds its partition in memory and a full replica of ``W`` and ``b``. Every exchange
it sends its message for the last ``syncInterval`` steps (sufficient vectors, or the dense
gradient in the baseline mode) to all peers, and applies everyone's messages step by step in
rank order. Every replica starts equal and applies the same update, so the replicas stay equal:
with ``syncInterval = 1`` the fit equals synchronous minibatch SGD on the global batch.

The barrier task (:mod:`svb_spark.spark.task`) runs :func:`train` over the Flight mesh;
:func:`svb_spark.testing.train_in_process` runs it in threads; the Spark-native broadcast mode
(:mod:`svb_spark.spark.broadcast`) drives the same :class:`Replica` from the driver.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from svb_spark.core import numerics
from svb_spark.core.weights import ReplicaWeights
from svb_spark.spark.checkpoint import (
    ReplicaState,
    block_steps,
    checkpoint_steps,
    read_block,
    read_checkpoint,
    read_worker_memory,
    worker_memory_steps,
    write_checkpoint,
    write_worker_memory,
)
from svb_spark.transport import Exchange, codec
from svb_spark.transport.tls import TlsFiles

# The optimizers (the ``solver`` param): minibatch SGD with a decaying step, the paper's method;
# SAGA on sufficient vectors with a constant step (see numerics.apply_saga); and averaged SGD
# (Polyak-Ruppert tail averaging: the model is the mean of SGD's iterates after every step from
# the second epoch on, kept on every replica); and full-batch L-BFGS (svb_spark.core.solvers.lbfgs).
SGD, SAGA, ASGD, LBFGS = "sgd", "saga", "asgd", "lbfgs"

# The stopping rule compares the mean epoch objective of the last TOL_WINDOW epochs with that of
# the TOL_WINDOW before: a window averages out SGD's epoch-to-epoch noise, which made a
# comparison of single epochs never fire. Three, not five: replayed on the solver study's
# histories, SAGA stopped within 0.5 pt of the optimum's accuracy on the same sets with either,
# and a sparse SGD fit that settles in 3 epochs stops after 7 instead of 11.
TOL_WINDOW = 3

# Epochs without a validationTol improvement of the held-out loss before a fit stops. One
# epoch (MLlib's GBTs) would stop SGD on noise; a few let a real plateau show.
VALIDATION_PATIENCE = 3

# The phases of one exchange round, timed by :func:`train` and reported in ``summary.timings``.
ROUND_PHASES = ("compute", "encode", "exchange", "decode", "apply")

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
    solver: str = SGD  # SGD (the paper's method) or SAGA (dense rows, syncInterval 1)
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
    # The worker's held-out rows (X, y, weights), standardized alike, when there is a
    # validation column; they are scored after every epoch and never trained on.
    held_out: tuple | None = None
    _order: tuple[int, np.ndarray] | None = field(default=None, repr=False)

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
) -> LocalPartition:
    """Standardize the rows in place in the training dtype and estimate their curvature.

    ``held_out`` (a boolean mask, with a validation column) sets rows apart: they are
    standardized alike and only scored. CSR rows are only scaled, never centered (centering
    would make them dense), as in MLlib.
    """
    X = _standardize(X, config)
    w = w.astype(config.dtype, copy=False)
    kept = None
    if held_out is not None:
        kept = (X[held_out], y[held_out], w[held_out])
        X, y, w = X[~held_out], y[~held_out], w[~held_out]
    # L-BFGS takes no step from the curvature: skip its passes over the rows.
    curvature = 0.0 if config.solver == LBFGS else numerics.curvature(X, w, config.fit_intercept)
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


class Replica:
    """One copy of the model plus the bookkeeping every copy must do identically.

    ``apply_round`` applies all workers' messages of one exchange step by step, in rank order,
    and keeps the epoch objective and the stopping decision (tol or maxIter), so that every
    replica stops after the same step without further communication.
    """

    def __init__(
        self,
        config: TrainingConfig,
        plan: Plan,
        initial: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        dtype = np.dtype(config.dtype)
        self.config = config
        self.plan = plan
        # Sparse updates touch a few features of every class: store W feature-major for them.
        self.weights = ReplicaWeights(
            config.num_classes, config.num_features, dtype,
            feature_major=config.sparse and config.message_kind != codec.DENSE,
        )  # fmt: skip
        if initial is not None:  # a warm start, already in the standardized space
            self.weights.start_from(*initial)
        if config.solver == SAGA:  # the average gradient, the same on every replica
            self.weights.state["A"] = np.zeros_like(self.weights.W)
            self.weights.state["a"] = np.zeros_like(self.weights.b)
        if config.solver == ASGD:  # the mean of the iterates since the first epoch
            self.weights.state["mean_W"] = np.zeros_like(self.weights.W)
            self.weights.state["mean_b"] = np.zeros_like(self.weights.b)
        self._weight_seen = 0.0  # SAGA, first epoch: the weight of the rows seen so far
        self.validation_history: list[float] = []  # held-out loss after each epoch
        self.validation_pending = False  # an epoch closed and its held-out loss is not in
        if config.validation_tol is not None:  # the best model yet, folded (factor 1)
            self.weights.state["best_W"] = np.zeros_like(self.weights.W)
            self.weights.state["best_b"] = np.zeros_like(self.weights.b)
        self.stopped_by_validation = False
        self.reg_scale = 1.0 if config.reg_scale is None else config.reg_scale.astype(dtype)
        self.step = 0
        self.history: list[float] = []
        self.converged = False
        self._epoch_loss = 0.0
        self._epoch_weight = 0.0

    @property
    def total_steps(self) -> int:
        return self.config.max_iter * self.plan.steps_per_epoch

    @property
    def done(self) -> bool:
        return self.converged or self.stopped_by_validation or self.step >= self.total_steps

    @property
    def stop_reason(self) -> str:
        """Why training stopped (or will): "validation", "tol" or "maxIter"."""
        if self.stopped_by_validation:
            return "validation"
        return "tol" if self.converged else "maxIter"

    def record_validation(self, messages: list[codec.RoundMessage]) -> None:
        """Take the held-out sums of the epoch closed last from every worker's message.

        The weights have not moved since they were scored, so a new best is copied now; after
        VALIDATION_PATIENCE epochs without a validationTol improvement the fit stops.
        """
        loss = sum(m.validation[0] for m in messages)
        weight = sum(m.validation[1] for m in messages)
        self.validation_history.append(loss / max(weight, 1e-300))
        self.validation_pending = False
        if best_validation_epoch(self.validation_history) == len(self.validation_history) - 1:
            state, weights = self.weights.state, self.weights
            np.multiply(weights.W, weights.W.dtype.type(weights.factor), out=state["best_W"])
            state["best_b"][...] = weights.b
        if validation_stalled(self.validation_history, self.config.validation_tol):
            self.stopped_by_validation = True

    def learning_rate(self, step: int) -> float:
        """SGD's decaying step, or SAGA's constant one (variance reduction lets it converge)."""
        if self.config.solver == SAGA:
            return self.plan.base_learning_rate
        return numerics.learning_rate(
            self.plan.base_learning_rate, step // self.plan.steps_per_epoch
        )

    def apply_round(self, messages: list[codec.RoundMessage]) -> None:
        """Apply one exchange's messages (indexed by rank) in (step, rank) order."""
        config, weights = self.config, self.weights
        if messages[0].validation is not None:
            self.record_validation(messages)
        for j in range(messages[0].steps):
            if self.done:
                return  # an earlier step of this round met tol: the rest is discarded
            lr = self.learning_rate(self.step)
            weight = sum(m.weight_sums[j] for m in messages)
            if config.solver == SAGA:
                self._apply_saga(messages, j, weight, lr)
            elif messages[0].kind == codec.SV and config.sparse:
                parts = [m.step_vectors(j) for m in messages]
                weights.factor = numerics.apply_sparse_sufficient_vectors(
                    weights.W, weights.factor, weights.b, np.concatenate([u for u, _ in parts]),
                    stack_rows([v for _, v in parts]), weight, lr, config.reg_param,
                    self.reg_scale, config.fit_intercept,
                )  # fmt: skip
            elif messages[0].kind == codec.SV:
                parts = [m.step_vectors(j) for m in messages]
                U = np.concatenate([u for u, _ in parts])
                V = np.concatenate([v for _, v in parts])
                numerics.apply_sufficient_vectors(
                    weights.W, weights.b, U, V, weight, lr, config.reg_param, self.reg_scale,
                    config.fit_intercept,
                )  # fmt: skip
            else:
                G = messages[0].step_gradient(j).copy()
                for m in messages[1:]:
                    G += m.step_gradient(j)
                numerics.apply_gradient(
                    weights.W, weights.b, G[:, :-1], G[:, -1], weight, lr, config.reg_param,
                    self.reg_scale, config.fit_intercept,
                )  # fmt: skip
            closed = self.count_step(sum(m.loss_sums[j] for m in messages), weight)
            if config.solver == ASGD:
                self._average_iterates()
            if closed:
                penalty = self.weights.penalty(config.reg_param, self.reg_scale)
                self.close_epoch(self.epoch_loss / max(self.epoch_weight, 1e-300) + penalty)

    def state(self) -> ReplicaState:
        """A copy of everything needed to go on from this step (see :mod:`svb_spark.spark.checkpoint`)."""
        return ReplicaState(
            values=self.weights.flat(),
            feature_major=self.weights.feature_major,
            factor=self.weights.factor,
            step=self.step,
            history=list(self.history),
            converged=self.converged,
            epoch_loss=self._epoch_loss,
            epoch_weight=self._epoch_weight,
            plan=dataclasses.asdict(self.plan),
            validation_history=list(self.validation_history),
            validation_pending=self.validation_pending,
        )

    def restore(self, state: ReplicaState) -> None:
        """Go on from a checkpointed ``state`` of a fit with the same plan."""
        if state.plan != dataclasses.asdict(self.plan):
            raise ValueError(
                f"the checkpoint at step {state.step} was written by a fit planned as "
                f"{state.plan}, not {dataclasses.asdict(self.plan)}; remove it or use another "
                "checkpointDir"
            )
        if state.feature_major != self.weights.feature_major:
            raise ValueError(f"the checkpoint at step {state.step} has another weights layout")
        self.weights.load_flat(state.values, state.factor)
        self.step = state.step
        self.history = list(state.history)
        self.converged = state.converged
        self._epoch_loss, self._epoch_weight = state.epoch_loss, state.epoch_weight
        self.validation_history = list(state.validation_history)
        self.validation_pending = state.validation_pending
        if self.validation_history and self.config.validation_tol is not None:
            self.stopped_by_validation = validation_stalled(
                self.validation_history, self.config.validation_tol
            )

    def _apply_saga(self, messages: list[codec.RoundMessage], j: int, weight: float, lr: float):
        """Step j of a round of SAGA messages (dU and rows, or their summed gradient)."""
        config, weights = self.config, self.weights
        A, a = weights.state["A"], weights.state["a"]
        # After the first epoch every row has been seen: A is the average over all of them.
        seen = 1.0
        if self.step < self.plan.steps_per_epoch:
            seen = numerics.saga_seen_scale(self._weight_seen, self.plan.total_weight)
        common = (weight, self.plan.total_weight, lr, config.reg_param, self.reg_scale, seen,
                  config.fit_intercept)  # fmt: skip
        if messages[0].kind == codec.SV:
            parts = [m.step_vectors(j) for m in messages]
            dU = np.concatenate([u for u, _ in parts])
            update = ("vectors", dU, np.concatenate([v for _, v in parts]))
        else:
            G = messages[0].step_gradient(j).copy()
            for m in messages[1:]:
                G += m.step_gradient(j)
            update = ("gradient", G[:, :-1], G[:, -1])
        numerics.apply_saga(weights.W, weights.b, A, a, update, *common)
        self._weight_seen += weight

    @property
    def averaged_steps(self) -> int:
        """Averaged SGD: how many iterates the mean holds (those after the first epoch)."""
        return max(0, self.step - self.plan.steps_per_epoch)

    def _average_iterates(self) -> None:
        """Fold the iterate of the step just counted into the running mean (dense rows: the
        replica has no L2 factor)."""
        n = self.averaged_steps
        if n == 0:
            return
        state, weights = self.weights.state, self.weights
        numerics.fold_into_mean(state["mean_W"], weights.W, n)
        numerics.fold_into_mean(state["mean_b"], weights.b, n)

    @property
    def epoch_loss(self) -> float:
        """The loss sum of the current epoch's steps so far."""
        return self._epoch_loss

    @property
    def epoch_weight(self) -> float:
        """The row weight of the current epoch's steps so far."""
        return self._epoch_weight

    def count_step(self, loss_sum: float, weight: float) -> bool:
        """Count one applied step with its loss and row weight; True if it closed an epoch."""
        self._epoch_loss += loss_sum
        self._epoch_weight += weight
        self.step += 1
        return self.step % self.plan.steps_per_epoch == 0

    def close_epoch(self, objective: float) -> None:
        """Record the epoch objective and take the stopping decisions.

        The objective is the loss each step saw before its update, plus the penalty at the
        epoch's end; every replica computes the same number from the same messages.
        """
        self.history.append(objective)
        self._epoch_loss = self._epoch_weight = 0.0
        self.converged = window_converged(self.history, self.config.tol)
        self.validation_pending = self.config.validation_tol is not None


def window_converged(history: list[float], tol: float, window: int = TOL_WINDOW) -> bool:
    """Whether the mean objective of the last ``window`` epochs improved on that of the
    ``window`` before by at most ``tol`` times the first epoch's objective.

    Scaling by the first epoch (about log K at the start) rather than by the current value
    lets the rule fire on separable data too, whose objective falls towards zero for ever.
    """
    if tol <= 0.0 or len(history) < 2 * window:
        return False
    current = sum(history[-window:]) / window
    previous = sum(history[-2 * window : -window]) / window
    return previous - current <= tol * abs(history[0])


def best_validation_epoch(history: list[float]) -> int:
    """The epoch (0-based) of the lowest held-out loss: the first, on ties."""
    return int(np.argmin(history))


def validation_stalled(
    history: list[float], tol: float, patience: int = VALIDATION_PATIENCE
) -> bool:
    """Whether the last ``patience`` held-out losses brought no improvement of more than
    ``tol`` (relative, as MLlib's validationTol) on the best loss before them."""
    if len(history) <= patience:
        return False
    best_before = min(history[:-patience])
    best_since = min(history[-patience:])
    return best_before - best_since < tol * max(best_since, 0.01)


def held_out_sums(replica: Replica, data: LocalPartition) -> list[float]:
    """This worker's held-out (loss sum, weight sum) at the replica's current weights."""
    if data.held_out is None or len(data.held_out[1]) == 0:
        return [0.0, 0.0]
    X, y, w = data.held_out
    weights = replica.weights
    if replica.config.sparse:
        _, loss = numerics.sparse_sufficient_vectors(weights.W, weights.factor, weights.b, X, y, w)
    else:
        _, loss = numerics.sufficient_vectors(weights.W, weights.b, X, y, w)
    return [float(loss), float(w.sum(dtype=np.float64))]


def compute_round(replica: Replica, data: LocalPartition, rank: int) -> codec.RoundMessage:
    """This worker's message for the next exchange: up to ``syncInterval`` steps.

    With more than one step per exchange (bounded staleness), the worker applies its own
    vectors to a scratch copy at once, scaled as if every worker had contributed as many rows,
    so that its later steps see fresher weights; the replica itself is only changed by
    :meth:`Replica.apply_round`.
    """
    config, plan = replica.config, replica.plan
    steps = min(config.sync_interval, replica.total_steps - replica.step)
    W, b, factor = replica.weights.W, replica.weights.b, replica.weights.factor
    if steps > 1:
        W, b = W.copy(order="A"), b.copy()
    sparse_sv = config.sparse and config.message_kind == codec.SV
    rows, weights, losses, Us, Vs, Gs = [], [], [], [], [], []
    for j in range(steps):
        step = replica.step + j
        batch_rows = data.batch_rows(step, plan, config, rank)
        Xb, yb, wb = data.X[batch_rows], data.y[batch_rows], data.w[batch_rows]
        if config.sparse:
            U, loss = numerics.sparse_sufficient_vectors(W, factor, b, Xb, yb, wb)
        else:
            U, loss = numerics.sufficient_vectors(W, b, Xb, yb, wb)
        if config.solver == SAGA:  # syncInterval is 1: no local steps follow
            U = numerics.saga_delta(data.saga_memory(config.num_classes), batch_rows, U)
        weight = float(wb.sum(dtype=np.float64))
        rows.append(int(Xb.shape[0]))
        weights.append(weight)
        losses.append(loss)
        if config.message_kind == codec.SV:
            Us.append(U)
            Vs.append(Xb)
        else:
            Gs.append(numerics.batch_gradient(U, Xb))
        if j < steps - 1:
            own = (weight * plan.num_workers, replica.learning_rate(step), config.reg_param)
            if sparse_sv:
                factor = numerics.apply_sparse_sufficient_vectors(
                    W, factor, b, U, Xb, *own, replica.reg_scale, config.fit_intercept
                )
            elif config.sparse:
                numerics.apply_gradient(W, b, Gs[-1][:, :-1], Gs[-1][:, -1], *own,
                                      replica.reg_scale, config.fit_intercept)  # fmt: skip
            else:
                numerics.apply_sufficient_vectors(
                    W, b, U, Xb, *own, replica.reg_scale, config.fit_intercept
                )
    message = codec.RoundMessage(config.message_kind, replica.step, rank, rows, weights, losses)
    message.num_features = config.num_features
    if replica.validation_pending:  # the weights are still those the last epoch ended with
        message.validation = held_out_sums(replica, data)
    if config.message_kind == codec.SV:
        message.U = np.concatenate(Us)
        message.V = stack_rows(Vs)
    else:
        message.G = np.concatenate(Gs)
    return message


def stack_rows(blocks: list):
    """Row-wise concatenation of dense or CSR blocks."""
    if isinstance(blocks[0], np.ndarray):
        return np.concatenate(blocks)
    from scipy import sparse

    return sparse.vstack(blocks, format="csr")


@dataclass
class TrainingResult:
    """What a worker ends with: weights in the standardized space and the record of the fit."""

    W: np.ndarray
    b: np.ndarray
    objective_history: list[float]
    steps: int
    converged: bool
    exchanges: int = 0
    payload_sent: int = 0
    framing_sent: int = 0
    payload_received: int = 0
    framing_received: int = 0
    sent_per_exchange: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    workers: list[dict] = field(default_factory=list)  # what each rank said at the rendezvous
    replica_checks: int = 0  # replica checksum comparisons made (see verify_interval)
    resyncs: int = 0  # replica checksum mismatches repaired from rank 0
    resumed_from_step: int = 0  # the checkpoint's step this attempt started from
    checkpoints: int = 0  # checkpoints this attempt wrote
    rebuilds: int = 0  # broadcast mode: replicas rebuilt from the checkpoint and the log
    stop_reason: str = "maxIter"  # "validation", "tol" or "maxIter"
    validation_history: list[float] = field(default_factory=list)  # held-out loss per epoch
    best_epoch: int | None = None  # 0-based epoch of the model returned, with validation

    @property
    def total_iterations(self) -> int:
        return len(self.objective_history)

    @property
    def bytes_sent(self) -> int:
        return self.payload_sent + self.framing_sent

    def summary_dict(self) -> dict:
        """Every field but the weights, as plain values."""
        fields = dataclasses.fields(self)
        return {f.name: getattr(self, f.name) for f in fields if f.name not in ("W", "b")}


# The byte counters every Exchange keeps, copied into the result under the same names.
_EXCHANGE_COUNTERS = (
    "payload_sent",
    "framing_sent",
    "payload_received",
    "framing_received",
    "sent_per_exchange",
)


def result_of(
    replica: Replica, exchange: Exchange, exchanges: int, seconds, resyncs: int = 0
) -> TrainingResult:
    """What a worker ends with, from its replica (or block of classes) and its exchange."""
    weights = replica.weights
    weights.fold_factor()
    W, b, best_epoch = weights.W, weights.b, None
    if replica.validation_history:  # the model returned is the best one seen
        W, b = weights.state["best_W"], weights.state["best_b"]
        best_epoch = best_validation_epoch(replica.validation_history)
    elif replica.config.solver == ASGD and replica.averaged_steps:  # the mean of the iterates
        W, b = weights.state["mean_W"], weights.state["mean_b"]
    return TrainingResult(
        W=W,
        b=b,
        objective_history=replica.history,
        steps=replica.step,
        converged=replica.done and replica.stop_reason != "maxIter",
        stop_reason=replica.stop_reason,
        validation_history=replica.validation_history,
        best_epoch=best_epoch,
        exchanges=exchanges,
        seconds=seconds,
        **result_counters(exchange),
        resyncs=resyncs,
    )


def result_counters(exchange: Exchange) -> dict[str, int]:
    """The exchange's byte counters, as :class:`TrainingResult` fields."""
    return {counter: getattr(exchange, counter) for counter in _EXCHANGE_COUNTERS}


def train(
    data: LocalPartition,
    exchange: Exchange,
    config: TrainingConfig,
    plan: Plan,
    on_exchange: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
    resume: ReplicaState | None = None,
) -> TrainingResult:
    """Run SVB SGD from zero weights, or from ``initial`` (W, b in the standardized space);
    every worker calls this with its own data and the same ``initial``. With ``resume`` (a
    checkpoint, the same on every worker) it goes on from the checkpoint's step instead.

    ``on_exchange(step, W, b)`` sees the replica after every exchange and ``on_epoch(epoch,
    objective)`` after every epoch. With ``config.checkpoint_dir`` set, rank 0 writes a
    checkpoint every ``config.checkpoint_interval`` epochs.
    """
    replica = Replica(config, plan, initial)
    if resume is not None:
        replica.restore(resume)
    resumed_from = replica.step
    seconds = dict.fromkeys(ROUND_PHASES, 0.0)
    exchanges = checks = resyncs = checkpoints = 0
    while not replica.done:
        t0 = time.perf_counter()
        message = compute_round(replica, data, exchange.rank)
        t1 = time.perf_counter()
        batch = codec.encode(message)
        t2 = time.perf_counter()
        received = exchange.all_gather(exchanges, batch)
        t3 = time.perf_counter()
        messages = [codec.decode(m) for m in received]
        t4 = time.perf_counter()
        epochs = len(replica.history)
        replica.apply_round(messages)
        t5 = time.perf_counter()
        for name, elapsed in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            seconds[name] += elapsed
        exchanges += 1
        if on_exchange is not None:
            on_exchange(replica.step, replica.weights.W, replica.weights.b)
        if config.verify_interval and exchanges % config.verify_interval == 0:
            resyncs += _verify_replicas(replica, exchange, exchanges, checks)
            checks += 1
        if on_epoch is not None:
            for epoch in range(epochs, len(replica.history)):
                on_epoch(epoch, replica.history[epoch])
        if epoch_checkpoint_due(config, epochs, replica):
            if config.solver == SAGA:  # every worker's own rows' memory, at the same step
                write_worker_memory(config.checkpoint_dir, exchange.rank, replica.step, data.memory)
            if exchange.rank == 0:
                keep = 2 if config.solver == SAGA else 1  # see write_checkpoint
                write_checkpoint(config.checkpoint_dir, replica.state(), keep)
                checkpoints += 1
    if replica.validation_pending:  # the last epoch's held-out loss: one small exchange
        sums = codec.encode_sums(held_out_sums(replica, data))
        gathered = exchange.all_gather(-2 * (exchanges + 1), sums)
        replica.record_validation(
            [codec.RoundMessage("", 0, r, [], [], [], validation=codec.decode_sums(m))
             for r, m in enumerate(gathered)]
        )  # fmt: skip
    result = result_of(replica, exchange, exchanges, seconds, resyncs)
    result.resumed_from_step, result.checkpoints = resumed_from, checkpoints
    result.replica_checks = checks
    return result


def checkpoints_seen(config: TrainingConfig, rank: int) -> list[int]:
    """The checkpoint steps this worker could resume from: rank 0 sees the replica's, and
    with SAGA every worker its own memory's (a step needs all of them); in the class-sharded
    mode every worker sees its own block's."""
    if config.checkpoint_dir is None:
        return []
    if config.message_kind == codec.SHARDED:
        return block_steps(config.checkpoint_dir, rank)
    steps = set(checkpoint_steps(config.checkpoint_dir)) if rank == 0 else None
    if config.solver == SAGA:
        mine = set(worker_memory_steps(config.checkpoint_dir, rank))
        steps = mine if steps is None else steps & mine
    return sorted(steps or [])


def resume_step(config: TrainingConfig, seen: list[list[int]]) -> int | None:
    """The newest step every worker can resume from, given each rank's
    :func:`checkpoints_seen`, or None for a fresh start."""
    common = set(seen[0])
    if config.solver == SAGA or config.message_kind == codec.SHARDED:
        for steps in seen[1:]:
            common &= set(steps)
    return max(common) if common else None


def load_checkpoint(config: TrainingConfig, data: LocalPartition, rank: int, step: int):
    """The replica state of ``step`` (this worker's block of it in the class-sharded mode);
    with SAGA, this worker's memory goes into ``data``."""
    if config.message_kind == codec.SHARDED:
        return read_block(config.checkpoint_dir, rank, step)
    if config.solver == SAGA:
        data.memory = read_worker_memory(config.checkpoint_dir, rank, step)
    return read_checkpoint(config.checkpoint_dir, step)


def epoch_checkpoint_due(config: TrainingConfig, epochs_before: int, replica: Replica) -> bool:
    """Whether the round just applied closed an epoch that is a multiple of the interval.

    The last state is never written: the fit is over, and its result is on its way.
    """
    if config.checkpoint_dir is None or replica.done:
        return False
    interval = config.checkpoint_interval
    return len(replica.history) // interval > epochs_before // interval


def _verify_replicas(replica: Replica, exchange: Exchange, exchanges: int, check: int) -> int:
    """Compare replica checksums; on a mismatch every worker takes rank 0's replica.

    Replicas stay equal by construction, unless something outside the algorithm differs
    (a different BLAS on heterogeneous executors, a bit flip). Check number ``check`` (the
    same on every worker) hashes one block of the replica (see ReplicaWeights.digest), so a
    check costs a few milliseconds at any K x D and a difference anywhere is found within
    ``weights.digest_blocks()`` checks. Costs one small exchange, plus one K x D broadcast
    from rank 0 when a mismatch is found. Returns 1 after a resync.
    """
    weights = replica.weights
    # Negative exchange indices keep these messages apart from the training rounds.
    message = codec.encode_checksum(weights.digest(check))
    digests = [codec.decode_checksum(m) for m in exchange.all_gather(-2 * exchanges, message)]
    if len(set(digests)) == 1:
        return 0
    flat = weights.flat() if exchange.rank == 0 else weights.b[:0]
    received = exchange.all_gather(-2 * exchanges - 1, codec.encode_state(flat, weights.factor))
    if exchange.rank != 0:
        weights.load_flat(*codec.decode_state(received[0]))
    return 1
