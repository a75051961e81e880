"""The one training loop: every solver and exchange mode runs through :func:`train`.

A round is: the solver computes this worker's message, the exchange gives back every
worker's message in rank order, the solver applies them. Around that the loop times the
phases, reports epochs, compares replica checksums, writes checkpoints when the solver says
one is due, and builds the :class:`TrainingResult`. Pure numpy plus an injected
:class:`~svb_spark.core.exchange.Exchange` and checkpoint store: no Spark, no filesystem.

The broadcast mode's driver carries a round between two Spark jobs; its tasks run the two
halves of the same round (:func:`round_message`, :func:`apply_round`), so every mode has one
compute, encode, decode, apply path.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from svb_spark.core import wire
from svb_spark.core.exchange import Exchange
from svb_spark.core.partition import LocalPartition
from svb_spark.core.solvers.base import Solver

# The phases of one exchange round, timed by :func:`train` and reported in ``summary.timings``.
ROUND_PHASES = ("compute", "encode", "exchange", "decode", "apply")

# Side messages (epoch sums, checksums, the last held-out loss) take negative exchange indices
# of their own, counting down from here; -1 is the rendezvous's (svb_spark.spark.task).
_FIRST_SIDE_INDEX = -2


class Rounds:
    """The exchange as the loop and the solvers use it: numbered rounds, and small side
    exchanges that every worker makes in the same order."""

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.rank = exchange.rank
        self.count = 0  # training rounds so far
        self._side = _FIRST_SIDE_INDEX + 1

    def gather(self, batch):
        """Every worker's batch of the next training round, in rank order."""
        received = self.exchange.all_gather(self.count, batch)
        self.count += 1
        return received

    def side(self, batch):
        """Every worker's batch of the next side exchange, in rank order."""
        self._side -= 1
        return self.exchange.all_gather(self._side, batch)

    def sum_up(self, values) -> list[list[float]]:
        """Every worker's ``values`` (a few floats), in rank order."""
        return [wire.decode_sums(m) for m in self.side(wire.encode_sums(values))]


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
    payload_per_exchange: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    workers: list[dict] = field(default_factory=list)  # what each rank said at the rendezvous
    replica_checks: int = 0  # replica checksum comparisons made (see verify_interval)
    resyncs: int = 0  # replica checksum mismatches repaired from rank 0
    resumed_from_step: int = 0  # the checkpoint's step this attempt started from
    checkpoints: int = 0  # checkpoints this attempt wrote
    rebuilds: int = 0  # broadcast mode: replicas rebuilt from the checkpoint and the log
    stop_reason: str = "maxIter"  # "validation", "holdout", "tol" or "maxIter"
    validation_history: list[float] = field(default_factory=list)  # held-out loss per epoch
    validation_accuracy: list[float] = field(default_factory=list)  # and held-out accuracy
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
EXCHANGE_COUNTERS = (
    "payload_sent",
    "framing_sent",
    "payload_received",
    "framing_received",
    "sent_per_exchange",
    "payload_per_exchange",
)


def result_of(solver: Solver, exchanges: int = 0, exchange: Exchange | None = None, **record):
    """What a worker ends with, from its solver (once it is done) and, when given, its
    exchange's byte counters; ``record`` fills the remaining fields."""
    outcome = solver.outcome()
    counters = {} if exchange is None else {c: getattr(exchange, c) for c in EXCHANGE_COUNTERS}
    return TrainingResult(
        W=outcome.W,
        b=outcome.b,
        objective_history=solver.history,
        steps=solver.step,
        converged=outcome.stop_reason != "maxIter",
        stop_reason=outcome.stop_reason,
        validation_history=solver.validation_history,
        validation_accuracy=solver.validation_accuracy,
        best_epoch=outcome.best_epoch,
        exchanges=exchanges,
        **counters,
        **record,
    )


