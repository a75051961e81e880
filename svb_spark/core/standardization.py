"""Between the standardized space training runs in and the original features: the model's
weights mapped back after a fit, and a warm start mapped in.

Training runs on ``(x - mean) * scale`` (dense rows; CSR rows are only scaled), so a weight
``w`` learned there is ``w * scale`` in original units and the intercept absorbs the shift.
"""

from __future__ import annotations

import numpy as np


def unstandardize(
    W: np.ndarray, b: np.ndarray, mean: np.ndarray | None, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map weights learned on ``(x - mean) * scale`` back to the original features.

    One float64 K x D array, written in ``W``'s own memory order (a feature-major replica
    arrives as the transpose of a D x K array): at 2^28 coefficients the other order is
    several times slower. The driver builds it in parts, into a buffer of its own (see
    :class:`svb_spark.control.delivery.ModelBuild`).
    """
    W_original = unstandardize_weights(W, scale, np.empty(W.size, dtype=np.float64))
    return W_original, unstandardize_intercept(W_original, b, mean)


def unstandardize_weights(W: np.ndarray, scale: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``W * scale`` in float64, written into the flat buffer ``out`` in ``W``'s memory order
    (see :func:`unstandardize`); also for a run of W's storage rows as they arrive."""
    K, D = W.shape
    if W.flags.f_contiguous and not W.flags.c_contiguous:
        storage = out.reshape(D, K)
        np.multiply(W.T, np.asarray(scale, dtype=np.float64)[:, None], out=storage)
        return storage.T
    W_original = out.reshape(K, D)
    np.multiply(W, scale, out=W_original, dtype=np.float64)
    return W_original


def unstandardize_intercept(
    W_original: np.ndarray, b: np.ndarray, mean: np.ndarray | None
) -> np.ndarray:
    """The float64 intercepts in original units, from the unstandardized weights."""
    b_original = b.astype(np.float64)
    if mean is not None:
        b_original = b_original - W_original @ mean
    return b_original


def standardize_weights(
    W: np.ndarray, b: np.ndarray, mean: np.ndarray | None, scale: np.ndarray, fit_intercept: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`unstandardize`: weights for rows ``(x - mean) * scale``.

    ``W x + b = (W / scale) x_std + (b + W mean)``; columns of constant features (scale 0)
    start at zero, as they stay in training; without an intercept, b is zero.
    """
    W_std = np.divide(W, scale, out=np.zeros_like(W), where=scale > 0)
    if not fit_intercept:
        return W_std, np.zeros_like(b)
    return W_std, (b + W @ mean if mean is not None else b.copy())
