"""The methods under comparison, SVB and MLlib, fitted on the same cached partitions; the
training loop's seconds of an SVB fit; one epoch of the loop in processes outside Spark."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

# A fit reaches another's accuracy when it is at most this far below it (half a point).
TARGET_MARGIN = 0.005


@dataclass
class FitPoint:
    """One fit: its maxIter, wall seconds, held-out accuracy and whatever else it reported."""

    iterations: int
    seconds: float
    accuracy: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class PeerFailed(RuntimeError):
    """A peer could not finish a fit; ``reason`` is its own error, ``seconds`` the time spent."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds = seconds


def held_out_accuracy(W: np.ndarray, b: np.ndarray, X, y: np.ndarray) -> float:
    """Accuracy of ``argmax(X W^T + b)`` (``X`` dense or CSR), both models' prediction."""
    scores = np.asarray(X @ W.T) + b
    return float((scores.argmax(axis=1) == y).mean())


def _accuracy(model, X, y) -> float:
    W, b = model.coefficientMatrix.toArray(), model.interceptVector.toArray()
    return held_out_accuracy(W, b, X, y)


def jvm_failure_reason(error: BaseException) -> str:
    """The JVM's own reason from a Py4J trace: its first OutOfMemoryError line, else the first
    naming an Error or Exception, else the first line."""
    lines = [line.strip().lstrip(": ") for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    causes = [line for line in lines if "OutOfMemoryError" in line] or [
        line for line in lines if "Error" in line or "Exception" in line
    ]
    return (causes[0] if causes else lines[0])[:300]


# FitPoint.extra of an SVB fit: key -> attribute of model.summary.
SUMMARY_FIELDS = {
    "epochs": "totalIterations", "steps": "steps", "converged": "converged",
    "exchange": "exchange", "solver": "solver", "stop_reason": "stopReason",
    "num_workers": "numWorkers",
    "bytes_per_step": "bytesPerStep", "payload_bytes_sent": "payloadBytesSent",
    "framing_bytes_sent": "framingBytesSent", "predicted_bytes_per_step": "predictedBytesPerStep",
    "timings": "timings", "objective_history": "objectiveHistory",
    "validation_history": "validationHistory", "validation_accuracy": "validationAccuracy",
    "best_epoch": "bestEpoch",
}  # fmt: skip


def per_step(timings: dict, steps: int) -> dict[str, float]:
    """Seconds per step of each phase of the training loop, from a fit's total ``timings``."""
    from svb_spark.core.loop import ROUND_PHASES

    return {p: timings.get(p, 0.0) / max(steps, 1) for p in ROUND_PHASES}


def loop_seconds(timings: dict) -> float:
    """Seconds of an SVB fit's training loop, compute to apply: the fit without its setup."""
    from svb_spark.core.loop import ROUND_PHASES

    return sum(timings.get(p, 0.0) for p in ROUND_PHASES)


def timed_fit(estimator, frame) -> tuple[object, float]:
    """The model and the wall seconds of ``estimator.fit(frame)``."""
    with warnings.catch_warnings():
        # Short fits stop at maxIter by design: that is the point of most fits here.
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        model = estimator.fit(frame)
        return model, time.perf_counter() - started


def fit_svb(train_df, X_test, y_test, max_iter: int, **params) -> FitPoint:
    """Fit ``SVBLogisticRegression`` with its defaults plus ``params``, timed around ``fit``."""
    from svb_spark import SVBLogisticRegression

    model, seconds = timed_fit(SVBLogisticRegression(maxIter=max_iter, **params), train_df)
    record = {key: getattr(model.summary, name) for key, name in SUMMARY_FIELDS.items()}
    # The largest worker's peak RSS, where the workers report it.
    rss = [w.get("peak_rss") or 0 for w in model.summary.workers]
    record["peak_rss"] = max(rss, default=0) or None
    return FitPoint(record["epochs"], seconds, _accuracy(model, X_test, y_test), record)


def fit_mllib(train_df, X_test, y_test, max_iter: int, time_limit: float | None = None) -> FitPoint:
    """Fit MLlib's multinomial ``LogisticRegression`` (tol 1e-6, other params default); its
    jobs are cancelled after ``time_limit`` seconds. Raises :class:`PeerFailed` with the JVM's
    reason (an OutOfMemoryError, a cancellation) so the caller can record it."""
    from pyspark.ml.classification import LogisticRegression

    estimator = LogisticRegression(family="multinomial", maxIter=max_iter, tol=1e-6)
    sc = train_df.sparkSession.sparkContext
    group = f"benchmark-mllib-{time.monotonic_ns()}"
    finished = threading.Event()

    def cancel_after_limit() -> None:
        # Cancelling only reaches running jobs, and L-BFGS works on the driver between them:
        # keep cancelling until the fit returns.
        if not finished.wait(time_limit):
            while not finished.wait(0.5):
                sc.cancelJobGroup(group)

    sc.setJobGroup(group, f"MLlib LogisticRegression, maxIter={max_iter}", True)
    if time_limit is not None:
        threading.Thread(target=cancel_after_limit, daemon=True).start()
    started = time.perf_counter()
    try:
        model = estimator.fit(train_df)
    except Exception as error:  # the JVM's error, recorded as the peer's result
        seconds = time.perf_counter() - started
        reason = jvm_failure_reason(error)
        if time_limit is not None and seconds >= time_limit:
            reason = f"stopped after the {time_limit:.0f} s limit ({reason})"
        raise PeerFailed(reason, seconds) from None
    finally:
        finished.set()
        with contextlib.suppress(Exception):  # in local mode an OutOfMemoryError ends the JVM
            sc.setLocalProperty("spark.jobGroup.id", None)
            sc.setLocalProperty("spark.job.description", None)
    seconds = time.perf_counter() - started
    iterations = int(model.summary.totalIterations)
    accuracy = _accuracy(model, X_test, y_test)
    return FitPoint(iterations, seconds, accuracy, {"requested_max_iter": max_iter})


def _flight_worker(rank, workers, X, y, config, secret, hellos_out, hellos_in, results):
    """One worker process of :func:`train_over_flight_processes`."""
    from svb_spark.core.loop import train
    from svb_spark.core.partition import prepare_partition
    from svb_spark.core.solvers import solver_for
    from svb_spark.spark.task import limit_blas_threads, rendezvous
    from svb_spark.transport.flight import FlightMeshExchange

    limit_blas_threads(1)  # each worker owns one core, as on the cluster
    mesh = FlightMeshExchange(rank, workers, "127.0.0.1", secret, 120.0)

    def all_gather(hello: str) -> list[str]:  # through the parent process, in rank order
        hellos_out.put((rank, hello))
        return hellos_in.get(timeout=120)

    def load():
        return prepare_partition(X, y, np.ones(len(y)), config)

    try:
        met = rendezvous(all_gather, mesh, load, config)
        result = train(met.data, mesh, solver_for(config, met.plan, rank))
        results.put((rank, {"seconds": result.seconds, "steps": result.steps}))
    finally:
        mesh.close()


def one_epoch_config(X, y: np.ndarray, batch_size: int, **overrides):
    """The training config of one plain SGD epoch (float32, no penalty, no tol) on rows ``X``
    (dense, or CSR: scaled, not centered, as the library does) and labels ``y``."""
    from svb_spark.core.config import TrainingConfig

    sparse = hasattr(X, "indptr")
    mean = np.asarray(X.mean(axis=0)).ravel()
    square_mean = np.asarray((X.multiply(X) if sparse else X * X).mean(axis=0)).ravel()
    std = np.sqrt(np.maximum(square_mean - mean**2, 0.0))
    config = TrainingConfig.from_statistics(
        int(y.max()) + 1, X.shape[1], mean, std, 0.0 if sparse else 1.0,  # CSR in, CSR trained
        batch_size=batch_size, max_iter=1, tol=0.0, reg_param=0.0, step_size=1.0, seed=0,
        dtype="float32",
    )  # fmt: skip
    return dataclasses.replace(config, **overrides)


def train_over_flight_processes(X: np.ndarray, y: np.ndarray, workers: int, **params) -> dict:
    """One epoch of ``svb_spark.core.loop.train`` in ``workers`` processes over a Flight mesh on
    127.0.0.1, no Spark (more workers than the cluster has slots); ``X`` dense or CSR,
    ``params`` override the config. Returns rank 0's ``seconds`` per phase and ``steps``."""
    import multiprocessing
    import secrets

    from svb_spark import SVBLogisticRegression

    batch_size = params.pop("batch_size", None) or SVBLogisticRegression().getBatchSize()
    config = one_epoch_config(X, y, batch_size, **params)
    # spawn, not fork: this process runs a JVM gateway and gRPC threads that must not be forked.
    context = multiprocessing.get_context("spawn")
    hellos, results = context.Queue(), context.Queue()
    inboxes = [context.Queue() for _ in range(workers)]
    secret = secrets.token_urlsafe(16)
    shares = np.array_split(np.arange(len(y)), workers)
    processes = [
        context.Process(
            target=_flight_worker,
            args=(r, workers, X[s], y[s], config, secret, hellos, inboxes[r], results),
            daemon=True,
        )
        for r, s in enumerate(shares)
    ]
    for process in processes:
        process.start()
    try:
        gathered = [hello for _, hello in sorted(hellos.get(timeout=180) for _ in range(workers))]
        for inbox in inboxes:
            inbox.put(gathered)
        finished = dict(results.get(timeout=600) for _ in range(workers))
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    return finished[0]
