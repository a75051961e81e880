"""The communication cost model of DESIGN.md: bytes each worker sends per SGD step."""

from __future__ import annotations


def predicted_bytes_per_step(
    mode: str,
    num_workers: int,
    batch_size: int,
    num_classes: int,
    num_features: int,
    itemsize: int,
) -> float:
    """Payload bytes one worker sends per step in ``mode``.

    - sufficient vectors ("p2p"): (P - 1) B (K + D) floats, U and V to every peer;
    - "dense": (P - 1) K (D + 1) floats, the gradient and intercept gradient to every peer.

    "broadcast" ships the same sufficient vectors, but once, to the driver: B (K + D) floats.
    """
    peers = num_workers - 1
    K, D, B = num_classes, num_features, batch_size
    if mode == "p2p":
        return float(peers * B * (K + D) * itemsize)
    if mode == "dense":
        return float(peers * K * (D + 1) * itemsize)
    if mode == "broadcast":
        return float(B * (K + D) * itemsize)
    raise ValueError(f"no cost model for exchange mode {mode!r}")


def choose_exchange(
    num_workers: int, batch_size: int, num_classes: int, num_features: int, itemsize: int
) -> tuple[str, dict[str, float]]:
    """The mesh mode ("p2p" or "dense") that sends fewer bytes, and both predictions."""
    predictions = {
        mode: predicted_bytes_per_step(
            mode, num_workers, batch_size, num_classes, num_features, itemsize
        )
        for mode in ("p2p", "dense")
    }
    # Ties go to p2p: the same bytes, and the rebuild GEMM needs no K x D gradient buffer.
    return min(predictions, key=lambda mode: (predictions[mode], mode != "p2p")), predictions
