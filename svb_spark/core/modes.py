"""The exchange modes: one class each, in one registry, as the solvers are.

A mode owns what differs between them: the kind of message a step sends (sufficient vectors,
a gradient, or a class-sharded step's rows and normalizers), the bytes and seconds the cost
model predicts for a step, the largest message a peer may send, what it refuses, and how it
runs (one barrier stage whose workers meet over a mesh, or rounds the driver runs with
Spark's broadcasts). ``exchange="auto"`` chooses among them (see
:mod:`svb_spark.core.solvers.auto`); the param's values come from :data:`MODES`.
"""

from __future__ import annotations

from typing import ClassVar

from svb_spark.core import cost, wire


class ExchangeMode:
    """One way the workers' steps meet. Subclasses set the class attributes and the step's
    bytes and work; every method is a class method (a mode has no state)."""

    name: ClassVar[str]
    message_kind: ClassVar[str] = wire.SV  # what a step sends (see svb_spark.core.wire)
    # "barrier": one barrier stage, the loop on the workers over a mesh; "rounds": the driver
    # runs one job per exchange and publishes the messages (svb_spark.spark.broadcast).
    runner: ClassVar[str] = "barrier"
    replicated: ClassVar[bool] = True  # every worker holds the whole model
    sends_gradients: ClassVar[bool] = False  # a step's K x (D + 1) gradient, not its rows
    # The solvers it trains (None: every solver), and why only those.
    solvers: ClassVar[tuple[str, ...] | None] = None
    solvers_because: ClassVar[str] = ""
    # What a step costs beyond its arithmetic and bytes (see predicted_step_seconds below).
    step_overhead_seconds: ClassVar[float] = 0.0

    @classmethod
    def scores_held_out(cls) -> bool:
        """Whether held-out rows can judge the stop: the loop must run on the workers."""
        return cls.runner == "barrier"

    @classmethod
    def bytes_per_step(cls, P, B, K, D, itemsize, nonzeros_per_row=None) -> float:
        """Payload bytes one worker sends per step."""
        raise NotImplementedError

    @classmethod
    def step_work(cls, P, B, K, D, F) -> tuple[float, float]:
        """A worker's (GEMM flops, streamed elements) per step; ``F`` is nnz or D."""
        raise NotImplementedError

    @classmethod
    def max_message_bytes(cls, config) -> int:
        """The largest payload a peer's message can have in a minibatch fit of ``config`` (a
        :class:`~svb_spark.core.config.TrainingConfig`): ``syncInterval`` steps' messages,
        or rank 0's replica on a resynchronisation; anything bigger is refused."""
        size = cost.itemsize(config.dtype)
        K, D = config.num_classes, config.num_features
        largest = config.sync_interval * cls._step_message_bytes(config, K, D, size)
        if config.verify_interval:  # rank 0's replica, on a resync
            largest = max(largest, cost.dense_gradient_bytes(K, D, size))
        return int(largest) + (1 << 16)  # slack for Arrow's buffer padding

    @classmethod
    def _step_message_bytes(cls, config, K, D, size) -> float:
        """B rows of sufficient vectors, every feature counted as present in a CSR row, plus
        8 bytes a row of Arrow list offsets."""
        row = cost.sufficient_vector_row_bytes(K, D, size, D if config.sparse else None)
        return config.batch_size * (row + 8)

    @classmethod
    def why_not(cls, facts) -> str | None:
        """Why this mode cannot train a fit with ``facts`` (a FitFacts), or None."""
        if facts.validation and not cls.scores_held_out():
            return "validationIndicatorCol is set; its rounds do not score held-out rows"
        return None

    @classmethod
    def why_not_solver(cls, solver: str) -> str | None:
        """Why this mode cannot train ``solver``, or None."""
        if cls.solvers is None or solver in cls.solvers:
            return None
        names = " or ".join(name.upper() for name in cls.solvers)
        return f"exchange='{cls.name}' trains with {names} only: {cls.solvers_because}"


class PeerToPeer(ExchangeMode):
    """Sufficient vectors over a mesh: (P - 1) B rows of U and V to every peer."""

    name = "p2p"

    @classmethod
    def bytes_per_step(cls, P, B, K, D, itemsize, nonzeros_per_row=None) -> float:
        return float(
            (P - 1) * B * cost.sufficient_vector_row_bytes(K, D, itemsize, nonzeros_per_row)
        )

    @classmethod
    def step_work(cls, P, B, K, D, F) -> tuple[float, float]:
        # Score the worker's B rows (2 B K F) and apply all P B rows (2 P B K F) after stacking
        # them (P B (K + F) elements).
        return 2 * B * K * F * (1 + P), P * B * (K + F)


class DenseGradients(ExchangeMode):
    """The baseline the paper compares against: the same SGD, but workers exchange the
    K x (D + 1) gradient, (P - 1) K (D + 1) floats to every peer."""

    name = "dense"
    message_kind = wire.DENSE
    sends_gradients = True

    @classmethod
    def bytes_per_step(cls, P, B, K, D, itemsize, nonzeros_per_row=None) -> float:
        return (P - 1) * cost.dense_gradient_bytes(K, D, itemsize)

    @classmethod
    def step_work(cls, P, B, K, D, F) -> tuple[float, float]:
        # Score and form the gradient (4 B K F), then sum P gradients and apply them
        # ((P + 2) K D elements: memory-bound, where small K loses nothing to it).
        return 4 * B * K * F, (P + 2) * K * D

    @classmethod
    def _step_message_bytes(cls, config, K, D, size) -> float:
        return cost.dense_gradient_bytes(K, D, size)


