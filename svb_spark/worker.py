"""The per-worker training loop: local data + an Exchange + the solver.

One worker holds its partition in memory and a full replica of ``W`` and ``b``. Every exchange
it sends its message for the last ``syncInterval`` steps (sufficient vectors, or the dense
gradient in the baseline mode) to all peers, and applies everyone's messages step by step in
rank order. Every replica starts equal and applies the same update, so the replicas stay equal:
with ``syncInterval = 1`` the fit equals synchronous minibatch SGD on the global batch.

:func:`barrier_training_task` wraps the loop for ``mapInArrow(..., barrier=True)``;
:func:`train_in_process` runs the same loop in threads for tests. The Spark-native broadcast
mode (:mod:`svb_spark.broadcast`) drives the same :class:`Replica` from the driver.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from svb_spark import solver
from svb_spark.checkpoint import ReplicaState, checkpoint_steps, read_checkpoint, write_checkpoint
from svb_spark.data import table_to_arrays
from svb_spark.exchange import Exchange, codec
from svb_spark.exchange.local import LocalExchangeGroup
from svb_spark.exchange.tls import TlsFiles

logger = logging.getLogger(__name__)

# Column names of the DataFrame the driver hands to the barrier stage.
FEATURES, LABEL, WEIGHT, ROW_ID = "features", "label", "weight", "row_id"
RESULT_SCHEMA = pa.schema([("part", pa.string()), ("seq", pa.int32()), ("data", pa.binary())])
RESULT_DDL = "part string, seq int, data binary"
_CHUNK_BYTES = 32 << 20


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
    message_kind: str = codec.SV  # codec.SV, or codec.DENSE for the baseline
    sync_interval: int = 1  # local steps between exchanges
    sparse: bool = False  # rows as CSR; the replica is then kept as factor * W
    verify_interval: int = 0  # exchanges between replica checksum comparisons; 0 = never
    checkpoint_dir: str | None = None  # this fit's checkpoint directory (path or URI), or None
    checkpoint_interval: int = 10  # epochs between checkpoints
    tls: TlsFiles | None = None  # PEM paths for mutual TLS between workers, or None


@dataclass(frozen=True)
class Plan:
    """What every worker must agree on before the first step."""

    steps_per_epoch: int
    base_learning_rate: float
    num_workers: int


def make_plan(row_counts: list[int], curvatures: list[float], config: TrainingConfig) -> Plan:
    """Steps per epoch and first-epoch learning rate, identical on every worker.

    Every worker takes the same number of steps per epoch, enough for the largest partition
    to see all its rows once; smaller partitions contribute fewer (possibly zero) rows to the
    last steps. The largest local curvature bounds the global one.
    """
    return Plan(
        steps_per_epoch=max(1, math.ceil(max(row_counts) / config.batch_size)),
        base_learning_rate=solver.base_learning_rate(config.step_size, max(curvatures)),
        num_workers=len(row_counts),
    )


@dataclass
class LocalPartition:
    """A worker's standardized rows, and the minibatch of any global step."""

    X: np.ndarray  # dense, or scipy.sparse CSR
    y: np.ndarray
    w: np.ndarray
    curvature: float
    _order: tuple[int, np.ndarray] | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    def batch(self, step: int, plan: Plan, config: TrainingConfig, rank: int):
        """(X, y, weights) this worker contributes to global step ``step``.

        Each epoch shuffles the partition with a generator seeded by (seed, rank, epoch), so
        any process can reproduce any step's batch without having seen the earlier ones.
        """
        epoch, position = divmod(step, plan.steps_per_epoch)
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([config.seed & 0xFFFFFFFF, rank, epoch])
            self._order = (epoch, rng.permutation(self.rows))
        rows = self._order[1][position * config.batch_size : (position + 1) * config.batch_size]
        return self.X[rows], self.y[rows], self.w[rows]


