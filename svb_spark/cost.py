"""The communication cost model of DESIGN.md: bytes each worker sends per SGD step."""

from __future__ import annotations


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
        return float(peers * num_classes * (num_features + 1) * itemsize)
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
