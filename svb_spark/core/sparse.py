"""Products of a batch of CSR rows with a dense block, in compiled loops that read and write
only the rows of the block that the batch's columns name.

scipy's ``csr_matvecs`` and ``csc_matvecs`` compute ``y += A x`` into a given output: one
axpy of K floats per non-zero. The sparse SGD step writes with them straight into the
feature-major replica's rows (see :func:`svb_spark.core.numerics.feature_major_zeros`). The
expression ``W.T[columns] -= s * (local.T @ U)`` instead allocates the C x K product, gathers
the C rows, subtracts and scatters them back: on a 64-row text batch those temporaries cost
more in page faults than the step's arithmetic (``benchmarks.micro.sparse_step_calls`` times
both). The compiled loops check no shapes, so :func:`_compiled` does before any call.
"""

from __future__ import annotations

import numpy as np


def batch_columns(X):
    """The distinct columns of a CSR batch and the batch with its columns renumbered to them."""
    from scipy import sparse

    columns = np.unique(X.indices)
    local = sparse.csr_matrix(
        (X.data, np.searchsorted(columns, X.indices).astype(np.int32), X.indptr),
        shape=(X.shape[0], len(columns)),
    )
    return columns, local


def _loops():
    """scipy's compiled loops, or None: ``_sparsetools`` is private (it has held these two
    loops, with these arguments, since scipy's first releases), so without it the products
    fall back to scipy's public ``@``."""
    try:
        from scipy.sparse import _sparsetools
    except ImportError:
        return None
    return _sparsetools if hasattr(_sparsetools, "csc_matvecs") else None


def _compiled(rows: np.ndarray, X, dense: np.ndarray | None = None) -> bool:
    """Whether the compiled loops can take CSR ``X`` against the D x K ``rows`` in place (and
    ``dense``, X's rows x K): C-contiguous, one dtype, matching shapes."""
    if dense is not None and (
        dense.dtype != rows.dtype or dense.shape != (X.shape[0], rows.shape[1])
    ):
        return False
    same = rows.flags.c_contiguous and X.dtype == rows.dtype and X.shape[1] == rows.shape[0]
    return same and _loops() is not None


def sparse_product(X, rows: np.ndarray) -> np.ndarray:
    """``X @ rows`` (B x K) of CSR rows ``X`` (B x D) and a D x K array, reading only the
    rows of ``rows`` that X's columns name (bit for bit ``X @ rows``)."""
    if not _compiled(rows, X):
        columns, local = batch_columns(X)
        return np.asarray(local @ rows[columns])
    out = np.zeros((X.shape[0], rows.shape[1]), dtype=rows.dtype)
    _loops().csr_matvecs(
        *X.shape, rows.shape[1], X.indptr, X.indices, X.data, rows.reshape(-1), out.reshape(-1)
    )
    return out


def subtract_sparse_product(rows: np.ndarray, scale, U: np.ndarray, V) -> None:
    """``rows -= scale V^T U`` in place, for CSR ``V`` (B x D), ``U`` (B x K) and a D x K
    ``rows`` (which may be a view, e.g. the transpose of a replica in either layout).

    Each row of ``rows`` takes its terms ``(-scale v_ij) u_i`` one at a time in V's row
    order, so applying V in consecutive blocks of rows gives the same bits as applying it
    whole, and a class-major replica (its rows gathered, updated and scattered back) the same
    bits as a feature-major one.
    """
    if _compiled(rows, V, U):
        _subtract(rows, scale, U, V)
        return
    columns, local = batch_columns(V)
    block = rows[columns]
    if _compiled(block, local, U):
        _subtract(block, scale, U, local)
    else:
        block -= scale * np.asarray(local.T @ U)
    rows[columns] = block


def _subtract(rows: np.ndarray, scale, U: np.ndarray, V) -> None:
    data = V.data * -rows.dtype.type(scale)
    # V's CSR arrays read as CSC are V^T: the loop runs over V's rows.
    _loops().csc_matvecs(
        *V.shape[::-1], rows.shape[1], V.indptr, V.indices, data, np.ascontiguousarray(U),
        rows.reshape(-1),
    )  # fmt: skip
