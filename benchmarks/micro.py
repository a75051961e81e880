"""Microbenchmarks that calibrate the cost model and measure the exchange latency targets.

Everything numeric runs on one thread (``threadpoolctl``), because every worker of the
benchmark cluster owns exactly one core. Each figure is the median of several repeats.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import Callable

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
    """A context manager limiting numpy's BLAS (and OpenMP) to one thread."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def gemm_seconds(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Median seconds of one float32 ``(m x k) @ (k x n)`` product on one thread."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    with one_thread():
        return median_seconds(lambda: np.matmul(a, b, out=out), repeats=repeats)


def peak_gemm_flops(size: int = 1024) -> float:
    """Single-core sgemm rate (flop/s) of a ``size`` cube, the rate large shapes reach."""
    return 2.0 * size**3 / gemm_seconds(size, size, size, repeats=3)


def elementwise_seconds(elements: int = 1 << 20) -> float:
    """Seconds per float32 element of streaming numpy work (the mean of exp, axpy and copy)."""
    x = np.random.default_rng(0).standard_normal(elements, dtype=np.float32)
    y = np.empty_like(x)
    with one_thread():
        exp = median_seconds(lambda: np.exp(x, out=y))
        axpy = median_seconds(lambda: np.subtract(y, np.float32(0.5) * x, out=y))
        copy = median_seconds(lambda: y.__setitem__(slice(None), x))
    return (exp + axpy + copy) / 3.0 / elements


def sv_message(batch_size: int, num_classes: int, num_features: int, rank: int = 0):
    """A sufficient-vector message of the given shape, as the training loop builds it."""
    from svb_spark.exchange import codec

    rng = np.random.default_rng(rank)
    message = codec.RoundMessage(codec.SV, 0, rank, [batch_size], [float(batch_size)], [1.0])
    message.U = rng.standard_normal((batch_size, num_classes), dtype=np.float32)
    message.V = rng.standard_normal((batch_size, num_features), dtype=np.float32)
    return message


def codec_costs(batch_size: int, num_classes: int, num_features: int) -> tuple[float, float]:
    """(encode seconds per payload byte, decode seconds per message) of the library's codec."""
    from svb_spark.exchange import codec

    message = sv_message(batch_size, num_classes, num_features)
    encoded = codec.encode(message)
    nbytes = message.U.nbytes + message.V.nbytes
    encode = median_seconds(lambda: codec.encode(message), repeats=20)
    decode = median_seconds(lambda: codec.decode(encoded), repeats=20)
    return encode / nbytes, decode


