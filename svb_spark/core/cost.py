"""The step-time cost model: per exchange mode, the bytes a worker sends per SGD step and
the seconds its step is predicted to take (``auto`` takes the fastest), what a class-sharded
worker holds, and the largest message a fit's Flight servers accept."""

from __future__ import annotations

import numpy as np

from svb_spark.transport.codec import DENSE, SHARDED


def itemsize(dtype: str) -> int:
    """Bytes per float of the training ``dtype`` ("float32" or "float64")."""
    return np.dtype(dtype).itemsize


def dense_gradient_bytes(num_classes: int, num_features: int, itemsize: int) -> float:
    """Bytes of one K x (D + 1) gradient (with the intercepts): the dense mode's message."""
    return float(num_classes * (num_features + 1) * itemsize)


def sufficient_vector_row_bytes(
    num_classes: int, num_features: int, itemsize: int, nonzeros_per_row: float | None = None
) -> float:
    """Bytes of one row of sufficient vectors: U (K floats) plus V.

    Dense V is D floats; CSR V is nnz values, nnz int32 indices and one int32 offset, which
    is the paper's K + 2 nnz + 1 in 4-byte words for float32.
    """
    if nonzeros_per_row is None:
        return float((num_classes + num_features) * itemsize)
    return num_classes * itemsize + nonzeros_per_row * (itemsize + 4) + 4.0


def sharded_row_bytes(
    num_features: int, itemsize: int, nonzeros_per_row: float | None = None
) -> float:
    """Bytes of one row in the class-sharded mode's message: the row (dense, or CSR as in
    :func:`sufficient_vector_row_bytes`), an int32 label and a weight."""
    if nonzeros_per_row is None:
        features = num_features * itemsize
    else:
        features = nonzeros_per_row * (itemsize + 4) + 4.0
    return float(features + 4 + itemsize)