def prepare_partition(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, config: TrainingConfig
) -> LocalPartition:
    """Standardize the rows in place in the training dtype and estimate their curvature.

    CSR rows are only scaled, never centered (centering would make them dense), as in MLlib.
    """
    X = X.astype(config.dtype, copy=False)
    if config.sparse:
        X.data *= config.scale.astype(config.dtype)[X.indices]
    else:
        if config.mean is not None:
            X -= config.mean.astype(config.dtype)
        X *= config.scale.astype(config.dtype)
    w = w.astype(config.dtype, copy=False)
    return LocalPartition(X, y, w, solver.curvature(X, w, config.fit_intercept))


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
        shape = (config.num_classes, config.num_features)
        # Sparse updates touch a few features of every class: store W feature-major for them.
        if config.sparse and config.message_kind == codec.SV:
            self.W = solver.feature_major_zeros(*shape, dtype)
        else:
            self.W = np.zeros(shape, dtype=dtype)
        self.b = np.zeros(config.num_classes, dtype=dtype)
        if initial is not None:
            # A warm start, already in the standardized space; copied, since W is updated in
            # place and the initial arrays may be a broadcast value shared by the process.
            self.W[...] = np.asarray(initial[0], dtype=dtype).reshape(shape)
            self.b[...] = np.asarray(initial[1], dtype=dtype).reshape(config.num_classes)
        # Sparse SV replicas hold the model as factor * W so that L2 decay costs O(1).
        self.factor = 1.0
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
        return self.converged or self.step >= self.total_steps

    def learning_rate(self, step: int) -> float:
        return solver.learning_rate(self.plan.base_learning_rate, step // self.plan.steps_per_epoch)

    def apply_round(self, messages: list[codec.RoundMessage]) -> None:
        """Apply one exchange's messages (indexed by rank) in (step, rank) order."""
        config = self.config
        for j in range(messages[0].steps):
            if self.done:
                return  # an earlier step of this round met tol: the rest is discarded
            lr = self.learning_rate(self.step)
            weight = sum(m.weight_sums[j] for m in messages)
            if messages[0].kind == codec.SV and config.sparse:
                parts = [m.step_vectors(j) for m in messages]
                self.factor = solver.apply_sparse_sufficient_vectors(
                    self.W, self.factor, self.b, np.concatenate([u for u, _ in parts]),
                    _stack_rows([v for _, v in parts]), weight, lr, config.reg_param,
                    self.reg_scale, config.fit_intercept,
                )  # fmt: skip
            elif messages[0].kind == codec.SV:
                parts = [m.step_vectors(j) for m in messages]
                U = np.concatenate([u for u, _ in parts])
                V = np.concatenate([v for _, v in parts])
                solver.apply_sufficient_vectors(
                    self.W, self.b, U, V, weight, lr, config.reg_param, self.reg_scale,
                    config.fit_intercept,
                )  # fmt: skip
            else:
                G = messages[0].step_gradient(j).copy()
                for m in messages[1:]:
                    G += m.step_gradient(j)
                solver.apply_gradient(
                    self.W, self.b, G[:, :-1], G[:, -1], weight, lr, config.reg_param,
                    self.reg_scale, config.fit_intercept,
                )  # fmt: skip
            self._epoch_loss += sum(m.loss_sums[j] for m in messages)
            self._epoch_weight += weight
            self.step += 1
            if self.step % self.plan.steps_per_epoch == 0:
                self._close_epoch()

    def state(self) -> ReplicaState:
        """A copy of everything needed to go on from this step (see :mod:`svb_spark.checkpoint`)."""
        storage = _replica_storage(self)
        return ReplicaState(
            weights=storage.copy(),
            transposed=storage is not self.W,
            b=self.b.copy(),
            factor=self.factor,
            step=self.step,
            history=list(self.history),
            converged=self.converged,
            epoch_loss=self._epoch_loss,
            epoch_weight=self._epoch_weight,
            plan=dataclasses.asdict(self.plan),
        )

    def restore(self, state: ReplicaState) -> None:
        """Go on from a checkpointed ``state`` of a fit with the same plan."""
        if state.plan != dataclasses.asdict(self.plan):
            raise ValueError(
                f"the checkpoint at step {state.step} was written by a fit planned as "
                f"{state.plan}, not {dataclasses.asdict(self.plan)}; remove it or use another "
                "checkpointDir"
            )
        storage = _replica_storage(self)
        if state.transposed != (storage is not self.W) or state.weights.shape != storage.shape:
            raise ValueError(f"the checkpoint at step {state.step} has another weights layout")
        storage[...] = state.weights
        self.b[...] = state.b
        self.factor = state.factor
        self.step = state.step
        self.history = list(state.history)
        self.converged = state.converged
        self._epoch_loss, self._epoch_weight = state.epoch_loss, state.epoch_weight

    def fold_factor(self) -> None:
        """Multiply the scalar into ``W`` (in place), leaving ``factor = 1``."""
        if self.factor != 1.0:
            self.W *= self.W.dtype.type(self.factor)
            self.factor = 1.0

    def _close_epoch(self) -> None:
        # The epoch objective: the loss each step saw before its update, plus the penalty at
        # the epoch's end. Every replica computes the same number from the same messages.
        penalty = solver.regularization(self.W, self.config.reg_param, self.reg_scale, self.factor)
        self.history.append(self._epoch_loss / max(self._epoch_weight, 1e-300) + penalty)
        self._epoch_loss = self._epoch_weight = 0.0
        if len(self.history) > 1:
            previous, current = self.history[-2:]
            if abs(previous - current) <= self.config.tol * max(abs(previous), 1e-12):
                self.converged = True


def compute_round(replica: Replica, data: LocalPartition, rank: int) -> codec.RoundMessage:
    """This worker's message for the next exchange: up to ``syncInterval`` steps.

    With more than one step per exchange (bounded staleness), the worker applies its own
    vectors to a scratch copy at once, scaled as if every worker had contributed as many rows,
    so that its later steps see fresher weights; the replica itself is only changed by
    :meth:`Replica.apply_round`.
    """
    config, plan = replica.config, replica.plan
    steps = min(config.sync_interval, replica.total_steps - replica.step)
    W, b, factor = replica.W, replica.b, replica.factor
    if steps > 1:
        W, b = W.copy(order="A"), b.copy()
    sparse_sv = config.sparse and config.message_kind == codec.SV
    rows, weights, losses, Us, Vs, Gs = [], [], [], [], [], []
    for j in range(steps):
        step = replica.step + j
        Xb, yb, wb = data.batch(step, plan, config, rank)
        if config.sparse:
            U, loss = solver.sparse_sufficient_vectors(W, factor, b, Xb, yb, wb)
        else:
            U, loss = solver.sufficient_vectors(W, b, Xb, yb, wb)
        weight = float(wb.sum(dtype=np.float64))
        rows.append(int(Xb.shape[0]))
        weights.append(weight)
        losses.append(loss)
        if config.message_kind == codec.SV:
            Us.append(U)
            Vs.append(Xb)
        else:
            Gs.append(solver.batch_gradient(U, Xb))
        if j < steps - 1:
            own = (weight * plan.num_workers, replica.learning_rate(step), config.reg_param)
            if sparse_sv:
                factor = solver.apply_sparse_sufficient_vectors(
                    W, factor, b, U, Xb, *own, replica.reg_scale, config.fit_intercept
                )
            elif config.sparse:
                solver.apply_gradient(W, b, Gs[-1][:, :-1], Gs[-1][:, -1], *own,
                                      replica.reg_scale, config.fit_intercept)  # fmt: skip
            else:
                solver.apply_sufficient_vectors(
                    W, b, U, Xb, *own, replica.reg_scale, config.fit_intercept
                )
    message = codec.RoundMessage(config.message_kind, replica.step, rank, rows, weights, losses)
    message.num_features = config.num_features
    if config.message_kind == codec.SV:
        message.U = np.concatenate(Us)
        message.V = _stack_rows(Vs)
    else:
        message.G = np.concatenate(Gs)
    return message


def _stack_rows(blocks: list):
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
    resyncs: int = 0  # replica checksum mismatches repaired from rank 0
    resumed_from_step: int = 0  # the checkpoint's step this attempt started from
    checkpoints: int = 0  # checkpoints this attempt wrote

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


def _result(
    replica: Replica, exchange: Exchange, exchanges: int, seconds, resyncs: int
) -> TrainingResult:
    replica.fold_factor()
    return TrainingResult(
        W=replica.W,
        b=replica.b,
        objective_history=replica.history,
        steps=replica.step,
        converged=replica.converged,
        exchanges=exchanges,
        payload_sent=exchange.payload_sent,
        framing_sent=exchange.framing_sent,
        payload_received=exchange.payload_received,
        framing_received=exchange.framing_received,
        sent_per_exchange=exchange.sent_per_exchange,
        seconds=seconds,
        resyncs=resyncs,
    )


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
    seconds = dict.fromkeys(["compute", "encode", "exchange", "decode", "apply"], 0.0)
    exchanges = resyncs = checkpoints = 0
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
            on_exchange(replica.step, replica.W, replica.b)
        if config.verify_interval and exchanges % config.verify_interval == 0:
            resyncs += _verify_replicas(replica, exchange, exchanges)
        if on_epoch is not None:
            for epoch in range(epochs, len(replica.history)):
                on_epoch(epoch, replica.history[epoch])
        if exchange.rank == 0 and _checkpoint_due(config, epochs, replica):
            write_checkpoint(config.checkpoint_dir, replica.state())
            checkpoints += 1
    result = _result(replica, exchange, exchanges, seconds, resyncs)
    result.resumed_from_step, result.checkpoints = resumed_from, checkpoints
    return result


def _checkpoint_due(config: TrainingConfig, epochs_before: int, replica: Replica) -> bool:
    """Whether the round just applied closed an epoch that is a multiple of the interval.

    The last state is never written: the fit is over, and its result is on its way.
    """
    if config.checkpoint_dir is None or replica.done:
        return False
    interval = config.checkpoint_interval
    return len(replica.history) // interval > epochs_before // interval


def _replica_storage(replica: Replica) -> np.ndarray:
    """The replica's weights as the contiguous array that holds them (K x D or D x K)."""
    W = replica.W
    return W if W.flags.c_contiguous else W.T


def _verify_replicas(replica: Replica, exchange: Exchange, exchanges: int) -> int:
    """Compare replica checksums; on a mismatch every worker takes rank 0's replica.

    Replicas stay equal by construction, unless something outside the algorithm differs
    (a different BLAS on heterogeneous executors, a bit flip). Costs one small exchange, plus
    one K x D broadcast from rank 0 when a mismatch is found. Returns 1 after a resync.
    """
    digest = hashlib.sha256(memoryview(_replica_storage(replica)).cast("B"))
    digest.update(replica.b.tobytes() + np.float64(replica.factor).tobytes())
    # Negative exchange indices keep these messages apart from the training rounds.
    check = codec.encode_checksum(digest.hexdigest())
    digests = [codec.decode_checksum(m) for m in exchange.all_gather(-2 * exchanges, check)]
    if len(set(digests)) == 1:
        return 0
    storage = _replica_storage(replica)
    flat = np.concatenate([storage.ravel(), replica.b]) if exchange.rank == 0 else storage[:0, 0]
    received = exchange.all_gather(-2 * exchanges - 1, codec.encode_state(flat, replica.factor))
    if exchange.rank != 0:
        values, replica.factor = codec.decode_state(received[0])
        storage[...] = values[: storage.size].reshape(storage.shape)
        replica.b[...] = values[storage.size :]
    return 1


def train_in_process(
    partitions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    config: TrainingConfig,
    on_exchange: Callable[[int, int, np.ndarray, np.ndarray], None] | None = None,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
    resume: ReplicaState | None = None,
) -> list[TrainingResult]:
    """Train with one thread per partition over a :class:`LocalExchangeGroup`.

    ``partitions`` are raw ``(X, y, weights)`` blocks in rank order; ``on_exchange(rank, step,
    W, b)`` observes every replica; ``resume`` is a checkpoint to go on from. Returns every
    worker's result, indexed by rank.
    """
    prepared = [prepare_partition(X.copy(), y, w, config) for X, y, w in partitions]
    plan = make_plan([p.rows for p in prepared], [p.curvature for p in prepared], config)
    group = LocalExchangeGroup(len(prepared), timeout=config.exchange_timeout)
    results: list[TrainingResult | None] = [None] * len(prepared)
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        observer = None
        if on_exchange is not None:

            def observer(step, W, b):
                on_exchange(rank, step, W, b)

        try:
            results[rank] = train(
                prepared[rank], group.member(rank), config, plan, observer, None, initial, resume
            )
        except BaseException as error:  # surfaced in the caller's thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(prepared))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def encode_result(result: TrainingResult) -> Iterator[pa.RecordBatch]:
    """Rank 0's output rows: W and b as raw bytes in chunks, the shapes and summary as JSON.

    The weights leave straight from the replica's memory, one chunk at a time, so that a
    worker never holds a second copy of a K x D replica.
    """
    arrays = {"W": result.W, "b": np.ascontiguousarray(result.b)}
    layout = {}
    for name, array in arrays.items():
        # A feature-major replica goes out as its D x K storage, not as a K x D copy.
        transposed = not array.flags.c_contiguous
        stored = np.ascontiguousarray(array.T if transposed else array)
        layout[name] = [array.dtype.str, list(array.shape), transposed]
        yield from result_rows(name, memoryview(stored).cast("B"))
    yield from result_rows("layout", json.dumps(layout).encode())
    yield from result_rows("summary", json.dumps(result.summary_dict()).encode())


def result_rows(part: str, payload: bytes | memoryview) -> Iterator[pa.RecordBatch]:
    """``payload`` as (part, seq, data) rows of at most 32 MB each, one batch per row."""
    for seq, start in enumerate(range(0, max(len(payload), 1), _CHUNK_BYTES)):
        yield pa.RecordBatch.from_pydict(
            {"part": [part], "seq": [seq], "data": [bytes(payload[start : start + _CHUNK_BYTES])]},
            schema=RESULT_SCHEMA,
        )


def collect_parts(rows) -> dict[str, bytes]:
    """Reassemble collected ``(part, seq, data)`` rows into one payload per part."""
    parts: dict[str, list[tuple[int, bytes]]] = {}
    for part, seq, data in rows:
        parts.setdefault(part, []).append((seq, bytes(data)))
    return {name: b"".join(data for _, data in sorted(chunks)) for name, chunks in parts.items()}


def _array_from_bytes(data: bytes, dtype: str, shape: list[int], transposed: bool) -> np.ndarray:
    array = np.frombuffer(data, dtype=np.dtype(dtype))
    return array.reshape(shape[::-1]).T if transposed else array.reshape(shape)


def decode_result(rows) -> tuple[np.ndarray, np.ndarray, dict]:
    """Inverse of :func:`encode_result` on the collected ``(part, seq, data)`` rows."""
    parts = collect_parts(rows)
    layout = json.loads(parts["layout"])
    W, b = (_array_from_bytes(parts[name], *layout[name]) for name in ("W", "b"))
    summary = json.loads(parts["summary"])
    for worker in summary["workers"]:
        worker.update(json.loads(parts.get(f"worker{worker['rank']}", b"{}")))
    return W, b, summary


def executor_host(address: str) -> str:
    """The host part of a task address ``host:port`` (IPv6 hosts come in brackets)."""
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def load_partition(batches: Iterator[pa.RecordBatch], config: TrainingConfig) -> LocalPartition:
    """A task's input batches as a standardized :class:`LocalPartition`, in row-id order."""
    batches = list(batches)
    X, y, w = table_to_arrays(
        batches, FEATURES, LABEL, WEIGHT, config.num_features, config.dtype, config.sparse
    )
    if batches:
        # Shuffle output arrives in no fixed order; sorting by row id makes fits repeatable.
        row_ids = pa.Table.from_batches(batches).column(ROW_ID).to_numpy()
        order = np.argsort(row_ids, kind="stable")
        X, y, w = X[order], y[order], w[order]
    return prepare_partition(X, y, w, config)


def max_message_bytes(config: TrainingConfig) -> int:
    """The largest payload a peer's message can have in this fit: anything bigger is refused.

    Per step: K (D + 1) gradient floats in the dense mode; otherwise B rows of K floats of U
    plus, for V, D floats (dense rows) or at most D values and D int32 indices (CSR rows).
    """
    itemsize = np.dtype(config.dtype).itemsize
    K, D, B = config.num_classes, config.num_features, config.batch_size
    if config.message_kind == codec.DENSE:
        per_step = K * (D + 1) * itemsize
    else:
        per_step = B * (K * itemsize + D * (itemsize + (4 if config.sparse else 0)) + 8)
    largest = config.sync_interval * per_step
    if config.verify_interval:
        largest = max(largest, K * (D + 1) * itemsize)  # rank 0's replica, after a mismatch
    return largest + (1 << 16)  # slack for Arrow's buffer padding


def _memory_report(data: LocalPartition) -> dict:
    """This process's peak resident memory and the size of its training rows, in bytes, and
    the threads of each BLAS it has loaded (where threadpoolctl can tell)."""
    import resource

    X = data.X
    rows_bytes = X.nbytes if isinstance(X, np.ndarray) else X.data.nbytes + X.indices.nbytes
    # Linux reports ru_maxrss in KiB.
    return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "data_bytes": int(rows_bytes + data.y.nbytes + data.w.nbytes),
            "blas_threads": _blas_threads()}  # fmt: skip


