"""Arrow <-> numpy decoding of Spark ML vectors, without Spark."""

import numpy as np
import pyarrow as pa

from svb_spark.spark.data import VECTOR_STRUCT as VECTOR
from svb_spark.spark.data import is_vector_struct, vector_sizes, vectors_to_dense


def dense(values):
    return {"type": 1, "size": None, "indices": None, "values": values}


def sparse(size, indices, values):
    return {"type": 0, "size": size, "indices": indices, "values": values}


def test_dense_sparse_and_mixed_vectors_decode_to_the_same_matrix():
    expected = np.array([[1.0, 0.0, 3.0], [0.0, 0.0, 5.0], [7.0, 8.0, 0.0]])
    all_dense = pa.array([dense(r.tolist()) for r in expected], type=VECTOR)
    mixed = pa.array(
        [dense([1.0, 0.0, 3.0]), sparse(3, [2], [5.0]), sparse(3, [0, 1], [7.0, 8.0])],
        type=VECTOR,
    )
    assert is_vector_struct(mixed.type)
    for column in (all_dense, mixed, pa.chunked_array([mixed.slice(0, 1), mixed.slice(1)])):
        np.testing.assert_array_equal(vectors_to_dense(column, 3), expected)
    np.testing.assert_array_equal(vectors_to_dense(mixed.slice(1), 3), expected[1:])


def test_array_columns_decode_and_report_sizes():
    column = pa.array([[1.0, 2.0], [3.0, 4.0], None, [5.0]])
    np.testing.assert_array_equal(
        vectors_to_dense(column.slice(0, 2), 2, np.float32), [[1, 2], [3, 4]]
    )
    assert vector_sizes(column).tolist() == [2, 2, -1, 1]


def test_vector_sizes_of_dense_sparse_and_null_rows():
    column = pa.array([dense([1.0, 2.0]), sparse(5, [1], [1.0]), None], type=VECTOR)
    assert vector_sizes(column).tolist() == [2, 5, -1]


def test_csr_decoding_matches_dense_and_drops_explicit_zeros():
    from svb_spark.spark.data import vectors_to_csr

    expected = np.array([[1.0, 0.0, 3.0], [0.0, 0.0, 5.0], [7.0, 8.0, 0.0]])
    mixed = pa.array(
        [dense([1.0, 0.0, 3.0]), sparse(3, [2], [5.0]), sparse(3, [0, 1], [7.0, 8.0])],
        type=VECTOR,
    )
    for column in (mixed, pa.array([r.tolist() for r in expected]), mixed.slice(1)):
        csr = vectors_to_csr(column, 3, np.float32)
        np.testing.assert_array_equal(csr.toarray(), expected[3 - len(column) :])
        assert csr.nnz == np.count_nonzero(expected[3 - len(column) :]) and csr.dtype == np.float32
    assert vectors_to_csr(mixed.slice(0, 0), 3).shape == (0, 3)


def _vector_batch(X, sparse_rows, label=None):
    from svb_spark.spark.data import DENSE_VECTOR, SPARSE_VECTOR, vector_struct_array

    n, size = X.shape
    stored = [np.flatnonzero(row) if sparse_rows else np.arange(size) for row in X]
    offsets = pa.array(np.cumsum([0] + [len(s) for s in stored]).astype(np.int32))
    indices = np.concatenate(stored).astype(np.int32) if sparse_rows else np.zeros(0, np.int32)
    index_offsets = offsets if sparse_rows else pa.array(np.zeros(n + 1, np.int32))
    vectors = vector_struct_array(
        pa.array(np.full(n, SPARSE_VECTOR if sparse_rows else DENSE_VECTOR, np.int8)),
        pa.array(np.full(n, size, np.int32)),
        pa.ListArray.from_arrays(index_offsets, pa.array(indices)),
        pa.ListArray.from_arrays(offsets, pa.array(np.concatenate(
            [row[s] for row, s in zip(X, stored)]))),
    )  # fmt: skip
    labels = pa.array(label if label is not None else np.zeros(n))
    return pa.RecordBatch.from_arrays([vectors, labels, pa.array(np.arange(n) + 0.5)],
                                      ["features", "label", "weight"])  # fmt: skip


def test_the_pre_pass_reads_dense_rows_as_a_matrix_and_agrees_with_the_csr_path():
    from svb_spark.spark.data import dense_rows
    from svb_spark.spark.inspection import _PartitionStats

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 7)) * (rng.random((50, 7)) < 0.6)
    X[20, 3], X[31, 1] = np.nan, np.inf
    stats = {}
    for sparse_rows in (False, True):
        batch = _vector_batch(X, sparse_rows)
        assert (dense_rows(batch.column("features"), 7) is None) == sparse_rows
        stats[sparse_rows] = _PartitionStats()
        stats[sparse_rows].update(batch, "features", "label", "weight")
    dense, csr = stats[False], stats[True]
    assert dense.nonfinite[0] == csr.nonfinite[0] == 3  # the first in row order: X[20, 3]
    assert np.isnan(dense.nonfinite[1]) and np.isnan(csr.nonfinite[1])
    assert dense.nonzeros == csr.nonzeros == np.count_nonzero(X)
    np.testing.assert_allclose(dense.sum, csr.sum, rtol=1e-12)
    np.testing.assert_allclose(dense.sq_sum, csr.sq_sum, rtol=1e-12)
    assert dense.weight_sum == csr.weight_sum
    # An array<double> column is dense too.
    assert dense_rows(pa.array([[1.0, 2.0], [3.0, 4.0]]), 2).tolist() == [[1, 2], [3, 4]]


def test_rows_decode_into_the_order_asked_for_from_dense_and_sparse_batches():
    from svb_spark.spark.data import table_to_arrays

    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 4)) * (rng.random((9, 4)) < 0.6)
    labels = np.arange(9)
    batches = [_vector_batch(X[:4], False, labels[:4]), _vector_batch(X[4:], True, labels[4:])]
    weights = np.concatenate([np.arange(4), np.arange(5)]) + 0.5
    order = rng.permutation(9)
    for sparse_rows in (False, True):
        for ask in (None, order):
            rows, y, w = table_to_arrays(batches, "features", "label", "weight", 4, np.float32,
                                         sparse_rows, ask)  # fmt: skip
            picked = slice(None) if ask is None else ask
            rows = rows.toarray() if sparse_rows else rows
            np.testing.assert_array_equal(rows, X[picked].astype(np.float32))
            np.testing.assert_array_equal(w, weights[picked].astype(np.float32))
            assert rows.dtype == np.float32 and y.tolist() == labels[picked].tolist()