class Broadcast(PeerToPeer):
    """Spark-native: the same sufficient vectors, sent once to the driver, which publishes
    every round's with TorrentBroadcast; classic mode only (it needs a SparkContext)."""

    name = "broadcast"
    runner = "rounds"
    solvers = ("sgd",)
    solvers_because = (
        "a task rebuilds a lost replica from the broadcast steps, which carry no optimizer "
        "state beyond SGD's (SAGA's per-row memory, averaged SGD's mean of the iterates, "
        "L-BFGS's full passes)"
    )

    @classmethod
    def bytes_per_step(cls, P, B, K, D, itemsize, nonzeros_per_row=None) -> float:
        return float(B * cost.sufficient_vector_row_bytes(K, D, itemsize, nonzeros_per_row))


class ClassSharded(ExchangeMode):
    """Each worker owns a block of classes (see :mod:`svb_spark.core.solvers.sharded`):
    (P - 1) times B rows with their labels and weights, and 2 normalizers for each of the
    P B rows of the step before; no K term."""

    name = "sharded"
    message_kind = wire.SHARDED
    replicated = False
    solvers = ("sgd",)
    solvers_because = (
        "each worker updates only its block of classes, and SAGA's memory, averaged SGD's "
        "mean of the iterates and L-BFGS's full passes are not split by class"
    )
    # The sharded step stacks every worker's rows and combines the blocks' normalizers
    # (benchmarks.exchange measured about 0.4 ms more than p2p's step at K = 60, D = 300,
    # B = 8, where the arithmetic is negligible).
    step_overhead_seconds = 0.4e-3

    @classmethod
    def bytes_per_step(cls, P, B, K, D, itemsize, nonzeros_per_row=None) -> float:
        rows = B * cost.sharded_row_bytes(D, itemsize, nonzeros_per_row)
        return float((P - 1) * (rows + 2 * P * B * itemsize))

    @classmethod
    def step_work(cls, P, B, K, D, F) -> tuple[float, float]:
        # Score and update P B rows for K / P classes (4 B K F), stacking the rows and the
        # block's scores (P B F + 2 B K elements).
        return 4 * B * K * F, P * B * F + 2 * B * K

    @classmethod
    def max_message_bytes(cls, config) -> int:
        # B rows (every feature counted as present in a CSR row) and the normalizers of the
        # P B rows of the step before, which any number of workers up to K could send; or
        # the held-out verdicts of up to K B rows, five float64 each (see ShardedSolver).
        size, K, D = cost.itemsize(config.dtype), config.num_classes, config.num_features
        row = cost.sharded_row_bytes(D, size, D if config.sparse else None)
        return int(config.batch_size * (row + 8 + 5 * K * 8)) + (1 << 16)

    @classmethod
    def why_not(cls, facts) -> str | None:
        if facts.num_classes < facts.num_workers:
            return (
                f"the class-sharded mode needs at least one class per worker, but there are "
                f"{facts.num_classes} classes and {facts.num_workers} workers"
            )
        if facts.sync_interval != 1:
            return f"syncInterval is {facts.sync_interval}; its steps are exact synchronous SGD"
        return super().why_not(facts)


# The modes by the name the ``exchange`` param gives them.
MODES: dict[str, type[ExchangeMode]] = {
    cls.name: cls for cls in (PeerToPeer, DenseGradients, Broadcast, ClassSharded)
}


def predicted_bytes_per_step(mode: str, num_workers, batch_size, num_classes, num_features,
                             itemsize, nonzeros_per_row=None) -> float:  # fmt: skip
    """Payload bytes one worker sends per step in ``mode``; ``nonzeros_per_row`` (the
    measured average) selects the CSR size of V."""
    return MODES[mode].bytes_per_step(
        num_workers, batch_size, num_classes, num_features, itemsize, nonzeros_per_row
    )


def predicted_step_seconds(mode: str, num_workers, batch_size, num_classes, num_features,
                           itemsize, nonzeros_per_row=None) -> float:  # fmt: skip
    """A worker's time for one step in ``mode``: GEMM flops, streamed elements and bytes
    sent, at the rates of :mod:`svb_spark.core.cost`, plus the mode's overhead; the latency
    of one exchange per step is the same in every mode and left out.

    With sparse rows the products are no GEMM: each multiply-add of a row's non-zero reads
    (scoring) or updates (applying) one element of a K-wide replica row, so their flops count
    as streamed elements, one per multiply-add. Measured at K = 1,000 on two workers, a
    sparse step's scoring and apply took about 1 ns an element, not a GEMM's 0.03.
    """
    P, B, K, D = num_workers, batch_size, num_classes, num_features
    F = D if nonzeros_per_row is None else nonzeros_per_row
    flops, elements = MODES[mode].step_work(P, B, K, D, F)
    if nonzeros_per_row is not None:
        flops, elements = 0.0, elements + flops / 2
    sent = predicted_bytes_per_step(mode, P, B, K, D, itemsize, nonzeros_per_row)
    return cost.step_seconds(flops, elements, sent, itemsize) + MODES[mode].step_overhead_seconds


def choose_exchange(candidates=("p2p", "dense"), **shape) -> tuple[str, dict, dict]:
    """The mode among ``candidates`` with the fastest predicted step, and every mode's
    predicted bytes and seconds per step.

    ``shape`` holds the keyword arguments of :func:`predicted_bytes_per_step` but ``mode``.
    Ties go to p2p, then to the mode that sends fewer bytes.
    """
    sent = {mode: predicted_bytes_per_step(mode, **shape) for mode in MODES}
    seconds = {mode: predicted_step_seconds(mode, **shape) for mode in MODES}
    fastest = min(candidates, key=lambda mode: (seconds[mode], mode != PeerToPeer.name, sent[mode]))
    return fastest, sent, seconds
