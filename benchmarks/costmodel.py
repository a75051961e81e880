"""An alpha-beta-gamma cost model of one training step, calibrated from one benchmark run.

Pure arithmetic on the library's own byte formulas (:mod:`svb_spark.cost`), no timing:
:mod:`benchmarks.micro` measures the primitive rates (:class:`Calibration`); this module turns
them into per-phase step times for SVB (sufficient vectors over a mesh), the dense baseline
(the K x (D + 1) gradient over the same mesh, as ``exchange="dense"`` implements it, and as a
ring allreduce would) and an MLlib-style iteration (a full pass, one ``treeAggregate`` of the
double-precision gradient, one broadcast of the weights, one Spark job).

The model, per worker and step, with P workers, local batch B, K classes, D features, 4-byte
floats, a sgemm rate R, a per-element cost e of streaming numpy work, latency alpha and a cost
per byte beta (software + link)::

    compute  = o_c + 2 B K D / R + (4 B K + B D) e          forward, softmax, batch gather
    encode   = o_e + c m                                    m = B (K + D) 4 bytes
    exchange = alpha + (P - 1) m beta                       (0 when P = 1)
    decode   = d P                                          zero-copy: a fixed cost per message
    apply    = o_a + 2 P B K D / R + P B (K + D) e          concat, rebuild GEMM into W (beta=1)

The fixed costs o_* are what the training loop itself pays per step on a problem too small to
cost anything else (K = D = 4, one worker); alpha is the exchange of that loop between two
worker processes over Flight. The rebuild GEMM accumulates into W in place, so SVB's apply has
no K x D pass; the dense baseline sums P gradients and applies them (P + 2 passes over K x D).
When more workers than cores share the machine, every phase stretches by P / cores: a worker
waiting for a peer gives its core to the peer.

Sparse rows (CSR, n non-zeros per row on average; the library keeps them sparse end to end)
replace D by n where the work follows the non-zeros, at the rate S of a CSR-times-dense product
(not a GEMM), and V travels as n values, n int32 indices and one offset per row::

    compute  = o_c + 2 B n K / S + (B n K + 4 B K) e        gather the batch's W columns, softmax
    encode   = o_e + c m                                    m = B (4 K + 8 n + 4) bytes
    apply    = o_a + 2 P B n K / S + (2 P B n K + P B K) e  V^T U, scatter into W's columns

The dense baseline on sparse rows forms ``X^T U`` sparsely and then ships and sums the whole
K x (D + 1) gradient, so its K x D terms stay.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from svb_spark.cost import (
    dense_gradient_bytes,
    itemsize,
    predicted_bytes_per_step,
    sufficient_vector_row_bytes,
)
from svb_spark.training import ROUND_PHASES

ITEMSIZE = itemsize("float32")  # the library's default dtype
DOUBLE = itemsize("float64")  # MLlib's gradient
GBIT = 1e9 / 8  # bytes per second of one Gbit/s


@dataclass(frozen=True)
class Calibration:
    """Primitive costs measured in one run (seconds, bytes, flop/s).

    Attributes
    ----------
    gemm_flops : float
        Single-core sgemm rate at large shapes (flop/s).
    elementwise_s : float
        Seconds per float32 element of a streaming numpy operation (exp, axpy, copy).
    overhead_s : dict
        Fixed cost per step of the compute, encode and apply phases of the training loop
        (slicing, bookkeeping, Arrow schema work), measured on a tiny problem.
    codec_s_per_byte : float
        Encoding an Arrow message, per byte.
    decode_s : float
        Decoding one received message (zero-copy, so a fixed cost).
    latency_s : float
        alpha: one exchange of a tiny payload between two worker processes, as the training
        loop sees it (waiting for the peer included).
    loopback_s_per_byte : float
        beta on loopback: the transport's software and copy cost per byte, no link.
    spark_job_s : float
        One trivial Spark job (what an MLlib iteration pays at least once).
    jvm_gemm_flops : float
        The JVM's dgemm rate through MLlib's BLAS (flop/s, one core).
    cores : int
        Cores the workers share.
    sparse_flops : float, optional
        Rate of a CSR-times-dense product (scipy, one core), for sparse workloads; results
        written before it existed lack it, and the sgemm rate stands in.
    sparse_overhead_s : dict, optional
        ``overhead_s`` (and ``decode``) of the training loop on CSR rows, which pays scipy's
        per-call costs; the dense figures stand in when it is missing.
    """

    gemm_flops: float
    elementwise_s: float
    overhead_s: dict
    codec_s_per_byte: float
    decode_s: float
    latency_s: float
    loopback_s_per_byte: float
    spark_job_s: float
    jvm_gemm_flops: float
    cores: int
    sparse_flops: float | None = None
    sparse_overhead_s: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Calibration:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})

    @property
    def sparse_rate(self) -> float:
        """flop/s of CSR-times-dense products (the sgemm rate when not measured)."""
        return self.sparse_flops or self.gemm_flops

    def overheads(self, shape: Shape) -> tuple[dict, float]:
        """Fixed costs per phase, and per decoded message, for the shape's kind of rows."""
        if shape.nonzeros is not None and self.sparse_overhead_s:
            return self.sparse_overhead_s, self.sparse_overhead_s["decode"]
        return self.overhead_s, self.decode_s


