"""The Spark-native exchange: sufficient vectors travel by Spark's TorrentBroadcast.

The driver runs rounds. Each round is one barrier-mode job over the cached, partitioned
training data; its tasks first apply the previous round's vectors (from a broadcast), then
compute ``syncInterval`` steps of new vectors and emit them as Arrow. The driver publishes them,
in rank order, with ``sc.broadcast``, so executors fetch the pieces from each other.

Each Python worker process caches its replica (keyed by fit id, with the number of rounds it
has applied) and its partition. On a miss (another worker process, a retried task, a lost
executor) it rebuilds from the newest weights snapshot plus the log of vector broadcasts
since, replaying exactly the operations every other replica performed. Rank 0 snapshots its
replica whenever the log has grown as large as the weights, and the driver destroys the
broadcasts that the new snapshot makes unnecessary, so memory does not grow with the rounds.

It needs a SparkContext, so it runs in classic mode only.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pyarrow as pa

from svb_spark.core import wire
from svb_spark.core.config import Plan, TrainingConfig, make_plan
from svb_spark.core.loop import TrainingResult, apply_round, result_of, round_message
from svb_spark.core.partition import LocalPartition
from svb_spark.core.solvers import Solver, solver_for
from svb_spark.spark.checkpoint import state_from_bytes, state_to_bytes
from svb_spark.spark.contract import (
    RESULT_DDL,
    RESULT_SCHEMA,
    collect_parts,
    decode_result,
    encode_result,
    result_rows,
)
from svb_spark.spark.session import spark_context
from svb_spark.spark.task import initial_weights, load_partition

_SETUP_SCHEMA = pa.schema([("rank", pa.int32()), ("rows", pa.int64()), ("curvature", pa.float64())])
_SETUP_DDL = "rank int, rows long, curvature double"

# Per Python worker process: fit id -> (rounds applied, replica); (fit id, rank) -> partition.
_REPLICAS: dict[str, tuple[int, Solver]] = {}
_PARTITIONS: dict[tuple[str, int], LocalPartition] = {}


class _DriverRounds:
    """The rounds of the broadcast mode, as :func:`~svb_spark.core.loop.apply_round` sees
    them: the driver carries each round's messages, and there is no exchange between the
    workers for the loop's side messages (held-out sums, checksums). The fits that would need
    one are refused before training (:meth:`~svb_spark.core.modes.ExchangeMode.scores_held_out`)."""

    def side(self, batch):
        raise RuntimeError(
            "exchange='broadcast' has no side exchange between the workers (held-out sums, "
            "checksums); such a fit must be refused before training"
        )

    def sum_up(self, values):
        return self.side(values)


NO_SIDE_EXCHANGES = _DriverRounds()


def _forget_other_fits(fit_id: str) -> None:
    for key in [k for k in _REPLICAS if k != fit_id]:
        del _REPLICAS[key]
    for key in [k for k in _PARTITIONS if k[0] != fit_id]:
        del _PARTITIONS[key]


def _partition(fit_id: str, rank: int, batches, config: TrainingConfig) -> LocalPartition:
    cached = _PARTITIONS.get((fit_id, rank))
    if cached is None:
        cached = _PARTITIONS[(fit_id, rank)] = load_partition(batches, config)
    else:
        for _ in batches:  # Spark streams the cached partition anyway; drain it unconverted
            pass
    return cached


def _setup_task(config: TrainingConfig, fit_id: str):
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        rank = TaskContext.get().partitionId()
        _forget_other_fits(fit_id)
        data = _partition(fit_id, rank, batches, config)
        yield pa.RecordBatch.from_pydict(
            {"rank": [rank], "rows": [data.rows], "curvature": [data.curvature]},
            schema=_SETUP_SCHEMA,
        )

    return task


def _round_task(
    config: TrainingConfig,
    plan: Plan,
    fit_id: str,
    round_index: int,
    snapshot,  # Broadcast of (rounds applied, the replica's state as Arrow) or None
    log: list,  # Broadcasts of each round's messages since the snapshot, in round order
    emit_snapshot: bool,
    initial=None,  # warm start (W, b): None, a tuple or a Broadcast of one
    forget_replica: bool = False,  # for tests: drop the cached replica, so the task rebuilds
):
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        rank = BarrierTaskContext.get().partitionId()
        data = _partition(fit_id, rank, batches, config)
        if forget_replica:
            _REPLICAS.pop(fit_id, None)
        applied, replica = _REPLICAS.get(fit_id, (-1, None))
        base, state = (0, None) if snapshot is None else snapshot.value
        if replica is None or applied < base:
            # A miss: start from the snapshot and replay the log like every other replica.
            if round_index > 0:  # after round 0 a miss means a lost or replaced replica
                yield pa.RecordBatch.from_pydict(
                    {"part": ["rebuilt"], "seq": [rank], "data": [b""]}, schema=RESULT_SCHEMA
                )
            applied = base
            replica = solver_for(config, plan, rank, initial_weights(initial))
            if state is not None:
                replica.restore(state_from_bytes(state))
        for round_messages in log[applied - base :]:
            received = [wire.from_ipc(m) for m in round_messages.value]
            apply_round(replica, received, NO_SIDE_EXCHANGES)
        _REPLICAS[fit_id] = (round_index, replica)

        if replica.done:
            _REPLICAS.pop(fit_id, None)
            _PARTITIONS.pop((fit_id, rank), None)
            if rank == 0:
                yield from encode_result(result_of(replica))
            return
        if emit_snapshot and rank == 0:
            yield from result_rows("snapshot", state_to_bytes(replica.state()))
        message = wire.to_ipc(round_message(replica, data))
        yield pa.RecordBatch.from_pydict(
            {"part": ["message"], "seq": [rank], "data": [message]}, schema=RESULT_SCHEMA
        )

    return task


def require_spark_context(spark):
    """The session's SparkContext, or a ValueError that says this mode needs one."""
    sc = spark_context(spark)
    if sc is None:
        raise ValueError(
            "exchange='broadcast' needs a SparkContext (classic mode); Spark Connect has none. "
            "Use exchange='p2p', which needs no SparkContext."
        )
    return sc