def round_message(solver: Solver, data: LocalPartition, seconds: dict | None = None):
    """This worker's half of a round: its message, computed and encoded (``seconds`` adds up
    the phases' times)."""
    t0 = time.perf_counter()
    message = solver.compute(data)
    t1 = time.perf_counter()
    batch = solver.encode(message)
    if seconds is not None:
        seconds["compute"] += t1 - t0
        seconds["encode"] += time.perf_counter() - t1
    return batch


def apply_round(solver: Solver, received: list, rounds, seconds: dict | None = None) -> None:
    """The other half: every worker's message of the round (rank order) decoded and applied;
    ``rounds`` carries the side exchanges the solver makes (see :class:`Rounds`)."""
    t0 = time.perf_counter()
    messages = [solver.decode(m) for m in received]
    t1 = time.perf_counter()
    solver.apply(messages, rounds)
    if seconds is not None:
        seconds["decode"] += t1 - t0
        seconds["apply"] += time.perf_counter() - t1


def train(
    data: LocalPartition,
    exchange: Exchange,
    solver: Solver,
    on_exchange: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    store=None,
) -> TrainingResult:
    """Run ``solver`` on this worker's ``data`` over ``exchange`` until it is done; every
    worker calls this with its own data and a solver made alike (restored from the same
    checkpoint when resuming).

    ``on_exchange(step, W, b)`` sees the weights after every exchange and ``on_epoch(epoch,
    objective)`` every epoch (L-BFGS: iteration). With a checkpoint ``store`` (see
    :class:`svb_spark.spark.checkpoint.CheckpointStore`), the solver writes its checkpoints
    every ``config.checkpoint_interval`` epochs.
    """
    config = solver.config
    rounds = Rounds(exchange)
    resumed_from = solver.step
    seconds = dict.fromkeys(ROUND_PHASES, 0.0)
    checks = resyncs = checkpoints = 0
    while not solver.done:
        batch = round_message(solver, data, seconds)
        t0 = time.perf_counter()
        received = rounds.gather(batch)
        seconds["exchange"] += time.perf_counter() - t0
        epochs = len(solver.history)
        apply_round(solver, received, rounds, seconds)
        if on_exchange is not None:
            on_exchange(solver.step, *solver.current())
        replica = solver.replica_weights()
        if replica is not None and config.verify_interval:
            if rounds.count % config.verify_interval == 0:
                resyncs += verify_replicas(replica, rounds, checks)
                checks += 1
        if on_epoch is not None:
            for epoch in range(epochs, len(solver.history)):
                on_epoch(epoch, solver.history[epoch])
        if store is not None and solver.checkpoint_due(epochs):
            checkpoints += solver.save(store, data)
    return result_of(
        solver, rounds.count, exchange, seconds=seconds, resyncs=resyncs, replica_checks=checks,
        resumed_from_step=resumed_from, checkpoints=checkpoints,
    )  # fmt: skip


def verify_replicas(weights, rounds: Rounds, check: int) -> int:
    """Compare replica checksums; on a mismatch every worker takes rank 0's replica.

    Replicas stay equal by construction, unless something outside the algorithm differs
    (a different BLAS on heterogeneous executors, a bit flip). Check number ``check`` (the
    same on every worker) hashes one block of the replica (see ReplicaWeights.digest), so a
    check costs a few milliseconds at any K x D and a difference anywhere is found within
    ``weights.digest_blocks()`` checks. Costs one small exchange, plus one K x D broadcast
    from rank 0 when a mismatch is found. Returns 1 after a resync.
    """
    message = wire.encode_checksum(weights.digest(check))
    digests = [wire.decode_checksum(m) for m in rounds.side(message)]
    if len(set(digests)) == 1:
        return 0
    flat = weights.flat() if rounds.rank == 0 else weights.b[:0]
    received = rounds.side(wire.encode_state(flat, weights.factor))
    if rounds.rank != 0:
        weights.load_flat(*wire.decode_state(received[0]))
    return 1