def flight_exchange_seconds(
    workers: int, payload_bytes: int, steps: int = 200, timeout: float = 60.0
) -> float:
    """Median seconds of one ``FlightMeshExchange.all_gather`` with ``workers`` threads.

    Each thread is a worker with its own Flight server on 127.0.0.1, exchanging a record batch
    of ``payload_bytes`` (float32 values) per step, as the training loop does.
    """
    from svb_spark.exchange.flight import FlightMeshExchange

    secret = secrets.token_urlsafe(16)
    meshes = [FlightMeshExchange(r, workers, "127.0.0.1", secret, timeout) for r in range(workers)]
    for mesh in meshes:
        mesh.connect([m.location for m in meshes])
    values = np.zeros(max(1, payload_bytes // 4), dtype=np.float32)
    batch = pa.record_batch({"x": pa.array(values)})
    per_rank: list[list[float]] = [[] for _ in range(workers)]
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            for step in range(steps):
                started = time.perf_counter()
                meshes[rank].all_gather(step, batch)
                per_rank[rank].append(time.perf_counter() - started)
        except BaseException as error:  # re-raised in the caller below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(workers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for mesh in meshes:
            mesh.close()
    if errors:
        raise errors[0]
    # Skip the first steps: gRPC opens its channels lazily on the first call.
    return statistics.median(t for times in per_rank for t in times[min(10, steps // 4) :])


def spark_job_seconds(spark, repeats: int = 7) -> float:
    """Median seconds of a trivial Spark job with one task per executor."""
    sc = spark.sparkContext
    rdd = sc.parallelize(range(2), 2)
    return median_seconds(lambda: rdd.map(lambda x: x).count(), repeats=repeats, warmup=2)


def all_gather_seconds(spark, workers: int = 2, calls: int = 4) -> float:
    """Median seconds of one ``BarrierTaskContext.allGather`` of a tiny message.

    One barrier job with ``workers`` tasks; each task times ``calls`` allGathers after a first
    barrier() that lines the tasks up, so stage start-up is not counted.
    """

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
    times = rdd.barrier().mapPartitions(task).collect()
    return statistics.median(times)


def loop_overheads(batch_size: int = 32, repeats: int = 3) -> dict[str, float]:
    """Fixed seconds per step of each phase of the training loop, on one worker, one thread.

    Runs ``svb_spark.worker.train_in_process`` on one worker and K = D = 4 for a few hundred
    steps: GEMMs and copies cost nothing there, so what each phase takes is the fixed cost every
    step pays (Python bookkeeping, Arrow schema work). The minimum over ``repeats`` runs, since
    other work on a shared machine only ever adds time.
    """
    from svb_spark import worker

    rng = np.random.default_rng(0)
    rows = 300 * batch_size
    X = rng.standard_normal((rows, 4))
    y = rng.integers(0, 4, rows)
    config = worker.TrainingConfig(
        num_classes=4, num_features=4, batch_size=batch_size, max_iter=1, tol=0.0,
        reg_param=0.0, fit_intercept=True, step_size=1.0, seed=0, dtype="float32",
        scale=np.ones(4),
    )  # fmt: skip
    best: dict[str, float] = {}
    with one_thread():
        for _ in range(repeats):
            (result,) = worker.train_in_process([(X, y, np.ones(rows))], config)
            for phase, seconds in result.seconds.items():
                per_step = seconds / max(result.steps, 1)
                best[phase] = min(best.get(phase, per_step), per_step)
    return best


def loop_latency(batch_size: int = 32) -> float:
    """Seconds per step the training loop spends exchanging between two worker processes.

    Two processes run ``svb_spark.worker.train`` over a Flight mesh on K = D = 4, so the
    exchange phase is the latency as the loop sees it: the Flight round trip plus waiting for
    the peer, with nothing to send.
    """
    from benchmarks.peers import train_over_flight_processes

    rng = np.random.default_rng(0)
    rows = 2 * 300 * batch_size
    X = rng.standard_normal((rows, 4))
    y = rng.integers(0, 4, rows)
    result = train_over_flight_processes(X, y, 2, batch_size=batch_size)
    return result["seconds"]["exchange"] / max(result["steps"], 1)


def svb_step_components(
    batch_size: int, num_classes: int, num_features: int, workers: int
) -> dict[str, float]:
    """Seconds of the library's own compute and apply functions at one shape, one thread.

    ``compute``: :func:`svb_spark.solver.sufficient_vectors` of B rows; ``apply``:
    :func:`svb_spark.solver.apply_sufficient_vectors` of P B rows; ``forward_gemm`` and
    ``rebuild_gemm``: the bare sgemm of each at the same shapes.
    """
    from svb_spark import solver

    rng = np.random.default_rng(0)
    B, K, D, P = batch_size, num_classes, num_features, workers
    W = np.zeros((K, D), dtype=np.float32)
    b = np.zeros(K, dtype=np.float32)
    X = rng.standard_normal((B, D), dtype=np.float32)
    y = rng.integers(0, K, B)
    w = np.ones(B, dtype=np.float32)
    U = rng.standard_normal((P * B, K), dtype=np.float32)
    V = rng.standard_normal((P * B, D), dtype=np.float32)
    with one_thread():
        compute = median_seconds(lambda: solver.sufficient_vectors(W, b, X, y, w), repeats=9)
        apply = median_seconds(
            lambda: solver.apply_sufficient_vectors(W, b, U, V, float(P * B), 1e-6, 0.0),
            repeats=9,
        )
    return {
        "compute": compute,
        "apply": apply,
        "forward_gemm": gemm_seconds(B, D, K, repeats=9),
        "rebuild_gemm": gemm_seconds(K, P * B, D, repeats=9),
    }


def jvm_gemm_flops(spark, size: int = 512) -> float | None:
    """The driver JVM's dgemm rate (flop/s) through MLlib's BLAS, or None if unreachable.

    The matrices are allocated inside the JVM (zeros: BLAS does not skip them), so Py4J only
    carries the call; the driver JVM was started with one BLAS thread, like the executors.
    """
    try:
        jvm = spark._jvm
        gateway = spark.sparkContext._gateway
        blas = jvm.dev.ludovic.netlib.blas.BLAS.getInstance()
        n = size * size
        a = gateway.new_array(jvm.double, n)
        b = gateway.new_array(jvm.double, n)
        c = gateway.new_array(jvm.double, n)
        seconds = median_seconds(
            lambda: blas.dgemm("N", "N", size, size, size, 1.0, a, size, b, size, 0.0, c, size),
            repeats=3,
        )
        return 2.0 * size**3 / seconds
    except Exception:
        return None