def snapshot_due(log_bytes: int, replica_bytes: int) -> bool:
    """Start the log afresh from the replica's state (the checkpoint format, in memory) once
    replaying the log would cost as much as shipping the weights. This bounds what a rebuilt
    replica replays, so it follows bytes, not the epochs of :meth:`Solver.checkpoint_due`,
    which bound the work a retried stage repeats."""
    return log_bytes >= replica_bytes


def fit_by_broadcast(
    spark,
    training,
    config: TrainingConfig,
    fit_id: str,
    initial=None,
) -> tuple[TrainingResult, Plan]:
    """Train over ``training`` (one partition per worker) with one Spark job per exchange.

    ``initial`` is the warm start (W, b) in the standardized space, or a Broadcast of it.
    """
    sc = require_spark_context(spark)
    training = training.cache()
    setup = training.mapInArrow(_setup_task(config, fit_id), _SETUP_DDL)
    hello = sorted(setup.collect(), key=lambda r: r.rank)
    plan = make_plan([r.rows for r in hello], [r.curvature for r in hello], config)

    replica_bytes = config.num_classes * (config.num_features + 1) * 8
    snapshot = None
    log: list = []
    log_bytes = 0
    sent = received = framing_sent = framing_received = 0
    sent_per_exchange: list[int] = []
    payload_per_exchange: list[int] = []
    seconds = {"rounds": 0.0}
    round_index = rebuilds = 0
    try:
        while True:
            emit_snapshot = snapshot_due(log_bytes, replica_bytes)
            started = time.perf_counter()
            task = _round_task(
                config, plan, fit_id, round_index, snapshot, list(log), emit_snapshot,
                initial=initial,
            )  # fmt: skip
            rows = training.mapInArrow(task, RESULT_DDL, barrier=True).collect()
            seconds["rounds"] += time.perf_counter() - started
            rebuilds += sum(r.part == "rebuilt" for r in rows)
            messages = sorted((r.seq, bytes(r.data)) for r in rows if r.part == "message")
            if not messages:  # every replica is done: rank 0 sent the model instead
                parts_rows = [(r.part, r.seq, r.data) for r in rows]
                break
            if emit_snapshot:
                state = collect_parts((r.part, r.seq, r.data) for r in rows if r.part == "snapshot")
                for stale in [*log, *([snapshot] if snapshot else [])]:
                    stale.destroy()
                snapshot = sc.broadcast((round_index, state["snapshot"]))
                log, log_bytes = [], 0
            payloads = [m for _, m in messages]
            log.append(sc.broadcast(payloads))
            round_bytes = [wire.message_bytes(wire.from_ipc(m)) for m in payloads]
            log_bytes += sum(p + f for p, f in round_bytes)
            # Each worker uploads its message once and fetches the whole round (peers' parts).
            own_payload, own_framing = round_bytes[0]
            sent += own_payload
            framing_sent += own_framing
            sent_per_exchange.append(own_payload + own_framing)
            payload_per_exchange.append(own_payload)
            received += sum(p for p, _ in round_bytes[1:])
            framing_received += sum(f for _, f in round_bytes[1:])
            round_index += 1
    finally:
        for stale in [*log, *([snapshot] if snapshot else [])]:
            stale.destroy()
        training.unpersist()

    # Rank 0's replica has the weights and the objective; the driver counted the bytes.
    result = dataclasses.replace(
        decode_result(parts_rows),
        exchanges=round_index,
        payload_sent=sent,
        framing_sent=framing_sent,
        payload_received=received,
        framing_received=framing_received,
        sent_per_exchange=sent_per_exchange,
        payload_per_exchange=payload_per_exchange,
        seconds=seconds,
        workers=[{"rank": r.rank, "rows": r.rows} for r in hello],
        rebuilds=rebuilds,
    )
    return result, plan
