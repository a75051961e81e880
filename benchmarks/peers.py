"""The methods under comparison, fitted on the same cached partitions, and time to accuracy.

Time to accuracy is measured by re-fitting, not estimated: a fit with ``maxIter = k`` stops at
exactly the k-th iterate of a longer fit (L-BFGS iterations and SVB epochs are deterministic
and neither depends on maxIter), so its wall time is the time a user waits for the k-th
iterate, setup included, and its held-out accuracy is that iterate's. The harness fits a
doubling ladder of k until the target is reached, then bisects between the last two rungs.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class FitPoint:
    """One fit: its maxIter, wall seconds, held-out accuracy and whatever else it reported."""

    iterations: int
    seconds: float
    accuracy: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def held_out_accuracy(W: np.ndarray, b: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of ``argmax(X W^T + b)``: both models' prediction without thresholds."""
    return float(((X @ W.T + b).argmax(axis=1) == y).mean())


def time_to_target(
    fit: Callable[[int], FitPoint],
    final: FitPoint,
    target: float,
    ladder: list[int],
    refine: int = 2,
) -> dict:
    """Wall time until held-out accuracy first reaches ``target``, by re-fitting.

    Parameters
    ----------
    fit : callable
        ``fit(k)`` trains with ``maxIter = k`` and returns its :class:`FitPoint`.
    final : FitPoint
        The full fit (its ``iterations`` are the iterations it actually ran).
    target : float
        Accuracy to reach.
    ladder : list of int
        Candidate iteration counts, ascending; those at or above ``final.iterations`` are
        skipped (the final fit stands for them).
    refine : int
        Bisection steps between the last rung below the target and the first at or above it.

    Returns
    -------
    dict
        ``seconds`` and ``iterations`` of the first fit found at or above the target (None if
        even the final fit is below it), ``bracket`` (the last iteration count known to be below
        the target) and ``curve``, every fit made, ordered by iterations.
    """
    points = {final.iterations: final}
    low, high = 0, None
    for k in ladder:
        if k >= final.iterations:
            break
        points[k] = fit(k)
        if points[k].accuracy >= target:
            high = k
            break
        low = k
    if high is None:
        high = final.iterations if final.accuracy >= target else None
    for _ in range(refine if high is not None else 0):
        middle = (low + high) // 2
        if middle <= low or middle >= high:
            break
        points[middle] = fit(middle)
        if points[middle].accuracy >= target:
            high = middle
        else:
            low = middle
    curve = [points[k].to_dict() for k in sorted(points)]
    reached = points[high] if high is not None else None
    return {
        "target": target,
        "seconds": reached.seconds if reached else None,
        "iterations": reached.iterations if reached else None,
        "bracket": low,
        "curve": curve,
    }


def doubling_ladder(limit: int) -> list[int]:
    """1, 2, 4, ... below ``limit``."""
    ladder, k = [], 1
    while k < limit:
        ladder.append(k)
        k *= 2
    return ladder


def _summary_record(summary) -> dict:
    return {
        "epochs": summary.totalIterations,
        "steps": summary.steps,
        "converged": summary.converged,
        "exchange": summary.exchange,
        "num_workers": summary.numWorkers,
        "bytes_per_step": summary.bytesPerStep,
        "payload_bytes_sent": summary.payloadBytesSent,
        "framing_bytes_sent": summary.framingBytesSent,
        "predicted_bytes_per_step": summary.predictedBytesPerStep,
        "timings": summary.timings,
        "objective_history": summary.objectiveHistory,
    }


def fit_svb(train_df, X_test, y_test, max_iter: int, **params) -> FitPoint:
    """Fit ``SVBLogisticRegression`` with its defaults plus ``params``, timed around ``fit``."""
    from svb_spark import SVBLogisticRegression

    estimator = SVBLogisticRegression(maxIter=max_iter, **params)
    with warnings.catch_warnings():
        # Short ladder fits stop at maxIter by design.
        warnings.simplefilter("ignore")
        started = time.perf_counter()
        model = estimator.fit(train_df)
        seconds = time.perf_counter() - started
    W = model.coefficientMatrix.toArray()
    b = model.interceptVector.toArray()
    record = _summary_record(model.summary)
    return FitPoint(record["epochs"], seconds, held_out_accuracy(W, b, X_test, y_test), record)


