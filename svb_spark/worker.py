"""The per-worker training loop: local data + an Exchange + the solver.

One worker holds its partition in memory, a full replica of ``W`` and ``b``, and for every step
computes its sufficient vectors, swaps them with all peers, and applies everyone's vectors in
rank order. Since every replica starts equal and applies the same update, the replicas stay
equal and the fit equals synchronous minibatch SGD on the global batch.

:func:`barrier_training_task` wraps the loop for ``mapInArrow(..., barrier=True)``;
:func:`train_in_process` runs the same loop in threads for tests.
"""

from __future__ import annotations

import io
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
from svb_spark.data import table_to_arrays
from svb_spark.exchange import Exchange, codec
from svb_spark.exchange.local import LocalExchangeGroup

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


@dataclass
class TrainingResult:
    """What a worker ends with: weights in the standardized space and the record of the fit."""

    W: np.ndarray
    b: np.ndarray
    objective_history: list[float]
    steps: int
    converged: bool
    bytes_sent: int
    bytes_received: int
    seconds: dict[str, float] = field(default_factory=dict)
    rows_per_step: int = 0
    workers: list[dict] = field(default_factory=list)  # what each rank said at the rendezvous

    @property
    def total_iterations(self) -> int:
        return len(self.objective_history)

    def summary_dict(self) -> dict:
        return {
            "objective_history": self.objective_history,
            "steps": self.steps,
            "converged": self.converged,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": self.seconds,
            "rows_per_step": self.rows_per_step,
            "workers": self.workers,
        }


@dataclass
class LocalPartition:
    """A worker's standardized rows plus what it tells its peers at the rendezvous."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray
    curvature: float

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])


def prepare_partition(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, config: TrainingConfig
) -> LocalPartition:
    """Standardize the rows in place in the training dtype and estimate their curvature."""
    X = X.astype(config.dtype, copy=False)
    if config.mean is not None:
        X -= config.mean.astype(config.dtype)
    X *= config.scale.astype(config.dtype)
    w = w.astype(config.dtype, copy=False)
    return LocalPartition(X, y, w, solver.curvature(X, w, config.fit_intercept))


def plan(
    row_counts: list[int], curvatures: list[float], config: TrainingConfig
) -> tuple[int, float]:
    """Steps per epoch and first-epoch learning rate, identical on every worker.

    Every worker takes the same number of steps per epoch, enough for the largest partition
    to see all its rows once; smaller partitions contribute fewer (possibly zero) rows to the
    last steps. The largest local curvature bounds the global one.
    """
    steps = max(1, math.ceil(max(row_counts) / config.batch_size))
    return steps, solver.base_learning_rate(config.step_size, max(curvatures))


def _regularization(W: np.ndarray, config: TrainingConfig) -> float:
    scale = 1.0 if config.reg_scale is None else config.reg_scale
    return solver.regularization(W, config.reg_param, scale)


def train(
    data: LocalPartition,
    exchange: Exchange,
    config: TrainingConfig,
    steps_per_epoch: int,
    base_learning_rate: float,
    on_step: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainingResult:
    """Run synchronous SVB SGD from zero weights; every worker calls this with its own data.

    ``on_step(step, W, b)`` sees the replica after every update and ``on_epoch(epoch,
    objective)`` after every epoch.
    """
    dtype = np.dtype(config.dtype)
    W = np.zeros((config.num_classes, config.num_features), dtype=dtype)
    b = np.zeros(config.num_classes, dtype=dtype)
    reg_scale = 1.0 if config.reg_scale is None else config.reg_scale.astype(dtype)
    seconds = dict.fromkeys(["compute", "encode", "exchange", "decode", "apply"], 0.0)
    history: list[float] = []
    converged = False
    step = 0
    for epoch in range(config.max_iter):
        rng = np.random.default_rng([config.seed & 0xFFFFFFFF, exchange.rank, epoch])
        order = rng.permutation(data.rows)
        learning_rate = solver.learning_rate(base_learning_rate, epoch)
        loss_sum = weight_sum = 0.0
        for s in range(steps_per_epoch):
            t0 = time.perf_counter()
            rows = order[s * config.batch_size : (s + 1) * config.batch_size]
            Xb, yb, wb = data.X[rows], data.y[rows], data.w[rows]
            U, local_loss = solver.sufficient_vectors(W, b, Xb, yb, wb)
            t1 = time.perf_counter()
            message = codec.SufficientVectors(
                step, exchange.rank, U, Xb, float(wb.sum(dtype=np.float64)), local_loss
            )
            batch = codec.encode(message)
            t2 = time.perf_counter()
            received = exchange.all_gather(step, batch)
            t3 = time.perf_counter()
            messages = [codec.decode(m) for m in received]
            U_all = np.concatenate([m.U for m in messages])
            V_all = np.concatenate([m.V for m in messages])
            step_weight = sum(m.weight_sum for m in messages)
            t4 = time.perf_counter()
            solver.apply_sufficient_vectors(
                W,
                b,
                U_all,
                V_all,
                step_weight,
                learning_rate,
                config.reg_param,
                reg_scale,
                config.fit_intercept,
            )
            t5 = time.perf_counter()
            loss_sum += sum(m.loss_sum for m in messages)
            weight_sum += step_weight
            for name, elapsed in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                seconds[name] += elapsed
            if on_step is not None:
                on_step(step, W, b)
            step += 1
        # The objective of the epoch: loss seen at each step before its update, plus the
        # penalty at the epoch's end. Every worker computes the same number from the headers.
        history.append(loss_sum / max(weight_sum, 1e-300) + _regularization(W, config))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
        if len(history) > 1:
            previous = history[-2]
            if abs(previous - history[-1]) <= config.tol * max(abs(previous), 1e-12):
                converged = True
                break
    return TrainingResult(
        W=W,
        b=b,
        objective_history=history,
        steps=step,
        converged=converged,
        bytes_sent=exchange.bytes_sent,
        bytes_received=exchange.bytes_received,
        seconds=seconds,
        rows_per_step=config.batch_size * exchange.num_workers,
    )


def train_in_process(
    partitions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    config: TrainingConfig,
    on_step: Callable[[int, int, np.ndarray, np.ndarray], None] | None = None,
) -> list[TrainingResult]:
    """Train with one thread per partition over a :class:`LocalExchangeGroup`.

    ``partitions`` are raw ``(X, y, weights)`` blocks in rank order; ``on_step(rank, step, W,
    b)`` observes every replica. Returns every worker's result, indexed by rank.
    """
    prepared = [prepare_partition(X.copy(), y, w, config) for X, y, w in partitions]
    steps, base_lr = plan([p.rows for p in prepared], [p.curvature for p in prepared], config)
    group = LocalExchangeGroup(len(prepared), timeout=config.exchange_timeout)
    results: list[TrainingResult | None] = [None] * len(prepared)
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        observer = None if on_step is None else (lambda s, W, b: on_step(rank, s, W, b))
        try:
            results[rank] = train(
                prepared[rank], group.member(rank), config, steps, base_lr, observer
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
    """Rank 0's output rows: W and b as .npy bytes in chunks, the summary as JSON."""
    parts = {"W": result.W, "b": result.b}
    for name, array in parts.items():
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array))
        payload = buffer.getvalue()
        chunks = [payload[i : i + _CHUNK_BYTES] for i in range(0, len(payload), _CHUNK_BYTES)]
        yield pa.RecordBatch.from_pydict(
            {"part": [name] * len(chunks), "seq": list(range(len(chunks))), "data": chunks},
            schema=RESULT_SCHEMA,
        )
    summary = json.dumps(result.summary_dict()).encode()
    yield pa.RecordBatch.from_pydict(
        {"part": ["summary"], "seq": [0], "data": [summary]}, schema=RESULT_SCHEMA
    )


