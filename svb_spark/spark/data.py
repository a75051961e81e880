"""Arrow columns <-> numpy: feature vectors, labels and weights.

Spark hands ``mapInArrow`` a VectorUDT column as its SQL struct
``<type: int8, size: int32, indices: list<int32>, values: list<double>>`` where type 1 is a
dense vector (all values) and type 0 a sparse one (size, indices, values). Feature columns of
type ``array<float|double>`` arrive as Arrow lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from svb_spark.core.multilabel import label_sets_of_parts

SPARSE_VECTOR, DENSE_VECTOR = 0, 1
# Spark ML's VectorUDT as Arrow sees it (its sqlType).
VECTOR_STRUCT = pa.struct(
    [
        ("type", pa.int8()),
        ("size", pa.int32()),
        ("indices", pa.list_(pa.int32())),
        ("values", pa.list_(pa.float64())),
    ]
)


def vector_struct_array(kinds, sizes, indices, values) -> pa.StructArray:
    """A VectorUDT column from its four Arrow fields (see :data:`VECTOR_STRUCT`)."""
    return pa.StructArray.from_arrays([kinds, sizes, indices, values], fields=list(VECTOR_STRUCT))


def _combined(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        return column.combine_chunks()
    return column


def is_vector_struct(arrow_type: pa.DataType) -> bool:
    """Whether ``arrow_type`` is the Arrow form of Spark ML's VectorUDT."""
    return pa.types.is_struct(arrow_type) and {f.name for f in arrow_type} == {
        "type",
        "size",
        "indices",
        "values",
    }


def _list_parts(lists: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, flat values) of a list array; offsets index into the flat values."""
    offsets = lists.offsets.to_numpy()
    flat = lists.values.to_numpy(zero_copy_only=False)
    return offsets, flat


def vector_sizes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Length of every vector (null rows give -1)."""
    column = _combined(column)
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    if is_vector_struct(column.type):
        kinds = column.field("type").to_numpy(zero_copy_only=False)
        sizes = column.field("size").fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        counts = column.field("values").value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
        sizes = np.where(kinds == DENSE_VECTOR, counts, sizes)
    else:
        sizes = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    return np.where(valid, sizes, -1).astype(np.int64)


def _coordinates(column: pa.Array, num_features: int):
    """(row, column, value) of every stored entry of a VectorUDT or array column."""
    n = len(column)
    if not is_vector_struct(column.type):
        offsets, flat = _list_parts(column)
        values = flat[offsets[0] : offsets[-1]]
        return np.repeat(np.arange(n), num_features), np.tile(np.arange(num_features), n), values
    kinds = column.field("type").to_numpy(zero_copy_only=False)
    offsets, flat = _list_parts(column.field("values"))
    counts = np.diff(offsets)
    rows = np.repeat(np.arange(n), counts)
    values = flat[offsets[0] : offsets[-1]]
    position = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], counts)
    if (kinds == DENSE_VECTOR).all():
        return rows, position, values
    # A sparse row's value j sits at column indices[j]; a dense row's at column j.
    index_offsets, index_flat = _list_parts(column.field("indices"))
    sparse_value = np.repeat(kinds != DENSE_VECTOR, counts)
    lookup = np.repeat(index_offsets[:-1], counts) + position
    columns = position.copy()
    columns[sparse_value] = index_flat[lookup[sparse_value]]
    return rows, columns, values


def dense_rows(column: pa.Array | pa.ChunkedArray, num_features: int) -> np.ndarray | None:
    """The ``rows x num_features`` matrix of a VectorUDT or array column whose every row stores
    all its values (dense vectors, arrays), as a read-only view of the Arrow buffer; None
    when some row is a sparse vector."""
    column = _combined(column)
    if is_vector_struct(column.type):
        if not (column.field("type").to_numpy(zero_copy_only=False) == DENSE_VECTOR).all():
            return None
        column = column.field("values")
    offsets, flat = _list_parts(column)
    return flat[offsets[0] : offsets[-1]].reshape(len(column), num_features)


def vectors_to_dense(
    column: pa.Array | pa.ChunkedArray, num_features: int, dtype: np.dtype | str = np.float64
) -> np.ndarray:
    """Decode a VectorUDT or array column into a dense ``rows x num_features`` matrix.

    Rows must be non-null and of length ``num_features`` (the driver checks this before
    training starts).
    """
    column = _combined(column)
    n = len(column)
    if n == 0:
        return np.zeros((0, num_features), dtype=dtype)
    stored = dense_rows(column, num_features)
    if stored is not None:
        return stored.astype(dtype)
    out = np.zeros((n, num_features), dtype=dtype)
    rows, columns, values = _coordinates(column, num_features)
    out[rows, columns] = values
    return out