def fit_mllib(train_df, X_test, y_test, max_iter: int) -> FitPoint:
    """Fit MLlib's multinomial ``LogisticRegression`` (tol 1e-6, other params default)."""
    from pyspark.ml.classification import LogisticRegression

    estimator = LogisticRegression(family="multinomial", maxIter=max_iter, tol=1e-6)
    started = time.perf_counter()
    model = estimator.fit(train_df)
    seconds = time.perf_counter() - started
    W = model.coefficientMatrix.toArray()
    b = model.interceptVector.toArray()
    iterations = int(model.summary.totalIterations)
    accuracy = held_out_accuracy(W, b, X_test, y_test)
    return FitPoint(iterations, seconds, accuracy, {"requested_max_iter": max_iter})


def fit_sklearn(X_train, y_train, X_test, y_test) -> FitPoint:
    """scikit-learn's ``LogisticRegression`` (lbfgs, standardized input), single process."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - started
    iterations = int(np.max(model[-1].n_iter_))
    accuracy = float((model.predict(X_test) == y_test).mean())
    return FitPoint(iterations, seconds, accuracy, {"max_iter": 100, "C": 1.0})


def _flight_worker(rank, workers, X, y, config, secret, locations_out, locations_in, results):
    """One worker process of :func:`train_over_flight_processes`."""
    from threadpoolctl import threadpool_limits

    from svb_spark import worker
    from svb_spark.exchange.flight import FlightMeshExchange

    threadpool_limits(limits=1)  # each worker owns one core, as on the cluster
    data = worker.prepare_partition(X, y, np.ones(len(y)), config)
    mesh = FlightMeshExchange(rank, workers, "127.0.0.1", secret, 120.0)
    try:
        locations_out.put((rank, mesh.location, data.rows, data.curvature))
        peers = locations_in.get(timeout=120)
        mesh.connect([p[1] for p in peers])
        plan = worker.make_plan([p[2] for p in peers], [p[3] for p in peers], config)
        result = worker.train(data, mesh, config, plan)
        results.put((rank, {"seconds": result.seconds, "steps": result.steps}))
    finally:
        mesh.close()


def train_over_flight_processes(X: np.ndarray, y: np.ndarray, workers: int, **params) -> dict:
    """One epoch of the library's training loop in ``workers`` processes over a Flight mesh.

    No Spark: each process is a worker with its own Arrow Flight server on 127.0.0.1, running
    ``svb_spark.worker.train`` on its share of the (standardized) rows, with one BLAS thread.
    Used to measure more workers than the cluster has task slots (oversubscribed here).

    Returns
    -------
    dict
        Rank 0's ``seconds`` per phase and ``steps``.
    """
    import multiprocessing
    import secrets

    from svb_spark import worker

    std = X.std(axis=0)
    config = worker.TrainingConfig(
        num_classes=int(y.max()) + 1, num_features=X.shape[1], batch_size=32, max_iter=1,
        tol=0.0, reg_param=0.0, fit_intercept=True, step_size=1.0, seed=0, dtype="float32",
        scale=np.divide(1.0, std, out=np.zeros_like(std), where=std > 0), mean=X.mean(axis=0),
    )  # fmt: skip
    config = dataclasses.replace(config, **params)
    # spawn, not fork: this process runs a JVM gateway and gRPC threads that must not be forked.
    context = multiprocessing.get_context("spawn")
    locations, results = context.Queue(), context.Queue()
    inboxes = [context.Queue() for _ in range(workers)]
    secret = secrets.token_urlsafe(16)
    shares = np.array_split(np.arange(len(y)), workers)
    processes = [
        context.Process(
            target=_flight_worker,
            args=(r, workers, X[s], y[s], config, secret, locations, inboxes[r], results),
            daemon=True,
        )
        for r, s in enumerate(shares)
    ]
    for process in processes:
        process.start()
    try:
        peers = sorted(locations.get(timeout=180) for _ in range(workers))
        for inbox in inboxes:
            inbox.put(peers)
        finished = dict(results.get(timeout=600) for _ in range(workers))
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    return finished[0]
