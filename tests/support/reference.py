"""Single-process minibatch SGD, SAGA or averaged SGD over the global batch sequence the
workers would see,
and single-process L-BFGS over all rows at once.

The workers each shuffle their own partition per epoch and contribute ``batchSize`` rows per
step; this reference builds each step's global batch directly (rank order) and computes its
sufficient vectors in one call, with no exchange at all. SAGA's per-row memory is one table
for all rows here, where each worker keeps its own rows' part. The penalty (L2, L1, bounds) is
applied eagerly to the whole of W after every step, where sparse replicas pay it lazily.
"""

from __future__ import annotations

import math

import numpy as np

from svb_spark.core import numerics, standardization
from svb_spark.core.partition import stack_rows
from svb_spark.core.penalty import Penalty
from svb_spark.core.solvers import lbfgs
from svb_spark.core.stopping import epochs_settled


def _standardized(partitions, config):
    dtype = np.dtype(config.dtype)
    data = []
    for X, y, w in partitions:
        Xs = X.astype(np.float64)
        if config.mean is not None:
            Xs = Xs - config.mean
        Xs = (Xs * config.scale).astype(dtype)
        data.append((Xs, y, w.astype(dtype)))
    return data


def reference_lbfgs(partitions, config, initial=None):
    """L-BFGS on all rows in one process, from zero or from ``initial`` (W, b):
    (W, b, objective_history), standardized space."""
    X, y, w = (stack_rows(list(parts)) for parts in zip(*_standardized(partitions, config)))
    K, D = config.num_classes, config.num_features
    total = float(w.sum(dtype=np.float64))
    penalty = Penalty.of(config)

    def evaluate(x):
        W, b = x[: K * D].reshape(K, D), x[K * D :]
        loss, gradient = numerics.loss_and_gradient_sums(W, b, X, y, w, config.loss)
        objective, gradient = numerics.objective_and_gradient(
            loss, gradient, W, total, penalty.l2, penalty.l2_scale, config.fit_intercept
        )
        return objective, lbfgs.as_vector(gradient)

    start = np.zeros(K * (D + 1))
    if initial is not None:
        start[: K * D], start[K * D :] = np.ravel(initial[0]), initial[1]
    x, history, _ = lbfgs.minimize(
        evaluate, start, config.max_iter, config.tol,
        penalty.coordinate_l1(K, D), penalty.coordinate_bounds(K, D),
    )  # fmt: skip
    return x[: K * D].reshape(K, D), x[K * D :], history


