"""An alpha-beta-gamma cost model of one training step, calibrated from one benchmark run.

Pure arithmetic on the library's byte formulas (:mod:`svb_spark.core.cost`); :mod:`benchmarks.micro`
measures the rates. Per worker and step: P workers, batch B, K classes, D features (n non-zeros
per CSR row, which replace D where the work follows the non-zeros), sgemm rate R (S for
CSR-times-dense), e seconds per streamed element, latency alpha, beta seconds per byte, and
fixed costs o_* that the loop pays on a problem too small to cost anything else. SVB's rebuild
accumulates into W in place (no K x D pass); the dense baseline sums P gradients (P + 2 passes).
More workers than cores stretch every phase by P / cores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from svb_spark.core.cost import (
    dense_gradient_bytes,
    itemsize,
    predicted_bytes_per_step,
    sufficient_vector_row_bytes,
)
from svb_spark.core.training import ROUND_PHASES

ITEMSIZE = itemsize("float32")  # the library's default dtype
DOUBLE = itemsize("float64")  # MLlib's gradient
GBIT = 1e9 / 8  # bytes per second of one Gbit/s


@dataclass(frozen=True)
class Calibration:
    """Primitive costs measured in one run (seconds, bytes, flop/s, one core each)."""

    gemm_flops: float  # sgemm at large shapes
    elementwise_s: float  # per float32 element of exp, axpy, copy
    overhead_s: dict  # fixed cost per step of compute, encode, apply (tiny problem)
    codec_s_per_byte: float  # encoding an Arrow message
    decode_s: float  # decoding one message (zero-copy: a fixed cost)
    latency_s: float  # alpha: a tiny exchange between two processes, waiting included
    loopback_s_per_byte: float  # beta on loopback: software and copies, no link
    spark_job_s: float  # one trivial Spark job (an MLlib iteration pays at least one)
    jvm_gemm_flops: float  # MLlib's dgemm
    cores: int  # cores the workers share
    # For CSR rows; results written before they existed lack them (the dense figures stand in).
    sparse_flops: float | None = None  # CSR-times-dense product (scipy)
    sparse_overhead_s: dict | None = None  # overhead_s and decode on CSR rows

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Calibration:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})

    @property
    def sparse_rate(self) -> float:
        return self.sparse_flops or self.gemm_flops

    def beta(self, gbit_per_s: float | None) -> float:
        """Seconds per byte sent: loopback's software and copies, plus a link of ``gbit_per_s``
        (None: loopback only)."""
        return self.loopback_s_per_byte + (0.0 if gbit_per_s is None else 1 / (gbit_per_s * GBIT))

    def stretch(self, workers: int) -> float:
        """How much longer every phase takes when ``workers`` share this machine's cores."""
        return max(1.0, workers / max(self.cores, 1))

    def overheads(self, shape: Shape) -> tuple[dict, float]:
        """Fixed costs per phase, and per decoded message, for the shape's kind of rows."""
        if shape.nonzeros is not None and self.sparse_overhead_s:
            return self.sparse_overhead_s, self.sparse_overhead_s["decode"]
        return self.overhead_s, self.decode_s


@dataclass(frozen=True)
class Shape:
    """A problem and the per-worker batch size; ``nonzeros`` per CSR row (None: dense rows)."""

    rows: int
    num_classes: int
    num_features: int
    batch_size: int = 32
    nonzeros: float | None = None

    def steps_per_epoch(self, workers: int) -> int:
        return max(1, math.ceil(self.rows / (workers * self.batch_size)))


def _with_step(phases: dict[str, float], stretch: float) -> dict[str, float]:
    phases = {p: stretch * phases[p] for p in ROUND_PHASES}
    phases["step"] = sum(phases.values())
    return phases


