"""Microbenchmarks that calibrate the cost model and back the speed claims.

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


def peak_gemm_flops(size: int = 1024) -> float:
    """Single-core sgemm rate (flop/s) of a ``size`` cube, the rate large shapes reach."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    with one_thread():
        return 2.0 * size**3 / median_seconds(lambda: np.matmul(a, b, out=out), repeats=3)


def elementwise_seconds(elements: int = 1 << 20) -> float:
    """Seconds per float32 element of streaming numpy work (the mean of exp, axpy and copy)."""
    x = np.random.default_rng(0).standard_normal(elements, dtype=np.float32)
    y = np.empty_like(x)
    with one_thread():
        exp = median_seconds(lambda: np.exp(x, out=y))
        axpy = median_seconds(lambda: np.subtract(y, np.float32(0.5) * x, out=y))
        copy = median_seconds(lambda: y.__setitem__(slice(None), x))
    return (exp + axpy + copy) / 3.0 / elements


def encode_seconds_per_byte(batch_size: int, num_classes: int, num_features: int) -> float:
    """Seconds per payload byte of the library's codec encoding a sufficient-vector message."""
    from svb_spark.transport import codec

    rng = np.random.default_rng(0)
    message = codec.RoundMessage(codec.SV, 0, 0, [batch_size], [float(batch_size)], [1.0])
    message.U = rng.standard_normal((batch_size, num_classes), dtype=np.float32)
    message.V = rng.standard_normal((batch_size, num_features), dtype=np.float32)
    encode = median_seconds(lambda: codec.encode(message), repeats=20)
    return encode / (message.U.nbytes + message.V.nbytes)


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


def loop_overheads(
    batch_size: int = 32, repeats: int = 3, sparse: bool = False
) -> dict[str, float]:
    """Fixed seconds per step of each phase of the training loop: one worker, one thread,
    K = D = 4 (``sparse``: CSR rows, D = 64, 4 non-zeros), where GEMMs cost nothing. The
    minimum over ``repeats`` runs: other work on a shared machine only ever adds time."""
    from scipy import sparse as sp

    from benchmarks.peers import one_epoch_config
    from svb_spark.testing import train_in_process

    rng = np.random.default_rng(0)
    rows = 300 * batch_size
    y = rng.integers(0, 4, rows)
    if sparse:
        X = sp.random(rows, 64, density=4 / 64, format="csr", random_state=0)
        X.data[:] = 1.0
    else:
        X = rng.standard_normal((rows, 4))
    config = one_epoch_config(X, y, batch_size)
    best: dict[str, float] = {}
    with one_thread():
        for _ in range(repeats):
            (result,) = train_in_process([(X, y, np.ones(rows))], config)
            for phase, seconds in result.seconds.items():
                per_step = seconds / max(result.steps, 1)
                best[phase] = min(best.get(phase, per_step), per_step)
    return best


def loop_latency(batch_size: int = 32) -> float:
    """Seconds per step the training loop spends exchanging nothing (K = D = 4) between two
    worker processes over Flight: the round trip plus waiting for the peer."""
    from benchmarks.peers import train_over_flight_processes

    rng = np.random.default_rng(0)
    rows = 2 * 300 * batch_size
    X = rng.standard_normal((rows, 4))
    result = train_over_flight_processes(X, rng.integers(0, 4, rows), 2, batch_size=batch_size)
    return result["seconds"]["exchange"] / max(result["steps"], 1)


def jvm_gemm_flops(spark, size: int = 512) -> float | None:
    """The driver JVM's dgemm rate (flop/s) through MLlib's BLAS (one thread), or None.

    The matrices live in the JVM (zeros: BLAS does not skip them), so Py4J only carries the call.
    """
    try:
        jvm = spark._jvm
        gateway = spark.sparkContext._gateway
        blas = jvm.dev.ludovic.netlib.blas.BLAS.getInstance()
        a, b, c = (gateway.new_array(jvm.double, size * size) for _ in range(3))
        seconds = median_seconds(
            lambda: blas.dgemm("N", "N", size, size, size, 1.0, a, size, b, size, 0.0, c, size),
            repeats=3,
        )
        return 2.0 * size**3 / seconds
    except Exception:
        return None


def sparse_product_flops(batch_size: int = 64, num_classes: int = 200, seed: int = 0) -> float:
    """Rate (flop/s, one thread) of a text-like CSR batch (about 50 non-zeros a row) times the
    dense columns it touches, and of its transpose times U: ``2 nnz K`` flops each. Not GEMMs:
    scipy walks the non-zeros one by one."""
    from svb_spark.datasets import planted_sparse

    X, _ = planted_sparse(rows=batch_size, num_features=1 << 16, num_classes=num_classes,
                          seed=seed)  # fmt: skip
    parts = step_components(X, batch_size, num_classes, workers=1, repeats=15, seed=seed)
    return 2.0 * 2 * X.nnz * num_classes / (parts["forward_product"] + parts["rebuild_product"])


