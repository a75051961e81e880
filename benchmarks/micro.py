"""Microbenchmarks, no Spark (``python -m benchmarks.micro``): the speed claims, each the
library's function against the alternative, side by side, and the sparse step against sgemm.
On one thread (a worker of the benchmark cluster owns one core); each figure a median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks.session import markdown_table
from benchmarks.workloads import power_of_two
from svb_spark.core import sparse


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def one_thread():
    """Limit numpy's and scipy's BLAS (and OpenMP) to one thread; scipy ships its own
    OpenBLAS, which threadpoolctl only sees once loaded."""
    import scipy.linalg.blas  # noqa: F401
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def rebuild_calls(num_classes: int, num_features: int, rows: int) -> tuple[dict, dict]:
    """The rebuild update of one step from ``rows`` rows of sufficient vectors, two ways: the
    library's in-place sgemm (beta = 1, :func:`svb_spark.core.numerics.apply_sufficient_vectors`)
    and ``W -= lr * U.T @ V``, which allocates a K x D product and streams it through W again.

    Returns ``calls`` (name -> a call that applies the update once) and ``models`` (name -> the
    ``(W, b)`` that call updates): after the same number of calls both hold the same model.
    """
    from svb_spark.core import numerics

    rng = np.random.default_rng(0)
    K, D = num_classes, num_features
    U = rng.standard_normal((rows, K), dtype=np.float32)
    V = rng.standard_normal((rows, D), dtype=np.float32)
    step, lr = 1e-3, np.float32(1e-3 / rows)
    models = {name: (np.zeros((K, D), np.float32), np.zeros(K, np.float32))
              for name in ("library", "naive")}  # fmt: skip

    def library():
        numerics.apply_sufficient_vectors(*models["library"], U, V, float(rows), step, 0.0)

    def naive():
        W, b = models["naive"]
        np.subtract(W, lr * U.T @ V, out=W)
        np.subtract(b, lr * U.sum(axis=0), out=b)

    return {"library": library, "naive": naive}, models


def rebuild_in_place_vs_naive(
    num_classes: int, num_features: int, batch_size: int, workers: int = 2, repeats: int = 9
) -> dict:
    """:func:`rebuild_calls` timed on one thread: the shape, the median ``library_s`` and
    ``naive_s``, and ``speedup`` (naive / library)."""
    calls, _ = rebuild_calls(num_classes, num_features, workers * batch_size)
    with one_thread():
        library = median_seconds(calls["library"], repeats=repeats)
        baseline = median_seconds(calls["naive"], repeats=repeats)
    shape = {"num_classes": num_classes, "num_features": num_features,
             "batch_size": batch_size, "workers": workers}  # fmt: skip
    return {**shape, "library_s": library, "naive_s": baseline, "speedup": baseline / library}


LAYOUTS = ("feature_major", "class_major")


def cycling(call, W, batches: list):
    """A call of ``call(W, V)`` with the next of ``batches`` each time: training reads a fresh
    batch every step, so no call finds the previous one's rows in cache."""
    batch = iter(batches * 1000)
    return lambda: call(W, next(batch))


def sparse_layout_calls(
    num_classes: int, num_features: int, batch_size: int, workers: int = 2, batches: int = 10
) -> tuple[dict, dict, dict]:
    """The sparse step on a feature-major W (the library's: each column of a batch is one
    contiguous row of ``W.T``) and on a class-major one (K reads D floats apart).

    Text-like rows (about 50 non-zeros), a fresh batch every call as in training. Returns
    ``calls`` (part -> layout -> a call: ``apply``, the library's sparse update from P B rows;
    ``forward``, its sufficient vectors of B rows, which the call returns), ``replicas``
    (layout -> the K x D replica the calls use) and the shape with ``nonzeros_per_row``.
    """
    from svb_spark.core import numerics
    from svb_spark.datasets import planted_sparse

    K, D, B, P = num_classes, num_features, batch_size, workers
    rng = np.random.default_rng(0)
    X, y = planted_sparse(rows=batches * P * B, num_features=D, num_classes=K, seed=3)
    X = X.astype(np.float32)
    rows = [X[i * P * B : (i + 1) * P * B] for i in range(batches)]
    U = rng.standard_normal((P * B, K), dtype=np.float32)
    w, b = np.ones(B, dtype=np.float32), np.zeros(K, dtype=np.float32)
    replicas = {"feature_major": numerics.feature_major_zeros(K, D, np.float32),
                "class_major": np.zeros((K, D), dtype=np.float32)}  # fmt: skip
    for W in replicas.values():
        W.fill(0.0)  # touch every page, so no call pays the first-write faults

    def apply(W, V):
        return numerics.apply_sparse_sufficient_vectors(W, 1.0, b, U, V, float(P * B), 1e-3, 0.0)

    def forward(W, V):
        return numerics.sparse_sufficient_vectors(W, 1.0, b, V[:B], y[:B], w)

    calls = {part: {layout: cycling(call, replicas[layout], rows) for layout in LAYOUTS}
             for part, call in (("apply", apply), ("forward", forward))}  # fmt: skip
    shape = {"num_classes": K, "num_features": D, "batch_size": B, "workers": P,
             "nonzeros_per_row": float(X.nnz) / X.shape[0]}  # fmt: skip
    return calls, replicas, shape


