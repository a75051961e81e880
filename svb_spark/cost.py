"""The communication cost model of DESIGN.md: bytes each worker sends per SGD step, and the
largest message a fit's Flight servers accept."""

from __future__ import annotations

import numpy as np

from svb_spark.exchange.codec import DENSE


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
    - "broadcast": the same sufficient vectors, but once, to the driver.

    ``nonzeros_per_row`` (the measured average) selects the CSR size of V.
    """
    peers = num_workers - 1
    row = sufficient_vector_row_bytes(num_classes, num_features, itemsize, nonzeros_per_row)
    if mode == "p2p":
        return float(peers * batch_size * row)
    if mode == "dense":
        return peers * dense_gradient_bytes(num_classes, num_features, itemsize)
    if mode == "broadcast":
        return float(batch_size * row)
    raise ValueError(f"no cost model for exchange mode {mode!r}")


def choose_exchange(**shape) -> tuple[str, dict[str, float]]:
    """The mesh mode ("p2p" or "dense") that sends fewer bytes, and all three predictions.

    ``shape`` holds the keyword arguments of :func:`predicted_bytes_per_step` but ``mode``.
    """
    predictions = {
        mode: predicted_bytes_per_step(mode, **shape) for mode in ("p2p", "dense", "broadcast")
    }
    # Ties go to p2p: the same bytes, and the rebuild needs no K x D gradient buffer.
    mesh = ("p2p", "dense")
    return min(mesh, key=lambda mode: (predictions[mode], mode != "p2p")), predictions


def max_message_bytes(config) -> int:
    """The largest payload a peer's message can have in the fit of ``config`` (a
    :class:`~svb_spark.training.TrainingConfig`): anything bigger is refused.

    Per step: the dense mode's gradient; otherwise B rows of sufficient vectors, counting
    every feature as present in a CSR row, plus 8 bytes a row of Arrow list offsets.
    """
    size = itemsize(config.dtype)
    K, D = config.num_classes, config.num_features
    if config.message_kind == DENSE:
        per_step = dense_gradient_bytes(K, D, size)
    else:
        row = sufficient_vector_row_bytes(K, D, size, D if config.sparse else None)
        per_step = config.batch_size * (row + 8)
    largest = config.sync_interval * per_step
    if config.verify_interval:
        largest = max(largest, dense_gradient_bytes(K, D, size))  # rank 0's replica, on a resync
    return int(largest) + (1 << 16)  # slack for Arrow's buffer padding