@dataclass(frozen=True)
class Shape:
    """A problem: rows, classes, features, the per-worker batch size and, for CSR rows, the
    average non-zeros per row (None: dense rows)."""

    rows: int
    num_classes: int
    num_features: int
    batch_size: int = 32
    nonzeros: float | None = None

    def steps_per_epoch(self, workers: int) -> int:
        """SGD steps for every worker to see its share of the rows once."""
        return max(1, math.ceil(self.rows / (workers * self.batch_size)))


def link_s_per_byte(gbit_per_s: float | None) -> float:
    """Seconds per byte of a network link; None means loopback (no link term)."""
    return 0.0 if gbit_per_s is None else 1.0 / (gbit_per_s * GBIT)


def _stretch(calibration: Calibration, workers: int) -> float:
    return max(1.0, workers / max(calibration.cores, 1))


def svb_message_bytes(shape: Shape) -> float:
    """Payload bytes of one worker's sufficient vectors for one step (the library's formula)."""
    K, D, n = shape.num_classes, shape.num_features, shape.nonzeros
    return shape.batch_size * sufficient_vector_row_bytes(K, D, ITEMSIZE, n)


def mesh_bytes_per_step(mode: str, shape: Shape, workers: int) -> float:
    """Payload bytes one worker sends per step in ``mode`` ("p2p" or "dense") over the mesh."""
    K, D, B, n = shape.num_classes, shape.num_features, shape.batch_size, shape.nonzeros
    return predicted_bytes_per_step(mode, workers, B, K, D, ITEMSIZE, n)


def svb_step(
    calibration: Calibration, shape: Shape, workers: int, gbit_per_s: float | None = None
) -> dict[str, float]:
    """Predicted seconds per phase of one SVB (p2p) step on one worker.

    Parameters
    ----------
    calibration : Calibration
        Rates measured in this run.
    shape : Shape
        The problem and per-worker batch size.
    workers : int
        P, the number of workers (each on its own core unless P exceeds ``calibration.cores``).
    gbit_per_s : float or None
        Link bandwidth; None predicts the loopback runs of this machine.

    Returns
    -------
    dict
        Seconds for each of ``ROUND_PHASES``, plus ``"step"``, their sum.
    """
    c, B, K, D, P = calibration, shape.batch_size, shape.num_classes, shape.num_features, workers
    m = svb_message_bytes(shape)
    beta = c.loopback_s_per_byte + link_s_per_byte(gbit_per_s)
    (o, decode), e = c.overheads(shape), c.elementwise_s
    if shape.nonzeros is None:
        compute = 2 * B * K * D / c.gemm_flops + (4 * B * K + B * D) * e
        apply = 2 * P * B * K * D / c.gemm_flops + P * B * (K + D) * e
    else:
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
    return _with_step(phases, _stretch(c, P))


def _with_step(phases: dict[str, float], stretch: float) -> dict[str, float]:
    phases = {p: stretch * phases[p] for p in ROUND_PHASES}
    phases["step"] = sum(phases.values())
    return phases


def dense_step(
    calibration: Calibration,
    shape: Shape,
    workers: int,
    gbit_per_s: float | None = None,
    ring: bool = False,
) -> dict[str, float]:
    """Predicted seconds per phase of one dense-gradient step on one worker.

    The same SGD step as :func:`svb_step`, but each worker forms its K x (D + 1) gradient
    (``U^T X``, an extra local GEMM) and ships it. ``ring=False`` models the library's
    ``exchange="dense"``: every worker sends its gradient to every peer and sums P of them.
    ``ring=True`` models a bandwidth-optimal ring allreduce: 2 (P - 1) / P gradients sent, and
    2 (P - 1) latencies.
    """
    c, B, K, D, P = calibration, shape.batch_size, shape.num_classes, shape.num_features, workers
    m = dense_gradient_bytes(K, D, ITEMSIZE)
    beta = c.loopback_s_per_byte + link_s_per_byte(gbit_per_s)
    if P == 1:
        exchange = 0.0
    elif ring:
        exchange = 2 * (P - 1) * c.latency_s + 2 * (P - 1) / P * m * beta
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
        "exchange": exchange,
        "decode": c.decode_s * P,
        "apply": o["apply"] + (P + 2) * K * D * e,
    }
    return _with_step(phases, _stretch(c, P))