def step_components(
    X, batch_size: int, num_classes: int, workers: int, repeats: int = 9, seed: int = 0
) -> dict[str, float]:
    """Median seconds, on one thread, of the two halves of an SVB step on rows of ``X`` (dense
    or CSR): ``compute`` (the sufficient vectors of B rows) and ``apply`` (the rebuild from P B
    rows), and of the bare products inside them, ``forward_product`` and ``rebuild_product``
    (sgemm for dense rows; CSR-times-dense on a feature-major replica for CSR rows)."""
    from svb_spark.core import numerics

    rng = np.random.default_rng(seed)
    B, K, D = batch_size, num_classes, X.shape[1]
    X = X.astype(np.float32)
    rows = rng.choice(X.shape[0], size=min(workers * B, X.shape[0]), replace=False)
    Xb, V = X[rows[:B]], X[rows]
    y, w, b = rng.integers(0, K, B), np.ones(B, dtype=np.float32), np.zeros(K, dtype=np.float32)
    U = rng.standard_normal((V.shape[0], K), dtype=np.float32)
    n = float(V.shape[0])
    if hasattr(X, "indptr"):
        W = numerics.feature_major_zeros(K, D, np.float32)
        columns, local = numerics._batch_columns(Xb)
        W_columns = np.ascontiguousarray(W.T[columns])
        _, local_all = numerics._batch_columns(V)
        calls = {
            "compute": lambda: numerics.sparse_sufficient_vectors(W, 1.0, b, Xb, y, w),
            "apply": lambda: numerics.apply_sparse_sufficient_vectors(
                W, 1.0, b, U, V, n, 1e-6, 0.0
            ),
            "forward_product": lambda: local @ W_columns,
            "rebuild_product": lambda: local_all.T @ U,
        }
    else:
        W = np.zeros((K, D), dtype=np.float32)
        margins, outer = np.empty((B, K), dtype=np.float32), np.empty_like(W)
        calls = {
            "compute": lambda: numerics.sufficient_vectors(W, b, Xb, y, w),
            "apply": lambda: numerics.apply_sufficient_vectors(W, b, U, V, n, 1e-6, 0.0),
            "forward_product": lambda: np.matmul(Xb, W.T, out=margins),
            "rebuild_product": lambda: np.matmul(U.T, V, out=outer),
        }
    with one_thread():
        return {name: median_seconds(call, repeats=repeats) for name, call in calls.items()}


def rebuild_in_place_vs_naive(
    num_classes: int, num_features: int, batch_size: int, workers: int = 2, repeats: int = 9
) -> dict:
    """The rebuild update of one step on one thread: the library's in-place sgemm (beta = 1,
    :func:`svb_spark.core.numerics.apply_sufficient_vectors`) against ``W -= lr * U.T @ V``, which
    allocates a K x D product and streams it through W again. Returns the shape, the median
    ``library_s`` and ``naive_s``, and ``speedup`` (naive / library)."""
    from svb_spark.core import numerics

    rng = np.random.default_rng(0)
    K, D, rows = num_classes, num_features, workers * batch_size
    W = np.zeros((K, D), dtype=np.float32)
    b = np.zeros(K, dtype=np.float32)
    U = rng.standard_normal((rows, K), dtype=np.float32)
    V = rng.standard_normal((rows, D), dtype=np.float32)
    lr = np.float32(1e-3 / rows)

    def naive():
        np.subtract(W, lr * U.T @ V, out=W)
        np.subtract(b, lr * U.sum(axis=0), out=b)

    with one_thread():
        library = median_seconds(
            lambda: numerics.apply_sufficient_vectors(W, b, U, V, float(rows), 1e-3, 0.0),
            repeats=repeats,
        )
        baseline = median_seconds(naive, repeats=repeats)
    shape = {"num_classes": K, "num_features": D, "batch_size": batch_size, "workers": workers}
    return {**shape, "library_s": library, "naive_s": baseline, "speedup": baseline / library}


def sparse_layouts(
    num_classes: int, num_features: int, batch_size: int, workers: int = 2, repeats: int = 9
) -> dict:
    """The sparse step on a feature-major W (the library's: each column of a batch is one
    contiguous row of ``W.T``) against a class-major one (K reads D floats apart).

    Text-like rows (about 50 non-zeros), a fresh batch every repeat as in training. ``apply``
    and ``forward`` (the library's sparse functions on P B and B rows) each hold the median
    seconds per layout and ``speedup`` (class-major / feature-major).
    """
    from svb_spark.core import numerics
    from svb_spark.datasets import planted_sparse

    K, D, B, P = num_classes, num_features, batch_size, workers
    rng = np.random.default_rng(0)
    count = repeats + 1  # one warm-up batch
    X, y = planted_sparse(rows=count * P * B, num_features=D, num_classes=K, seed=3)
    X = X.astype(np.float32)
    batches = [X[i * P * B : (i + 1) * P * B] for i in range(count)]
    U = rng.standard_normal((P * B, K), dtype=np.float32)
    w = np.ones(B, dtype=np.float32)
    b = np.zeros(K, dtype=np.float32)
    calls = {
        "apply": lambda W, X: numerics.apply_sparse_sufficient_vectors(
            W, 1.0, b, U, X, float(P * B), 1e-3, 0.0
        ),
        "forward": lambda W, X: numerics.sparse_sufficient_vectors(W, 1.0, b, X[:B], y[:B], w),
    }
    shape = {"num_classes": K, "num_features": D, "batch_size": B, "workers": P}
    out: dict = {**shape, "nonzeros_per_row": float(X.nnz) / X.shape[0], "apply": {}, "forward": {}}
    with one_thread():
        for name, W in (
            ("feature_major", numerics.feature_major_zeros(K, D, np.float32)),
            ("class_major", np.zeros((K, D), dtype=np.float32)),
        ):
            W.fill(0.0)  # touch every page, so no repeat pays the first-write faults
            for part, call in calls.items():
                cycle = iter(batches * 2)
                out[part][name] = median_seconds(
                    lambda W=W, call=call, cycle=cycle: call(W, next(cycle)), repeats=repeats
                )
    for part in calls:
        out[part]["speedup"] = out[part]["class_major"] / out[part]["feature_major"]
    return out
