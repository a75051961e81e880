"""Arrow columns <-> numpy: feature vectors, labels and weights.

Spark hands ``mapInArrow`` a VectorUDT column as its SQL struct
``<type: int8, size: int32, indices: list<int32>, values: list<double>>`` where type 1 is a
dense vector (all values) and type 0 a sparse one (size, indices, values). Feature columns of
type ``array<float|double>`` arrive as Arrow lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

DENSE_VECTOR = 1


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


def vectors_to_dense(
    column: pa.Array | pa.ChunkedArray, num_features: int, dtype: np.dtype | str = np.float64
) -> np.ndarray:
    """Decode a VectorUDT or array column into a dense ``rows x num_features`` matrix.

    Rows must be non-null and of length ``num_features`` (the driver checks this before
    training starts).
    """
    column = _combined(column)
    n = len(column)
    out = np.zeros((n, num_features), dtype=dtype)
    if n == 0:
        return out
    if not is_vector_struct(column.type):
        offsets, flat = _list_parts(column)
        out[:] = flat[offsets[0] : offsets[-1]].reshape(n, num_features)
        return out

    kinds = column.field("type").to_numpy(zero_copy_only=False)
    offsets, flat = _list_parts(column.field("values"))
    counts = np.diff(offsets)
    if (kinds == DENSE_VECTOR).all():
        out[:] = flat[offsets[0] : offsets[-1]].reshape(n, num_features)
        return out
    rows = np.repeat(np.arange(n), counts)
    values = flat[offsets[0] : offsets[-1]]
    position = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], counts)
    # A sparse row's value j sits at column indices[j]; a dense row's at column j.
    index_offsets, index_flat = _list_parts(column.field("indices"))
    sparse_value = np.repeat(kinds != DENSE_VECTOR, counts)
    lookup = np.repeat(index_offsets[:-1], counts) + position
    columns = position.copy()
    columns[sparse_value] = index_flat[lookup[sparse_value]]
    out[rows, columns] = values
    return out


def numeric_column(column: pa.Array | pa.ChunkedArray, dtype=np.float64) -> np.ndarray:
    """A numeric Arrow column as numpy, nulls as NaN."""
    column = _combined(column)
    return column.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False).astype(dtype)


def table_to_arrays(
    batches, features_col: str, label_col: str, weight_col: str, num_features: int, dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate Arrow record batches into (X dense, y int64, weights)."""
    batches = list(batches)
    if not batches:
        return (
            np.zeros((0, num_features), dtype=dtype),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=dtype),
        )
    table = pa.Table.from_batches(batches)
    X = vectors_to_dense(table.column(features_col), num_features, dtype)
    y = numeric_column(table.column(label_col)).astype(np.int64)
    w = numeric_column(table.column(weight_col), dtype)
    return X, y, w