def bytes_per_step(mode: str, shape: Shape, workers: int) -> float:
    """Payload bytes one worker sends per step in the library's exchange ``mode``."""
    K, D, B, n = shape.num_classes, shape.num_features, shape.batch_size, shape.nonzeros
    return predicted_bytes_per_step(mode, workers, B, K, D, ITEMSIZE, n)


def ring_bytes_per_step(shape: Shape, workers: int) -> float:
    """A bandwidth-optimal ring allreduce of the gradient: 2 (P - 1) / P gradients."""
    gradient = dense_gradient_bytes(shape.num_classes, shape.num_features, ITEMSIZE)
    return 2 * (workers - 1) / workers * gradient


def svb_step(
    calibration: Calibration, shape: Shape, workers: int, gbit_per_s: float | None = None
) -> dict[str, float]:
    """Predicted seconds of each of ``ROUND_PHASES`` and their sum ``"step"`` of one SVB (p2p)
    step on one worker; ``gbit_per_s`` None predicts this machine's loopback."""
    c, B, K, D, P = calibration, shape.batch_size, shape.num_classes, shape.num_features, workers
    m = B * sufficient_vector_row_bytes(K, D, ITEMSIZE, shape.nonzeros)  # one message
    beta = c.beta(gbit_per_s)
    (o, decode), e = c.overheads(shape), c.elementwise_s
    if shape.nonzeros is None:  # forward, softmax, gather; rebuild GEMM into W (beta = 1)
        compute = 2 * B * K * D / c.gemm_flops + (4 * B * K + B * D) * e
        apply = 2 * P * B * K * D / c.gemm_flops + P * B * (K + D) * e
    else:  # gather the batch's W columns; V^T U scattered into W's columns
        n = shape.nonzeros
        compute = 2 * B * n * K / c.sparse_rate + (B * n * K + 4 * B * K) * e
        apply = 2 * P * B * n * K / c.sparse_rate + (2 * P * B * n * K + P * B * K) * e
    phases = {
        "compute": o["compute"] + compute,
        "encode": o["encode"] + c.codec_s_per_byte * m,
        "exchange": 0.0 if P == 1 else c.latency_s + (P - 1) * m * beta,
        "decode": decode * P,
        "apply": o["apply"] + apply,
    }
    return _with_step(phases, c.stretch(P))


def dense_step(
    calibration: Calibration,
    shape: Shape,
    workers: int,
    gbit_per_s: float | None = None,
    ring: bool = False,
) -> dict[str, float]:
    """:func:`svb_step` for the dense baseline: each worker forms its K x (D + 1) gradient (an
    extra GEMM) and sends it to every peer (``exchange="dense"``) or, ``ring``, through a ring
    allreduce (:func:`ring_bytes_per_step`, 2 (P - 1) latencies)."""
    c, B, K, D, P = calibration, shape.batch_size, shape.num_classes, shape.num_features, workers
    m = dense_gradient_bytes(K, D, ITEMSIZE)
    beta = c.beta(gbit_per_s)
    if ring:
        exchange = 2 * (P - 1) * c.latency_s + ring_bytes_per_step(shape, P) * beta
    else:
        exchange = c.latency_s + (P - 1) * m * beta
    # Only computing the gradient follows the rows' kind; the message and its use are dense.
    o, e = c.overhead_s, c.elementwise_s
    if shape.nonzeros is None:
        compute = 4 * B * K * D / c.gemm_flops + (4 * B * K + B * D + 2 * K * D) * e
    else:
        # Forward and X^T U are sparse products; the gradient is then a dense K x (D + 1).
        n = shape.nonzeros
        compute = 4 * B * n * K / c.sparse_rate + (B * n * K + 4 * B * K + 2 * K * D) * e
    phases = {
        "compute": c.overheads(shape)[0]["compute"] + compute,
        "encode": o["encode"] + c.codec_s_per_byte * m,
        "exchange": exchange if P > 1 else 0.0,
        "decode": c.decode_s * P,
        "apply": o["apply"] + (P + 2) * K * D * e,
    }
    return _with_step(phases, c.stretch(P))