def sparse_layouts(
    num_classes: int, num_features: int, batch_size: int, workers: int = 2, repeats: int = 9
) -> dict:
    """:func:`sparse_layout_calls` timed on one thread: the shape, and for ``apply`` and
    ``forward`` the median seconds per layout and ``speedup`` (class-major / feature-major)."""
    calls, _, shape = sparse_layout_calls(num_classes, num_features, batch_size, workers)
    out: dict = dict(shape)
    with one_thread():
        for part, by_layout in calls.items():
            out[part] = {layout: median_seconds(call, repeats=repeats)
                         for layout, call in by_layout.items()}  # fmt: skip
            out[part]["speedup"] = out[part]["class_major"] / out[part]["feature_major"]
    return out


def text_rows(rows: int, num_features: int, tokens: int = 70, vocabulary: int = 50_000, seed=0):
    """Text-like CSR rows (float32): ``tokens`` words a row drawn by a Zipf law (exponent 1.1)
    from ``vocabulary`` words hashed into ``num_features`` columns, with counts as values;
    70 tokens give about 50 distinct non-zeros a row."""
    from scipy import sparse

    rng = np.random.default_rng(seed)
    law = np.arange(1, vocabulary + 1, dtype=np.float64) ** -1.1
    words = rng.choice(vocabulary, size=(rows, tokens), p=law / law.sum())
    hashed = rng.integers(0, num_features, size=vocabulary)[words].ravel()
    X = sparse.csr_matrix(
        (np.ones(hashed.size, np.float32), hashed, np.arange(0, hashed.size + 1, tokens)),
        shape=(rows, num_features),
    )
    X.sum_duplicates()
    return X


def sparse_step_calls(
    num_classes: int, num_features: int, batch_size: int, workers: int = 2, batches: int = 10
) -> tuple[dict, dict, dict]:
    """The sparse step of a feature-major replica two ways: the library's compiled loops
    (:mod:`svb_spark.core.sparse`, in place) and the formulation they replaced (renumber the
    batch's C distinct columns, scipy's ``@``, gather, update and scatter C x K rows of ``W.T``).
    Text-like rows (:func:`text_rows`), a fresh batch every call. Returns ``calls`` (part ->
    way -> a call: ``apply``, the update by P B rows; ``forward``, the class scores of B rows),
    ``replicas`` (way -> the replica its apply updates) and the step's shape."""
    from svb_spark.core import numerics
    from svb_spark.core.sparse import batch_columns  # the renumbering the alternative did

    K, D, B, P = num_classes, num_features, batch_size, workers
    X = text_rows(batches * P * B, D, seed=3)
    rows = [X[i * P * B : (i + 1) * P * B] for i in range(batches)]
    U = np.random.default_rng(0).standard_normal((P * B, K), dtype=np.float32)
    b = np.zeros(K, dtype=np.float32)
    step = 1e-3 / (P * B)
    replicas = {way: numerics.feature_major_zeros(K, D, np.float32) for way in WAYS}
    for W in replicas.values():
        W.fill(0.0)  # touch every page, so no call pays the first-write faults

    def library_apply(W, V):
        numerics.apply_sparse_sufficient_vectors(W, 1.0, b, U, V, float(P * B), 1e-3, 0.0)

    def alternative_apply(W, V):
        columns, local = batch_columns(V)
        W.T[columns] -= W.dtype.type(step) * np.asarray(local.T @ U)
        b[...] -= W.dtype.type(step) * U.sum(axis=0)

    def library_forward(W, V):
        return numerics.sparse_raw_margins(W, b, V[:B])

    def alternative_forward(W, V):
        columns, local = batch_columns(V[:B])
        return np.asarray(local @ W.T[columns]) + b

    ways = {"apply": (library_apply, alternative_apply),
            "forward": (library_forward, alternative_forward)}  # fmt: skip
    calls = {part: {way: cycling(call, replicas[way], rows) for way, call in zip(WAYS, pair)}
             for part, pair in ways.items()}  # fmt: skip
    # The floor of any update of those rows: each of a step's C rows read and written once
    # (the library's apply of one non-zero per distinct column).
    once = [_one_per_column(r) for r in rows]
    calls["touch"] = {"library": cycling(library_apply, replicas["library"], once)}
    shape = {"num_classes": K, "num_features": D, "batch_size": B, "workers": P,
             "nonzeros_per_row": X.nnz / X.shape[0],
             "nonzeros_per_step": float(np.mean([r.nnz for r in rows])),
             "forward_nonzeros": float(np.mean([r[:B].nnz for r in rows])),
             "columns_per_step": float(np.mean([np.unique(r.indices).size for r in rows])),
             }  # fmt: skip
    return calls, replicas, shape