def tree_aggregate_iteration(
    calibration: Calibration, shape: Shape, workers: int, gbit_per_s: float | None = None
) -> dict[str, float]:
    """Predicted seconds of one MLlib-style iteration (one pass over all rows).

    Every worker computes the full gradient of its rows in double precision (forward and
    gradient GEMMs, ``4 (N / P) K D`` flops, or ``4 (N / P) K n`` for CSR rows, at the JVM's
    dgemm rate); ``treeAggregate`` with
    depth 2 sums the K x (D + 1) doubles through ``ceil(sqrt(P))`` reducers, so the busiest
    receiver takes ``max(scale, P / scale)`` gradients; the driver broadcasts the new weights
    (one copy per receiver, pipelined), and the iteration pays at least one Spark job.

    Returns
    -------
    dict
        ``compute``, ``exchange``, ``job`` and ``step`` (seconds per iteration).
    """
    c, K, D, P = calibration, shape.num_classes, shape.num_features, workers
    g = dense_gradient_bytes(K, D, DOUBLE)
    beta = c.loopback_s_per_byte + link_s_per_byte(gbit_per_s)
    scale = max(math.ceil(math.sqrt(P)), 2)
    fan_in = P if P <= scale else max(scale, math.ceil(P / scale))
    rows = math.ceil(shape.rows / P)
    width = D if shape.nonzeros is None else shape.nonzeros
    phases = {
        "compute": _stretch(c, P) * 4 * rows * K * width / c.jvm_gemm_flops,
        "exchange": (fan_in + 1) * g * beta,
        "job": c.spark_job_s,
    }
    phases["step"] = sum(phases.values())
    return phases


def svb_epoch_bytes(shape: Shape, workers: int) -> float:
    """Payload bytes one worker sends per epoch with sufficient vectors."""
    return shape.steps_per_epoch(workers) * mesh_bytes_per_step("p2p", shape, workers)


def dense_epoch_bytes(shape: Shape, workers: int, ring: bool = False) -> float:
    """Payload bytes one worker sends per epoch with dense gradients (mesh or ring)."""
    if ring:  # 2 (P - 1) / P gradients
        gradient = dense_gradient_bytes(shape.num_classes, shape.num_features, ITEMSIZE)
        per_step = 2 * (workers - 1) / workers * gradient
    else:
        per_step = mesh_bytes_per_step("dense", shape, workers)
    return shape.steps_per_epoch(workers) * per_step


def tree_aggregate_epoch_bytes(shape: Shape, workers: int) -> float:
    """Bytes one worker sends per MLlib iteration: its double-precision gradient, once."""
    gradient = dense_gradient_bytes(shape.num_classes, shape.num_features, DOUBLE)
    return gradient if workers > 1 else 0.0


METHODS = ("svb", "dense", "dense-ring", "treeAggregate")


def project(
    calibration: Calibration,
    shape: Shape,
    workers: list[int],
    bandwidths: list[float],
) -> list[dict]:
    """Step time, epoch time and bytes per epoch for every method, P and bandwidth.

    Every projected worker is assumed to have a core of its own (a cluster, not this machine).

    Returns
    -------
    list of dict
        One row per (method, workers, gbit_per_s) with ``step_s`` (an SGD step, or an MLlib
        iteration), ``epoch_s`` (one pass over ``shape.rows``) and ``epoch_bytes`` (sent per
        worker).
    """
    # A projected worker has a core of its own: no stretching for this machine's cores.
    calibration = replace(calibration, cores=max(workers))
    rows = []
    for gbit in bandwidths:
        for P in workers:
            steps = shape.steps_per_epoch(P)
            svb = svb_step(calibration, shape, P, gbit)["step"]
            mesh = dense_step(calibration, shape, P, gbit)["step"]
            ring = dense_step(calibration, shape, P, gbit, ring=True)["step"]
            tree = tree_aggregate_iteration(calibration, shape, P, gbit)["step"]
            for method, step_s, epoch_s, epoch_bytes in (
                ("svb", svb, svb * steps, svb_epoch_bytes(shape, P)),
                ("dense", mesh, mesh * steps, dense_epoch_bytes(shape, P)),
                ("dense-ring", ring, ring * steps, dense_epoch_bytes(shape, P, ring=True)),
                ("treeAggregate", tree, tree, tree_aggregate_epoch_bytes(shape, P)),
            ):
                rows.append(
                    {
                        "method": method,
                        "workers": P,
                        "gbit_per_s": gbit,
                        "step_s": step_s,
                        "epoch_s": epoch_s,
                        "epoch_bytes": epoch_bytes,
                    }
                )
    return rows


def relative_error(predicted: float, measured: float) -> float:
    """|predicted - measured| / measured (inf when nothing was measured)."""
    return abs(predicted - measured) / measured if measured > 0 else math.inf


def gemm_lower_bound_s(shape: Shape, workers: int, gemm_flops: float) -> float:
    """Seconds per epoch one worker needs for its GEMMs alone at ``gemm_flops``.

    Forward ``2 B K D`` plus rebuild ``2 P B K D`` flops per step, ``steps_per_epoch`` steps;
    for CSR rows the products only touch the non-zeros, so n replaces D.
    """
    B, K = shape.batch_size, shape.num_classes
    D = shape.num_features if shape.nonzeros is None else shape.nonzeros
    flops = (2 * B * K * D + 2 * workers * B * K * D) * shape.steps_per_epoch(workers)
    return flops / gemm_flops
