"""Test support: the training loop in threads over an in-process exchange, no Spark.

Tests compare it with the single-process reference SGD and with Spark fits; benchmarks time
the loop's fixed costs with it. The library itself never imports this module.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import numpy as np

from svb_spark.core.solvers.lbfgs import train_lbfgs
from svb_spark.core.solvers.sharded import train_sharded
from svb_spark.core.training import (
    LBFGS,
    TrainingConfig,
    TrainingResult,
    checkpoints_seen,
    load_checkpoint,
    make_plan,
    prepare_partition,
    resume_step,
    train,
)
from svb_spark.spark.checkpoint import ReplicaState
from svb_spark.transport.codec import SHARDED
from svb_spark.transport.local import LocalExchangeGroup


def train_in_process(
    partitions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    config: TrainingConfig,
    on_exchange: Callable[[int, int, np.ndarray, np.ndarray], None] | None = None,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
    resume_from: str | None = None,
) -> list[TrainingResult]:
    """Train with one thread per partition over a :class:`LocalExchangeGroup`.

    ``partitions`` are raw ``(X, y, weights)`` blocks in rank order, with a fourth item, a
    boolean mask of held-out rows, when the fit has a validation column; ``on_exchange(rank, step,
    W, b)`` observes every replica; ``resume_from`` is a checkpoint directory whose newest
    complete checkpoint the fit goes on from, as a retried barrier stage does. Returns every
    worker's result, indexed by rank.
    """
    prepared = [prepare_partition(X.copy(), y, w, config, *rest) for X, y, w, *rest in partitions]
    plan = make_plan(
        [p.rows for p in prepared], [p.curvature for p in prepared], config,
        [p.weight for p in prepared],
    )  # fmt: skip
    resumes: list[ReplicaState | None] = [None] * len(prepared)
    if resume_from is not None:
        stored = dataclasses.replace(config, checkpoint_dir=resume_from)
        step = resume_step(stored, [checkpoints_seen(stored, r) for r in range(len(prepared))])
        for rank, data in enumerate(prepared):
            if step is not None:
                resumes[rank] = load_checkpoint(stored, data, rank, step)
    group = LocalExchangeGroup(len(prepared), timeout=config.exchange_timeout)
    results: list[TrainingResult | None] = [None] * len(prepared)
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        observer = None
        if on_exchange is not None:

            def observer(step, W, b):
                on_exchange(rank, step, W, b)

        fit = train_sharded if config.message_kind == SHARDED else train
        if config.solver == LBFGS:
            fit = train_lbfgs
        try:
            results[rank] = fit(
                prepared[rank],
                group.member(rank),
                config,
                plan,
                observer,
                None,
                initial,
                resumes[rank],
            )
        except BaseException as error:  # surfaced in the caller's thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(len(prepared))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]