def decode_result(rows: list[tuple[str, int, bytes]]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Inverse of :func:`encode_result` on the collected ``(part, seq, data)`` rows."""
    parts: dict[str, list[tuple[int, bytes]]] = {}
    for part, seq, data in rows:
        parts.setdefault(part, []).append((seq, bytes(data)))

    def joined(name: str) -> bytes:
        return b"".join(data for _, data in sorted(parts[name]))

    W = np.load(io.BytesIO(joined("W")))
    b = np.load(io.BytesIO(joined("b")))
    return W, b, json.loads(joined("summary"))


def executor_host(address: str) -> str:
    """The host part of a task address ``host:port`` (IPv6 hosts come in brackets)."""
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def barrier_training_task(config: TrainingConfig, secret: str):
    """The function ``mapInArrow(..., barrier=True)`` runs in every task.

    It captures only ``config`` and ``secret``. Each task loads its partition, starts a Flight
    server on its executor's own host, swaps locations, row counts and curvatures with one
    ``allGather`` (about a second, paid once per fit), then trains over the mesh.
    """

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        from svb_spark.exchange.flight import FlightMeshExchange

        context = BarrierTaskContext.get()
        rank = context.partitionId()
        # Spark's address for each barrier task: its executor's host as the driver reaches it.
        addresses = [info.address for info in context.getTaskInfos()]
        host = executor_host(addresses[rank])

        batches = list(batches)
        X, y, w = table_to_arrays(
            batches, FEATURES, LABEL, WEIGHT, config.num_features, config.dtype
        )
        if batches:
            # Shuffle output arrives in no fixed order; sorting by row id makes fits repeatable.
            row_ids = pa.Table.from_batches(batches).column(ROW_ID).to_numpy()
            order = np.argsort(row_ids, kind="stable")
            X, y, w = X[order], y[order], w[order]
        del batches
        data = prepare_partition(X, y, w, config)

        exchange = FlightMeshExchange(rank, len(addresses), host, secret, config.exchange_timeout)
        try:
            hello = {
                "location": exchange.location,
                "rows": data.rows,
                "curvature": data.curvature,
                "pid": os.getpid(),
            }
            peers = [json.loads(m) for m in context.allGather(json.dumps(hello))]
            exchange.connect([p["location"] for p in peers])
            steps, base_lr = plan(
                [p["rows"] for p in peers], [p["curvature"] for p in peers], config
            )

            def log_epoch(epoch: int, objective: float) -> None:
                if rank == 0:
                    logger.info("epoch %d objective %.6f", epoch + 1, objective)

            result = train(data, exchange, config, steps, base_lr, on_epoch=log_epoch)
            result.workers = [
                {"address": address, **{k: p[k] for k in ("location", "rows", "pid")}}
                for address, p in zip(addresses, peers)
            ]
        finally:
            exchange.close()
        if rank == 0:
            yield from encode_result(result)

    return task
