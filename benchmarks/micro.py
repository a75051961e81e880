"""Microbenchmarks: exchange latency, Spark's own costs, and the speed claims (each the
library's function against the alternative, side by side; ``python -m benchmarks.micro``).

Numeric work runs on one thread (each worker of the benchmark cluster owns one core); each
figure is the median of several repeats.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa


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


def flight_exchange_seconds(
    workers: int, payload_bytes: int, steps: int = 200, timeout: float = 60.0
) -> float:
    """Median seconds of one ``FlightMeshExchange.all_gather`` of ``payload_bytes`` between
    ``workers`` threads, each with its own Flight server on 127.0.0.1."""
    from svb_spark.transport.flight import FlightMeshExchange

    secret = secrets.token_urlsafe(16)
    meshes = [FlightMeshExchange(r, workers, "127.0.0.1", secret, timeout) for r in range(workers)]
    for mesh in meshes:
        mesh.connect([m.location for m in meshes])
    values = np.zeros(max(1, payload_bytes // 4), dtype=np.float32)
    batch = pa.RecordBatch.from_pydict({"x": pa.array(values)})

    def run(rank: int) -> list[float]:
        times = []
        for step in range(steps):
            started = time.perf_counter()
            meshes[rank].all_gather(step, batch)
            times.append(time.perf_counter() - started)
        # Skip the first steps: gRPC opens its channels lazily on the first call.
        return times[min(10, steps // 4) :]

    try:
        with ThreadPoolExecutor(workers) as pool:
            per_rank = list(pool.map(run, range(workers)))
    finally:
        for mesh in meshes:
            mesh.close()
    return statistics.median(t for times in per_rank for t in times)


def spark_job_seconds(spark, repeats: int = 7) -> float:
    """Median seconds of a trivial Spark job with one task per executor."""
    rdd = spark.sparkContext.parallelize(range(2), 2)
    return median_seconds(lambda: rdd.map(lambda x: x).count(), repeats=repeats, warmup=2)


def all_gather_seconds(spark, workers: int = 2, calls: int = 4) -> float:
    """Median seconds of one ``BarrierTaskContext.allGather`` of a tiny message, timed after a
    first barrier() so that stage start-up is not counted."""

    def task(iterator):
        import time as _time

        from pyspark import BarrierTaskContext

        context = BarrierTaskContext.get()
        context.barrier()
        for _ in range(calls):
            started = _time.perf_counter()
            context.allGather("x")
            yield _time.perf_counter() - started

    rdd = spark.sparkContext.parallelize(range(workers), workers)
    return statistics.median(rdd.barrier().mapPartitions(task).collect())


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

    def cycling(call, W):
        batch = iter(rows * 1000)
        return lambda: call(W, next(batch))

    def apply(W, V):
        return numerics.apply_sparse_sufficient_vectors(W, 1.0, b, U, V, float(P * B), 1e-3, 0.0)

    def forward(W, V):
        return numerics.sparse_sufficient_vectors(W, 1.0, b, V[:B], y[:B], w)

    calls = {part: {layout: cycling(call, replicas[layout]) for layout in LAYOUTS}
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


def digest_one_check_vs_whole(
    num_classes: int = 256, num_features: int = 2**18, repeats: int = 5
) -> dict:
    """A replica check's digest (one block of the replica) against hashing the whole replica,
    float32 and feature-major as a sparse fit holds it: the median ``one_check_s`` and
    ``whole_s``, and ``ratio`` (whole / one check)."""
    from svb_spark.core.weights import ReplicaWeights

    weights = ReplicaWeights(num_classes, num_features, np.float32, feature_major=True)
    weights.W.fill(1.0)
    one = median_seconds(lambda: weights.digest(0), repeats=repeats)  # a whole block
    whole = median_seconds(weights.digest, repeats=repeats)
    return {"num_classes": num_classes, "num_features": num_features,
            "blocks": weights.digest_blocks(), "one_check_s": one, "whole_s": whole,
            "ratio": whole / one}  # fmt: skip


def speed_claims(rebuild: list[tuple], sparse: list[tuple], digest: tuple) -> dict:
    """Every speed claim at the given shapes: ``rebuild`` and ``sparse`` (K, D, B) each,
    ``digest`` (K, D); two workers' rows per step."""
    return {
        "rebuild": [rebuild_in_place_vs_naive(*s) for s in dict.fromkeys(rebuild)],
        "sparse_layout": [sparse_layouts(*s) for s in dict.fromkeys(sparse)],
        "digest": [digest_one_check_vs_whole(*digest)],
    }


def main() -> int:
    """``python -m benchmarks.micro``: the speed claims at the shapes of a full run, side by
    side, without Spark."""
    from benchmarks.report import claims_table

    claims = speed_claims([(1000, 2048, 32), (200, 256, 32)],
                          [(500, 1 << 18, 16), (100, 1 << 15, 32)], (256, 1 << 18))  # fmt: skip
    print(claims_table({"claims": claims}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
