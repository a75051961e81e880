"""Products of a batch of CSR rows with a dense block, in compiled loops that read and write
only the rows of the block that the batch's columns name.

scipy's ``csr_matvecs`` and ``csc_matvecs`` compute ``y += A x`` into a given output: one
axpy of K floats per non-zero. The sparse SGD step writes with them straight into the
feature-major replica's rows (see :func:`svb_spark.core.numerics.feature_major_zeros`). The
expression ``W.T[columns] -= s * (local.T @ U)`` instead allocates the C x K product, gathers
the C rows, subtracts and scatters them back: on a 64-row text batch those temporaries cost
more in page faults than the step's arithmetic (``benchmarks.micro.sparse_step_calls`` times
both). The compiled loops check no shapes, so :func:`_compiled` does before any call.

Both products run in one of two orders, with the same bits (each output element takes its
terms in the same order). Row order (CSR) takes a non-zero at a time, so a column a batch
repeats is read from memory as often as it occurs. Feature order (the batch converted to CSC)
takes a column at a time, reads its row of the block once and adds it into every batch row
that holds it: those rows (batch x K) stay in cache. Feature order pays a pass over all D
columns, so it wins only on long rows: on 64-row Zipfian text batches (see
:func:`svb_spark.datasets.tagged_text`) at 2^16 features, it took 0.73x row order's time to
score and 0.82x to apply at 10,000 float32 classes, about the same at 3,000 to 5,000, and
1.3x to 1.4x at 1,000 (``FEATURE_ORDER_ROW_BYTES``).
"""

from __future__ import annotations

import numpy as np

# The shortest row of the block (bytes) that the products read in feature order; the most
# batch x K bytes for which the batch's rows stay in cache (64 rows of 50,000 float32 classes
# still gained); and the most columns per (non-zero x class) of the batch for which that
# order's pass over the columns stays small.
FEATURE_ORDER_ROW_BYTES = 32 * 1024
FEATURE_ORDER_BATCH_BYTES = 16 << 20
FEATURE_ORDER_COLUMNS = 1 / 16


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


def _feature_order(X, rows: np.ndarray) -> bool:
    """Whether the products of CSR ``X`` and the D x K ``rows`` run column by column (see the
    module's docstring): long rows, a batch that stays in cache, few columns for the batch's
    work, sorted indices (with unsorted ones a row would take its terms in another order than
    in row order)."""
    K = rows.shape[1]
    return (
        K * rows.itemsize >= FEATURE_ORDER_ROW_BYTES
        and X.shape[0] * K * rows.itemsize <= FEATURE_ORDER_BATCH_BYTES
        and X.shape[1] <= FEATURE_ORDER_COLUMNS * X.nnz * K
        and X.has_sorted_indices
    )


def sparse_product(X, rows: np.ndarray) -> np.ndarray:
    """``X @ rows`` (B x K) of CSR rows ``X`` (B x D) and a D x K array, reading only the
    rows of ``rows`` that X's columns name (bit for bit ``X @ rows``)."""
    if not _compiled(rows, X):
        columns, local = batch_columns(X)
        return np.asarray(local @ rows[columns])
    out = np.zeros((X.shape[0], rows.shape[1]), dtype=rows.dtype)
    if _feature_order(X, rows):
        C = X.tocsc()  # a column's rows in ascending order, as row order meets them
        _loops().csc_matvecs(
            *X.shape, rows.shape[1], C.indptr, C.indices, C.data, rows.reshape(-1), out.reshape(-1)
        )  # fmt: skip
        return out
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
    U = np.ascontiguousarray(U)
    if _feature_order(V, rows):
        # V in CSC is V^T in CSR: the loop runs over the columns, each row of ``rows`` read
        # and written once, its terms in V's row order.
        T = V.tocsc()
        data = T.data * -rows.dtype.type(scale)
        _loops().csr_matvecs(
            V.shape[1], V.shape[0], rows.shape[1], T.indptr, T.indices, data, U, rows.reshape(-1)
        )  # fmt: skip
        return
    data = V.data * -rows.dtype.type(scale)
    # V's CSR arrays read as CSC are V^T: the loop runs over V's rows.
    _loops().csc_matvecs(
        *V.shape[::-1], rows.shape[1], V.indptr, V.indices, data, U, rows.reshape(-1),
    )  # fmt: skip