def tree_aggregate_iteration(
    calibration: Calibration, shape: Shape, workers: int, gbit_per_s: float | None = None
) -> dict[str, float]:
    """Predicted ``compute``, ``exchange``, ``job`` and ``step`` seconds of one MLlib-style
    iteration: each worker's double-precision gradient of its N / P rows at the JVM's dgemm
    rate, a depth-2 ``treeAggregate`` through ceil(sqrt(P)) reducers, the weights' broadcast
    (one copy per receiver, pipelined) and at least one Spark job."""
    c, K, D, P = calibration, shape.num_classes, shape.num_features, workers
    g = dense_gradient_bytes(K, D, DOUBLE)
    beta = c.beta(gbit_per_s)
    scale = max(math.ceil(math.sqrt(P)), 2)
    fan_in = P if P <= scale else max(scale, math.ceil(P / scale))
    rows = math.ceil(shape.rows / P)
    width = D if shape.nonzeros is None else shape.nonzeros
    phases = {
        "compute": c.stretch(P) * 4 * rows * K * width / c.jvm_gemm_flops,
        "exchange": (fan_in + 1) * g * beta,
        "job": c.spark_job_s,
    }
    phases["step"] = sum(phases.values())
    return phases


def tree_aggregate_bytes(shape: Shape, workers: int) -> float:
    """Bytes one worker sends per MLlib iteration: its double-precision gradient, once."""
    gradient = dense_gradient_bytes(shape.num_classes, shape.num_features, DOUBLE)
    return gradient if workers > 1 else 0.0


METHODS = ("svb", "dense", "dense-ring", "treeAggregate")


def project(
    calibration: Calibration, shape: Shape, workers: list[int], bandwidths: list[float]
) -> list[dict]:
    """One row per (method, workers, gbit_per_s): ``step_s`` (an SGD step or an MLlib
    iteration), ``epoch_s`` (one pass over the rows) and ``epoch_bytes`` sent per worker."""
    # A projected worker has a core of its own: no stretching for this machine's cores.
    c = replace(calibration, cores=max(workers))
    rows = []
    for gbit in bandwidths:
        for P in workers:
            steps = shape.steps_per_epoch(P)
            # Per method: one step (or iteration), how many make an epoch, bytes per step.
            methods = {
                "svb": (svb_step(c, shape, P, gbit), steps, bytes_per_step("p2p", shape, P)),
                "dense": (dense_step(c, shape, P, gbit), steps, bytes_per_step("dense", shape, P)),
                "dense-ring": (dense_step(c, shape, P, gbit, ring=True), steps,
                               ring_bytes_per_step(shape, P)),
                "treeAggregate": (tree_aggregate_iteration(c, shape, P, gbit), 1,
                                  tree_aggregate_bytes(shape, P)),
            }  # fmt: skip
            for method, (step, count, sent) in methods.items():
                rows.append({"method": method, "workers": P, "gbit_per_s": gbit,
                             "step_s": step["step"], "epoch_s": step["step"] * count,
                             "epoch_bytes": sent * count})  # fmt: skip
    return rows


def relative_error(predicted: float, measured: float) -> float:
    """|predicted - measured| / measured (inf when nothing was measured)."""
    return abs(predicted - measured) / measured if measured > 0 else math.inf


def gemm_lower_bound_s(shape: Shape, workers: int, gemm_flops: float) -> float:
    """Seconds per epoch of one worker's forward (2 B K D) and rebuild (2 P B K D) flops alone;
    n replaces D for CSR rows."""
    B, K = shape.batch_size, shape.num_classes
    D = shape.num_features if shape.nonzeros is None else shape.nonzeros
    flops = (2 * B * K * D + 2 * workers * B * K * D) * shape.steps_per_epoch(workers)
    return flops / gemm_flops