WAYS = ("library", "alternative")


def _one_per_column(V):
    """CSR rows with V's shape and one non-zero in each of V's distinct columns."""
    from scipy import sparse

    columns = np.unique(V.indices).astype(np.int32)
    indptr = np.linspace(0, len(columns), V.shape[0] + 1).astype(np.int32)
    return sparse.csr_matrix((np.ones(len(columns), V.dtype), columns, indptr), shape=V.shape)


def sparse_step_rates(
    num_classes: int, num_features: int, batch_size: int, workers: int = 2, repeats: int = 21
) -> dict:
    """:func:`sparse_step_calls` timed on one thread, against BLAS's sgemm.

    For ``apply`` and ``forward``: each way's median seconds and GFLOP/s (2 K nnz flops),
    ``speedup`` (alternative / library). ``gemm_gflops``: sgemm's rate on ``U^T`` (K x P B)
    times a dense P B x C block, C a step's distinct columns; ``gemm_same_gflops``: on a P B x
    (nnz / P B) block, the step's own multiply-adds. ``*_ratio``: a GEMM rate over the
    library's. ``apply.touch_s``: the floor of any update, the library's apply of one non-zero
    per distinct column (each of C rows of ``W.T`` read and written once); ``touch_gb_s``."""
    from scipy.linalg import blas

    calls, _, shape = sparse_step_calls(num_classes, num_features, batch_size, workers)
    K, rows = num_classes, batch_size * workers
    rng = np.random.default_rng(1)
    U = rng.standard_normal((rows, K), dtype=np.float32)
    dense = rng.standard_normal((rows, round(shape["columns_per_step"])), dtype=np.float32)
    same = rng.standard_normal((rows, round(shape["nonzeros_per_step"] / rows)), dtype=np.float32)
    out: dict = dict(shape)
    with one_thread():
        for name, block in (("gemm_gflops", dense), ("gemm_same_gflops", same)):
            seconds = median_seconds(lambda b=block: blas.sgemm(1.0, U.T, b), repeats=repeats)
            out[name] = 2.0 * K * block.size / seconds / 1e9
        touch = median_seconds(calls.pop("touch")["library"], repeats=repeats)
        for part, by_way in calls.items():
            nonzeros = shape["nonzeros_per_step" if part == "apply" else "forward_nonzeros"]
            timed = {way: median_seconds(call, repeats=repeats) for way, call in by_way.items()}
            out[part] = {**{f"{way}_s": t for way, t in timed.items()},
                         **{f"{way}_gflops": 2.0 * K * nonzeros / t / 1e9
                            for way, t in timed.items()},
                         "speedup": timed["alternative"] / timed["library"]}  # fmt: skip
            for gemm in ("gemm", "gemm_same"):
                out[part][f"{gemm}_ratio"] = out[f"{gemm}_gflops"] / out[part]["library_gflops"]
    out["apply"]["touch_s"] = touch
    out["apply"]["touch_gb_s"] = 8.0 * K * shape["columns_per_step"] / touch / 1e9
    return out