def vectors_to_csr(
    column: pa.Array | pa.ChunkedArray, num_features: int, dtype: np.dtype | str = np.float64
):
    """Decode a VectorUDT or array column into a ``scipy.sparse.csr_matrix``, never densely.

    Explicit zeros (as dense vectors store them) are dropped, so dense and sparse copies of the
    same data give the same matrix.
    """
    from scipy import sparse

    column = _combined(column)
    n = len(column)
    if n == 0:
        return sparse.csr_matrix((0, num_features), dtype=dtype)
    rows, columns, values = _coordinates(column, num_features)
    keep = values != 0
    rows, columns, values = rows[keep], columns[keep], values[keep]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sparse.csr_matrix(
        (values.astype(dtype), columns.astype(np.int32), indptr), shape=(n, num_features)
    )


def numeric_column(column: pa.Array | pa.ChunkedArray, dtype=np.float64) -> np.ndarray:
    """A numeric Arrow column as numpy, nulls as NaN."""
    column = _combined(column)
    return column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False).astype(dtype)


def is_label_sets(arrow_type: pa.DataType) -> bool:
    """Whether a label column of ``arrow_type`` holds label sets (an array of label indices
    a row: multi-label rows) rather than one label a row."""
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)


def label_set_parts(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, labels as float64) of a label-sets column: row i's labels are
    ``labels[offsets[i]:offsets[i + 1]]``; a null row has none, a null label is NaN."""
    column = _combined(column)
    offsets = column.offsets.to_numpy().astype(np.int64)
    labels = numeric_column(column.values)
    return offsets - offsets[0], labels[offsets[0] : offsets[-1]]


def label_sets_column(column: pa.Array | pa.ChunkedArray, num_labels: int, dtype):
    """A label-sets column as :func:`svb_spark.core.multilabel.label_sets` makes them: a rows x
    ``num_labels`` CSR matrix of ones; a label a row repeats counts once."""
    return label_sets_of_parts(*label_set_parts(column), num_labels, dtype)


def table_to_arrays(
    batches,
    features_col: str,
    label_col: str,
    weight_col: str,
    num_features: int,
    dtype,
    sparse: bool = False,
    order: np.ndarray | None = None,
    num_labels: int = 0,
):
    """Concatenate Arrow record batches into (X, y, weights); X is CSR when ``sparse``, and y
    int64 labels, or with ``num_labels`` the rows' label sets (see :func:`label_sets_column`).

    ``order`` (a permutation of the rows, or None for the order they come in) is the order of
    the rows in the result. Dense rows go from each batch straight to their place in X.
    """
    from scipy.sparse import vstack

    batches = list(batches)
    decode = vectors_to_csr if sparse else vectors_to_dense
    if not batches:
        empty = pa.array([], type=pa.list_(pa.float64()))
        y = np.zeros(0, np.int64)
        if num_labels:
            y = label_sets_column(pa.array([], type=pa.list_(pa.float64())), num_labels, dtype)
        return decode(empty, num_features, dtype), y, np.zeros(0, dtype)
    if num_labels:
        sets = [label_sets_column(b.column(label_col), num_labels, dtype) for b in batches]
        y = vstack(sets, format="csr")
    else:
        labels = [numeric_column(b.column(label_col)) for b in batches]
        y = np.concatenate(labels).astype(np.int64)
    w = np.concatenate([numeric_column(b.column(weight_col), dtype) for b in batches])
    if order is not None:
        y, w = y[order], w[order]
    if sparse:
        X = decode(pa.Table.from_batches(batches).column(features_col), num_features, dtype)
        return (X if order is None else X[order]), y, w
    X = np.empty((len(w), num_features), dtype=dtype)
    # Where each incoming row goes: the inverse of ``order``.
    places = None
    if order is not None:
        places = np.empty_like(order)
        places[order] = np.arange(len(order))
    start = 0
    for batch in batches:
        column = batch.column(features_col)
        rows = dense_rows(column, num_features)
        if rows is None:
            rows = vectors_to_dense(column, num_features, dtype)
        end = start + len(rows)
        if places is None:
            X[start:end] = rows
        else:
            X[places[start:end]] = rows
        start = end
    return X, y, w