def _blas_threads() -> list[int]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def limit_blas_threads(threads: int) -> None:
    """Cap every loaded BLAS (numpy's and scipy's own) at ``threads`` threads in this process.

    PySpark sets OMP_NUM_THREADS to the executor's cores (and a cluster may export
    OPENBLAS_NUM_THREADS), so several barrier tasks on one executor would each run that many
    BLAS threads and busy-wait on each other's cores (4 workers on 2 cores measured 6x slower
    per step). Uses threadpoolctl where it is installed (it comes with scikit-learn); without
    it, BLAS keeps the environment's setting.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    import scipy.linalg.blas  # noqa: F401  (load scipy's BLAS now, so that the cap reaches it)

    threadpool_limits(limits=threads, user_api="blas")


def _newest_checkpoint(config: TrainingConfig) -> int | None:
    if config.checkpoint_dir is None:
        return None
    steps = checkpoint_steps(config.checkpoint_dir)
    return steps[-1] if steps else None


# Test-only: when set in the executors' environment, each barrier task writes its rank, task
# id, process id and Flight location to a file in this directory, so that fault tests can kill
# or stop a given worker and check afterwards that its port is closed.
_RECORD_WORKERS_ENV = "SVB_SPARK_RECORD_WORKERS_TO"


def _record_worker_for_tests(rank: int, task_id: int, location: str) -> None:
    directory = os.environ.get(_RECORD_WORKERS_ENV)
    if not directory:
        return
    record = {"rank": rank, "task": task_id, "pid": os.getpid(), "location": location}
    path = os.path.join(directory, f"rank{rank}-task{task_id}.json")
    with open(path + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(path + ".tmp", path)  # the test never reads half a file


def initial_weights(initial) -> tuple[np.ndarray, np.ndarray] | None:
    """The (W, b) a fit starts from: None, a tuple, or a Spark Broadcast of a tuple."""
    if initial is None or isinstance(initial, tuple):
        return initial
    return initial.value  # a Broadcast: fetched once per Python worker, peer to peer


def barrier_training_task(
    config: TrainingConfig,
    secret: str,
    initial=None,
    progress: tuple[str, int] | None = None,
):
    """The function ``mapInArrow(..., barrier=True)`` runs in every task (p2p and dense).

    It captures only ``config``, ``secret``, the warm start ``initial`` (None, a (W, b) tuple
    or a Broadcast of one) and the driver's progress listener address (None on Spark Connect).
    Each task loads its partition, starts a Flight server on its executor's own host, swaps
    locations, row counts and curvatures with one ``allGather`` (about a second, paid once per
    fit), then trains over the mesh. Rank 0 logs every epoch and reports it to the driver.
    """

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        from svb_spark.exchange.flight import FlightMeshExchange
        from svb_spark.progress import ProgressReporter

        context = BarrierTaskContext.get()
        rank = context.partitionId()
        limit_blas_threads(context.cpus())
        # Spark's address for each barrier task: its executor's host as the driver reaches it.
        addresses = [info.address for info in context.getTaskInfos()]
        host = executor_host(addresses[rank])
        data = load_partition(batches, config)
        start = initial_weights(initial)

        exchange = FlightMeshExchange(
            rank, len(addresses), host, secret, config.exchange_timeout,
            max_message_bytes(config), tls=config.tls,
        )  # fmt: skip
        reporter = None
        try:
            _record_worker_for_tests(rank, context.taskAttemptId(), exchange.location)
            hello = {
                "location": exchange.location,
                "rows": data.rows,
                "curvature": data.curvature,
                "pid": os.getpid(),
                # Rank 0 picks the checkpoint every worker resumes from (a retried stage).
                "checkpoint": _newest_checkpoint(config) if rank == 0 else None,
            }
            peers = [json.loads(m) for m in context.allGather(json.dumps(hello))]
            exchange.connect([p["location"] for p in peers])
            plan = make_plan([p["rows"] for p in peers], [p["curvature"] for p in peers], config)
            resume_step = peers[0]["checkpoint"]
            resume = None
            if resume_step is not None:
                resume = read_checkpoint(config.checkpoint_dir, resume_step)
                logger.info("resuming from the checkpoint at step %d", resume_step)
            if rank == 0 and progress is not None:
                reporter = ProgressReporter(progress, secret)
            epoch_rows = sum(p["rows"] for p in peers)
            clock = [time.perf_counter()]

            def log_epoch(epoch: int, objective: float) -> None:
                if rank != 0:
                    return
                now = time.perf_counter()
                elapsed, clock[0] = now - clock[0], now
                message = {
                    "epoch": epoch + 1,
                    "epochs": config.max_iter,
                    "objective": objective,
                    "rows_per_second": epoch_rows / max(elapsed, 1e-9),
                    "bytes_sent": exchange.payload_sent + exchange.framing_sent,
                    "bytes_received": exchange.payload_received + exchange.framing_received,
                }
                logger.info(
                    "epoch %d/%d objective %.6f %.0f rows/s %d bytes sent",
                    message["epoch"], config.max_iter, objective,
                    message["rows_per_second"], message["bytes_sent"],
                )  # fmt: skip
                if reporter is not None:
                    reporter.send(message)

            result = train(
                data, exchange, config, plan, on_epoch=log_epoch, initial=start, resume=resume
            )
            result.workers = [
                {"rank": r, "address": address, **{k: p[k] for k in ("location", "rows", "pid")}}
                for r, (address, p) in enumerate(zip(addresses, peers))
            ]
        finally:
            exchange.close()
            if reporter is not None:
                reporter.close()
        if rank == 0:
            yield from encode_result(result)
        yield from result_rows(f"worker{rank}", json.dumps(_memory_report(data)).encode())

    return task
