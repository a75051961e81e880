"""The sparse step's compiled products (svb_spark.core.sparse) against numpy's dense products
and scipy's own, in both replica layouts and both dtypes; the sparse SGD step against the dense
one; blocks of rows against their stack; the wire format's sparse messages."""

import numpy as np
import pyarrow as pa
import pytest
from scipy import sparse as sp

from svb_spark.core import numerics, sparse, wire
from svb_spark.core.penalty import LazyPenalty, Penalty

K, D = 7, 40


def _rows(n, seed=0, dtype=np.float32, canonical=True):
    """CSR rows with up to 7 non-zeros each; not canonical: unsorted, with repeated columns."""
    rng = np.random.default_rng(seed)
    indptr = np.concatenate([[0], np.cumsum(rng.integers(0, 8, size=n))])
    indices = rng.integers(0, D, size=indptr[-1])
    X = sp.csr_matrix((rng.standard_normal(indptr[-1]), indices, indptr), shape=(n, D))
    if canonical:
        X.sum_duplicates()
    return X.astype(dtype)


def _replica(layout, dtype, seed=1):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((K, D)).astype(dtype)
    if layout == "feature_major":
        W = numerics.feature_major_zeros(K, D, dtype)
        W[...] = values
        return W
    return values


def _tolerance(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


@pytest.mark.parametrize("canonical", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["feature_major", "class_major"])
def test_the_sparse_scores_equal_the_dense_product_and_scipys_bits(layout, dtype, canonical):
    X, W = _rows(9, canonical=canonical, dtype=dtype), _replica(layout, dtype)
    b = np.arange(K, dtype=dtype)
    margins = numerics.sparse_raw_margins(W, b, X, factor=0.5)
    assert margins.dtype == dtype
    np.testing.assert_allclose(margins, X.toarray() @ (0.5 * W.T) + b, **_tolerance(dtype))
    # scipy's CSR product runs the same loop over a contiguous W.T, whatever the layout.
    expected = np.asarray(X @ np.ascontiguousarray(W.T)) * dtype(0.5) + b
    assert np.array_equal(margins, expected)


def test_scores_of_rows_in_another_dtype_than_the_replica_are_in_the_wider_one():
    X, W = _rows(5, dtype=np.float64), _replica("feature_major", np.float32)
    margins = numerics.sparse_raw_margins(W, np.zeros(K, np.float32), X)
    assert margins.dtype == np.float64
    np.testing.assert_allclose(margins, X.toarray() @ W.T.astype(np.float64), rtol=1e-12)


@pytest.mark.parametrize("canonical", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["feature_major", "class_major"])
def test_the_sparse_step_equals_the_dense_step(layout, dtype, canonical):
    V = _rows(12, seed=2, dtype=dtype, canonical=canonical)
    U = np.random.default_rng(3).standard_normal((12, K)).astype(dtype)
    W, b = _replica(layout, dtype), np.zeros(K, dtype)
    W_dense, b_dense = W.copy(), b.copy()
    factor = numerics.apply_sparse_sufficient_vectors(W, 0.8, b, U, V, 6.0, 0.3, 0.1)
    # The dense step on the model factor * W, its decay folded in.
    W_dense *= dtype(0.8)
    numerics.apply_sufficient_vectors(W_dense, b_dense, U, V.toarray(), 6.0, 0.3, 0.1)
    assert factor == pytest.approx(0.8 * (1.0 - 0.3 * 0.1))
    if dtype == np.float32:  # both layouts take the same operations
        W_other = _replica("class_major" if layout == "feature_major" else "feature_major", dtype)
        numerics.apply_sparse_sufficient_vectors(W_other, 0.8, b.copy(), U, V, 6.0, 0.3, 0.1)
        assert np.array_equal(W_other, W)
    np.testing.assert_allclose(factor * W, W_dense, **_tolerance(dtype))
    np.testing.assert_allclose(b, b_dense, **_tolerance(dtype))


def test_blocks_of_rows_take_the_bits_of_their_stack_and_lazy_steps_accept_them():
    blocks = [_rows(5, seed=4), _rows(0, seed=5), _rows(7, seed=6)]
    U = np.random.default_rng(7).standard_normal((12, K)).astype(np.float32)
    replicas = [(_replica("feature_major", np.float32), np.zeros(K, np.float32)) for _ in "ab"]
    stacked = sp.vstack(blocks, format="csr")
    (W1, b1), (W2, b2) = replicas
    numerics.apply_sparse_sufficient_vectors(W1, 1.0, b1, U, stacked, 12.0, 0.5, 0.0)
    numerics.apply_sparse_sufficient_vectors(W2, 1.0, b2, U, blocks, 12.0, 0.5, 0.0)
    assert np.array_equal(W1, W2) and np.array_equal(b1, b2)

    penalty = Penalty(l1=0.05)
    for V in (stacked, blocks):
        W, b = replicas[0][0].copy(order="A"), np.zeros(K, np.float32)
        lazy = LazyPenalty(penalty, {}, D)
        lazy.step(W, 1.0, b, U, V, 12.0, 0.5)
        lazy.settle(W, 1.0)
        # The eager reference: the step, then the soft threshold of everything.
        W_ref, b_ref = replicas[0][0].copy(order="A"), np.zeros(K, np.float32)
        numerics.apply_sufficient_vectors(W_ref, b_ref, U, stacked.toarray(), 12.0, 0.5, 0.0)
        penalty.prox(W_ref, b_ref, 0.5)
        np.testing.assert_allclose(W, W_ref, rtol=1e-5, atol=1e-6)
        assert np.array_equal(W == 0, W_ref == 0)


def test_the_products_refuse_mismatched_shapes_instead_of_reading_past_the_arrays():
    W, V = _replica("feature_major", np.float32), _rows(6)
    with pytest.raises(ValueError):  # U has one row too few
        sparse.subtract_sparse_product(W.T, 1.0, np.ones((5, K), np.float32), V)
    wide = sp.csr_matrix((np.ones(1, np.float32), [D + 3], [0, 1]), shape=(1, D + 5))
    with pytest.raises(IndexError):  # a column beyond the replica's
        numerics.sparse_raw_margins(W, np.zeros(K, np.float32), wide)


def test_a_sparse_message_decodes_to_its_step_without_copies_and_from_sliced_columns():
    V = _rows(6)
    U = np.random.default_rng(0).standard_normal((6, K)).astype(np.float32)
    message = wire.RoundMessage(wire.SV, 3, 1, [6], [6.0], [1.5], U=U, V=V, num_features=D)
    back = wire.decode(wire.encode(message))
    u, v = back.step_vectors(0)
    assert u is back.U and v is back.V
    assert np.array_equal(u, U) and (v != V).nnz == 0
    # A column that is a slice of a longer one (as a chunk of a Table may be) keeps its rows.
    column = wire.encode(message).column("u")
    assert np.array_equal(wire._matrix(column.slice(2, 3)), U[2:5])
    chunked = pa.chunked_array([column.slice(0, 2), column.slice(2, 4)])
    assert np.array_equal(wire._matrix(chunked), U)


def test_the_sparse_step_benchmark_compares_the_same_step_two_ways():
    from benchmarks import micro

    calls, replicas, shape = micro.sparse_step_calls(20, 1 << 12, 8, batches=3)
    assert 40 < shape["nonzeros_per_row"] < 60
    assert shape["columns_per_step"] <= shape["nonzeros_per_step"]
    forward = {way: call() for way, call in calls["forward"].items()}
    assert np.array_equal(forward["library"], forward["alternative"])
    for _ in range(4):  # more calls than batches: the calls cycle through them
        for call in calls["apply"].values():
            call()
    library, alternative = replicas["library"], replicas["alternative"]
    assert library.T.flags.c_contiguous and np.abs(library).max() > 0
    np.testing.assert_allclose(library, alternative, rtol=1e-5, atol=1e-8)

    rates = micro.sparse_step_rates(20, 1 << 12, 8, repeats=3)
    for part in ("apply", "forward"):
        times = rates[part]
        assert times["speedup"] == pytest.approx(times["alternative_s"] / times["library_s"])
        assert times["gemm_ratio"] == pytest.approx(rates["gemm_gflops"] / times["library_gflops"])
    assert rates["apply"]["touch_s"] > 0
    assert "apply (16 rows)" in micro.sparse_step_table([rates])


def test_without_scipys_private_loops_the_products_fall_back_to_its_public_ones(monkeypatch):
    V, W = _rows(9, seed=8), _replica("feature_major", np.float32)
    U = np.random.default_rng(9).standard_normal((9, K)).astype(np.float32)
    compiled = W.copy(order="A")
    sparse.subtract_sparse_product(compiled.T, 0.5, U, V)
    margins = sparse.sparse_product(V, compiled.T)
    monkeypatch.setattr(sparse, "_loops", lambda: None)
    fallback = W.copy(order="A")
    sparse.subtract_sparse_product(fallback.T, 0.5, U, V)
    np.testing.assert_allclose(fallback, compiled, rtol=1e-5, atol=1e-6)
    assert np.array_equal(sparse.sparse_product(V, compiled.T), margins)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_class_rows_are_read_in_feature_order_with_the_same_bits(dtype, monkeypatch):
    wide = sparse.FEATURE_ORDER_ROW_BYTES // np.dtype(dtype).itemsize  # classes of a long row
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((D, wide)).astype(dtype)
    V = _rows(12, seed=4, dtype=dtype)  # 40 columns: every batch repeats some
    U = rng.standard_normal((12, wide)).astype(dtype)
    assert sparse._feature_order(V, rows) and not sparse._feature_order(V, rows[:, :-1].copy())
    tall = sp.vstack([V] * (sparse.FEATURE_ORDER_BATCH_BYTES // rows[0].nbytes // 12 + 1))
    assert not sparse._feature_order(tall.tocsr(), rows)  # its rows would not stay in cache
    margins, updated = sparse.sparse_product(V, rows), rows.copy()
    sparse.subtract_sparse_product(updated, 0.25, U, V)

    monkeypatch.setattr(sparse, "FEATURE_ORDER_ROW_BYTES", float("inf"))  # row order only
    assert not sparse._feature_order(V, rows)
    assert np.array_equal(sparse.sparse_product(V, rows), margins)
    assert np.array_equal(margins, V @ rows)
    row_order = rows.copy()
    sparse.subtract_sparse_product(row_order, 0.25, U, V)
    assert np.array_equal(updated, row_order)
    assert not np.array_equal(updated, rows)