def reference_sgd(partitions, config):
    """Returns (W, b, objective_history) in the standardized space."""
    if config.solver == "lbfgs":
        return reference_lbfgs(partitions, config)
    dtype = np.dtype(config.dtype)
    data = _standardized(partitions, config)
    steps = max(1, math.ceil(max(y.shape[0] for _, y, _ in data) / config.batch_size))
    curvature = max(numerics.curvature(X, w, config.fit_intercept) for X, _, w in data)
    base = numerics.base_learning_rate(config.step_size, curvature, config.loss.hessian_bound)
    penalty = Penalty.of(config, dtype)
    reg_scale = penalty.l2_scale

    W = np.zeros((config.num_classes, config.num_features), dtype)
    b = np.zeros(config.num_classes, dtype)
    if config.start_intercepts is not None:  # the loss's start, as the solvers take it
        b[...] = config.start_intercepts
    if penalty.bounded:
        penalty.project(W, b)
    saga = config.solver == "saga"
    A, a = np.zeros_like(W), np.zeros_like(b)
    memory = [np.zeros((y.shape[0], config.num_classes), dtype) for _, y, _ in data]
    total_weight = float(sum(w.sum(dtype=np.float64) for _, _, w in data))
    seen = 0.0
    sums = (0.0, 0.0, 0)  # averaged SGD: the sums of W and b after each step, and their count
    history = []
    for epoch in range(config.max_iter):
        orders = [
            np.random.default_rng([config.seed & 0xFFFFFFFF, rank, epoch]).permutation(y.shape[0])
            for rank, (_, y, _) in enumerate(data)
        ]
        lr = base if saga else numerics.learning_rate(base, epoch)
        loss_sum = weight_sum = 0.0
        for s in range(steps):
            picks = [o[s * config.batch_size : (s + 1) * config.batch_size] for o in orders]
            Xg = np.concatenate([X[p] for (X, _, _), p in zip(data, picks)])
            yg = stack_rows([y[p] for (_, y, _), p in zip(data, picks)])
            wg = np.concatenate([w[p] for (_, _, w), p in zip(data, picks)])
            U, loss = numerics.sufficient_vectors(W, b, Xg, yg, wg, config.loss)
            total = float(wg.sum(dtype=np.float64))
            if saga:
                dU = np.concatenate(
                    [
                        numerics.saga_delta(m, p, u)
                        for m, p, u in zip(memory, picks, _split(U, picks))
                    ]
                )
                scale = 1.0 if epoch else numerics.saga_seen_scale(seen, total_weight)
                numerics.apply_saga(
                    W, b, A, a, ("vectors", dU, Xg), total, total_weight, lr, penalty.l2,
                    reg_scale, scale, config.fit_intercept,
                )  # fmt: skip
                if penalty.active:
                    penalty.prox(W, b, lr)
                seen += total
            else:
                numerics.apply_sufficient_vectors(
                    W, b, U, Xg, total, lr, penalty.l2, reg_scale, config.fit_intercept
                )
                if penalty.active:
                    penalty.prox(W, b, lr)
                if config.solver == "asgd" and epoch > 0:  # the iterates after the first epoch
                    sums = (sums[0] + W, sums[1] + b, sums[2] + 1)
            loss_sum += loss
            weight_sum += total
        history.append(loss_sum / weight_sum + penalty.value(W))
        if epochs_settled(history, config.tol):
            break
    if config.solver == "asgd" and sums[2]:  # averaged SGD returns the mean of the iterates
        W, b = sums[0] / sums[2], sums[1] / sums[2]
        if penalty.bounded:
            penalty.project(W, b)
        return W, b, history
    return W, b, history


def _split(U, picks):
    """The rows of the global batch's U that each worker contributed, in rank order."""
    bounds = np.cumsum([len(p) for p in picks])[:-1]
    return np.split(U, bounds)


def worker_partitions(df, num_workers):
    """The (X, y, weights) each worker of a fit on ``df`` receives, in its training order."""
    from pyspark.sql import functions as F

    from svb_spark.spark.contract import FEATURES, LABEL, ROW_ID, WEIGHT, training_frame
    from svb_spark.spark.inspection import inspect_training_data

    stats = inspect_training_data(df, "features", "label", "weight", 0)
    frame = training_frame(df, "features", "label", "weight", num_workers, stats=stats)
    rows = frame.withColumn("pid", F.spark_partition_id()).collect()
    parts = []
    for rank in range(num_workers):
        mine = sorted((r for r in rows if r.pid == rank), key=lambda r: r[ROW_ID])
        X = np.array([r[FEATURES].toArray() for r in mine]).reshape(len(mine), -1)
        parts.append(
            (X, np.array([int(r[LABEL]) for r in mine]), np.array([r[WEIGHT] for r in mine]))
        )
    return parts


def reference_model(df, X, y, w, num_workers, **settings):
    """(W, b, objective history) in the original space, from numpy statistics of (X, w), the
    rows each worker of ``df`` would get and one global batch per step."""
    from svb_spark.core.config import TrainingConfig

    mean = (w @ X) / w.sum()
    variance = (w @ (X - mean) ** 2) / (w.sum() - (w * w).sum() / w.sum())
    config = TrainingConfig.from_statistics(
        int(y.max()) + 1, X.shape[1], mean, np.sqrt(variance), **settings
    )
    scale = config.scale
    partitions = worker_partitions(df, num_workers)
    if config.solver == "lbfgs":  # from MLlib's start, as a fit on Spark
        class_weights = np.bincount(y.astype(int), weights=w, minlength=2)
        b = lbfgs.mllib_intercepts(config, class_weights, float(w.sum()))
        initial = None if b is None else (np.zeros((config.num_classes, X.shape[1])), b)
        W_std, b_std, history = reference_lbfgs(partitions, config, initial)
    else:
        W_std, b_std, history = reference_sgd(partitions, config)
    W, b = standardization.unstandardize(W_std, b_std, mean, scale)
    return W, b, history