def sharded_worker_bytes(
    num_classes: int,
    num_features: int,
    num_workers: int,
    batch_size: int,
    itemsize: int,
    nonzeros_per_row: float | None = None,
) -> float:
    """What one worker of the class-sharded mode holds beyond its own rows: its block of
    ceil(K / P) classes and one global batch of P B rows with their scores."""
    block = -(-num_classes // num_workers)
    rows = num_workers * batch_size
    row = sharded_row_bytes(num_features, itemsize, nonzeros_per_row) + block * itemsize
    return float(block * (num_features + 1) * itemsize + rows * row)


def predicted_bytes_per_step(
    mode: str,
    num_workers: int,
    batch_size: int,
    num_classes: int,
    num_features: int,
    itemsize: int,
    nonzeros_per_row: float | None = None,
) -> float:
    """Payload bytes one worker sends per step in ``mode``.

    - sufficient vectors ("p2p"): (P - 1) B rows of U and V, to every peer;
    - "dense": (P - 1) K (D + 1) floats, the gradient and intercept gradient to every peer;
    - "broadcast": the same sufficient vectors, but once, to the driver;
    - "sharded": (P - 1) times B rows (with their labels and weights) and 2 normalizers for
      each of the P B rows of the step before: no K term.

    ``nonzeros_per_row`` (the measured average) selects the CSR size of V.
    """
    peers = num_workers - 1
    row = sufficient_vector_row_bytes(num_classes, num_features, itemsize, nonzeros_per_row)
    if mode == "sharded":
        rows = batch_size * sharded_row_bytes(num_features, itemsize, nonzeros_per_row)
        return float(peers * (rows + 2 * num_workers * batch_size * itemsize))
    if mode == "p2p":
        return float(peers * batch_size * row)
    if mode == "dense":
        return peers * dense_gradient_bytes(num_classes, num_features, itemsize)
    if mode == "broadcast":
        return float(batch_size * row)
    raise ValueError(f"no cost model for exchange mode {mode!r}")


# One worker's rates, as measured on this class of machine (benchmarks/results/quick.json:
# sgemm 66 GFLOP/s on 2 cores, 0.74 ns per streamed element, 1.3 ns a byte for loopback Flight
# plus the Arrow codec). Only the ratios between modes decide.
GEMM_FLOPS_PER_SECOND = 30e9
ELEMENT_SECONDS = 0.75e-9
BYTES_PER_SECOND = 0.75e9
# What a step costs beyond its arithmetic and bytes, over p2p's: the class-sharded step stacks
# every worker's rows and combines the blocks' normalizers (benchmarks.exchange measured about
# 0.4 ms more than p2p's step at K = 60, D = 300, B = 8, where the arithmetic is negligible).
STEP_OVERHEAD_SECONDS = {"p2p": 0.0, "broadcast": 0.0, "dense": 0.0, "sharded": 0.4e-3}


def predicted_step_seconds(
    mode: str,
    num_workers: int,
    batch_size: int,
    num_classes: int,
    num_features: int,
    itemsize: int,
    nonzeros_per_row: float | None = None,
) -> float:
    """A worker's time for one step in ``mode``: GEMM flops, streamed elements and bytes sent.

    With ``F = nnz`` for CSR rows and ``D`` otherwise:

    - "p2p" (and "broadcast"): score the worker's B rows (2 B K F flops) and apply all P B
      rows of sufficient vectors (2 P B K F), after stacking them (P B (K + F) elements);
    - "dense": score and form the gradient (4 B K F), then sum P gradients and apply them
      ((P + 2) K D elements: memory-bound, where small K loses nothing to it);
    - "sharded": score and update P B rows for K / P classes (4 B K F), stacking the rows and
      the block's scores (P B F + 2 B K elements).

    Each mode's :data:`STEP_OVERHEAD_SECONDS` is added; the latency of one exchange per step
    is the same in every mode and left out.
    """
    P, B, K, D = num_workers, batch_size, num_classes, num_features
    F = D if nonzeros_per_row is None else nonzeros_per_row
    flops, elements = {
        "p2p": (2 * B * K * F * (1 + P), P * B * (K + F)),
        "broadcast": (2 * B * K * F * (1 + P), P * B * (K + F)),
        "dense": (4 * B * K * F, (P + 2) * K * D),
        "sharded": (4 * B * K * F, P * B * F + 2 * B * K),
    }[mode]
    sent = predicted_bytes_per_step(mode, P, B, K, D, itemsize, nonzeros_per_row)
    scale = itemsize / 4  # float64 arithmetic and streams take about twice float32's time
    compute = scale * (flops / GEMM_FLOPS_PER_SECOND + elements * ELEMENT_SECONDS)
    return compute + sent / BYTES_PER_SECOND + STEP_OVERHEAD_SECONDS[mode]


def choose_exchange(candidates=("p2p", "dense"), **shape) -> tuple[str, dict, dict]:
    """The mode among ``candidates`` with the fastest predicted step, and every mode's
    predicted bytes and seconds per step.

    ``shape`` holds the keyword arguments of :func:`predicted_bytes_per_step` but ``mode``.
    Ties go to p2p, then to the mode that sends fewer bytes.
    """
    modes = ("p2p", "dense", "broadcast", "sharded")
    sent = {mode: predicted_bytes_per_step(mode, **shape) for mode in modes}
    seconds = {mode: predicted_step_seconds(mode, **shape) for mode in modes}
    fastest = min(candidates, key=lambda mode: (seconds[mode], mode != "p2p", sent[mode]))
    return fastest, sent, seconds


def max_message_bytes(config) -> int:
    """The largest payload a peer's message can have in the fit of ``config`` (a
    :class:`~svb_spark.core.config.TrainingConfig`): anything bigger is refused.

    Per step: the dense mode's gradient; otherwise B rows of sufficient vectors, counting
    every feature as present in a CSR row, plus 8 bytes a row of Arrow list offsets.
    """
    size = itemsize(config.dtype)
    K, D = config.num_classes, config.num_features
    if config.message_kind == SHARDED:
        # B rows (every feature counted as present in a CSR row) and the normalizers of the
        # P B rows of the step before, which any number of workers up to K could send.
        per_step = config.batch_size * (sharded_row_bytes(D, size, D if config.sparse else None)
                                        + 8 + 2 * K * size)  # fmt: skip
        return int(per_step) + (1 << 16)
    if config.solver == "lbfgs":  # the loss and the whole gradient, in float64
        per_step = (K * (D + 1) + 1) * 8
    elif config.message_kind == DENSE:
        per_step = dense_gradient_bytes(K, D, size)
    else:
        row = sufficient_vector_row_bytes(K, D, size, D if config.sparse else None)
        per_step = config.batch_size * (row + 8)
    largest = config.sync_interval * per_step
    if config.verify_interval:
        largest = max(largest, dense_gradient_bytes(K, D, size))  # rank 0's replica, on a resync
    return int(largest) + (1 << 16)  # slack for Arrow's buffer padding