def sparse_step_table(results: list[dict]) -> str:
    """:func:`sparse_step_rates` as a markdown table, one row per shape and part."""
    rows = []
    for r in results:
        shape = (f"K={r['num_classes']}, D={power_of_two(r['num_features'])}, "
                 f"{r['nonzeros_per_row']:.0f} nnz/row, C={r['columns_per_step']:.0f}")  # fmt: skip
        step_rows = r["workers"] * r["batch_size"]
        for part, count in (("apply", step_rows), ("forward", r["batch_size"])):
            t = r[part]
            rows.append([f"{part} ({count} rows)", shape, _ms(t["library_s"]),
                         _ms(t["alternative_s"]), f"{t['speedup']:.1f}x",
                         _ms(t["touch_s"]) if "touch_s" in t else "-",
                         f"{t['library_gflops']:.1f}",
                         f"{r['gemm_gflops']:.0f} / {r['gemm_same_gflops']:.0f}",
                         f"{t['gemm_ratio']:.1f}x / {t['gemm_same_ratio']:.1f}x"])  # fmt: skip
    header = ("part | shape (float32, one thread) | library ms | alternative ms | speedup | "
              "rows touched once ms | library GFLOP/s | sgemm GFLOP/s (P B x C / same flops) | "
              "sgemm / library")  # fmt: skip
    return markdown_table(header, rows, "llrrrrrrr")


# The speed claims' shapes, (K, D, B) for the rebuild and the sparse layouts: the issue's
# shapes (rebuild K=1000, D=2048; sparse K=500, D=2^18), and the shapes of the dense and sparse
# sets the benchmark ran on first (K=200, D=256; K=100, D=2^15).
CLAIM_SHAPES = ([(1000, 2048, 32), (200, 256, 32)], [(500, 1 << 18, 16), (100, 1 << 15, 32)])


def speed_claims(rebuild: list[tuple], sparse: list[tuple]) -> dict:
    """Every speed claim at the given shapes: ``rebuild`` and ``sparse`` (K, D, B) each; two
    workers' rows per step."""
    return {
        "rebuild": [rebuild_in_place_vs_naive(*s) for s in dict.fromkeys(rebuild)],
        "sparse_layout": [sparse_layouts(*s) for s in dict.fromkeys(sparse)],
    }


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:,.3f}"


def claims_table(claims: dict) -> str:
    """The speed claims of :func:`speed_claims`, one row per claim and shape."""
    rows = [
        ["rebuild: in-place sgemm (beta=1) vs `W -= lr * U.T @ V`",
         f"K={r['num_classes']}, D={r['num_features']}, {r['workers']} x {r['batch_size']} rows",
         _ms(r["library_s"]), _ms(r["naive_s"]), f"{r['speedup']:.2f}x"]
        for r in claims["rebuild"]
    ]  # fmt: skip
    for r in claims["sparse_layout"]:
        shape = (f"K={r['num_classes']}, D={power_of_two(r['num_features'])}, {r['workers']} x "
                 f"{r['batch_size']} rows, {r['nonzeros_per_row']:.0f} nnz/row")  # fmt: skip
        for part, what in (("apply", shape), ("forward", f"{r['batch_size']} rows of the above")):
            t = r[part]
            rows.append([f"sparse {part}: feature-major vs class-major W", what,
                         _ms(t["feature_major"]), _ms(t["class_major"]),
                         f"{t['speedup']:.2f}x"])  # fmt: skip
    header = "claim | shape (float32, one thread) | library ms | alternative ms | speedup"
    return markdown_table(header, rows, "llrrr")


def main() -> int:
    """``python -m benchmarks.micro``: the speed claims at :data:`CLAIM_SHAPES`, and the sparse
    step against sgemm, side by side."""
    print(claims_table(speed_claims(*CLAIM_SHAPES)))
    print()
    rates = [sparse_step_rates(1000, 1 << 14, 32), sparse_step_rates(1000, 1 << 18, 32)]
    print(sparse_step_table(rates))
    # The products' two orders (svb_spark.core.sparse) on a class-sharded worker's block of
    # 10,000 classes: row order forced, then the library's choice, feature order.
    default = sparse.FEATURE_ORDER_ROW_BYTES
    for name, row_bytes in (("row order", np.inf), ("feature order", default)):
        sparse.FEATURE_ORDER_ROW_BYTES = row_bytes
        print(f"\n{name}:\n" + sparse_step_table([sparse_step_rates(10_000, 1 << 16, 32)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
