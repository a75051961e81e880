"""The pieces of the step-time cost model that every exchange mode shares: the bytes of a
row of sufficient vectors, of a class-sharded row and of a dense gradient, what a
class-sharded worker holds, and one worker's measured rates. Each mode's own formulas are in
:mod:`svb_spark.core.modes`."""

from __future__ import annotations

import numpy as np


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


# One worker's rates, as measured on this class of machine (benchmarks/results/quick.json:
# sgemm 66 GFLOP/s on 2 cores, 0.74 ns per streamed element, 1.3 ns a byte for loopback Flight
# plus the Arrow encoding). Only the ratios between modes decide.
GEMM_FLOPS_PER_SECOND = 30e9
ELEMENT_SECONDS = 0.75e-9
BYTES_PER_SECOND = 0.75e9


def step_seconds(flops: float, elements: float, sent: float, itemsize: int) -> float:
    """A worker's seconds for a step of ``flops`` GEMM flops, ``elements`` streamed elements
    and ``sent`` bytes, at the rates above (see svb_spark.core.modes for each mode's)."""
    scale = itemsize / 4  # float64 arithmetic and streams take about twice float32's time
    compute = scale * (flops / GEMM_FLOPS_PER_SECOND + elements * ELEMENT_SECONDS)
    return compute + sent / BYTES_PER_SECOND
