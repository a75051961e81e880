"""Arrow <-> numpy decoding of Spark ML vectors, without Spark."""

import numpy as np
import pyarrow as pa

from svb_spark.data import VECTOR_STRUCT as VECTOR
from svb_spark.data import is_vector_struct, vector_sizes, vectors_to_dense


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
    from svb_spark.data import vectors_to_csr

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
