"""Test support: the training loop in threads over an in-process exchange, no Spark.

Tests compare it with the single-process reference SGD and with Spark fits; benchmarks time
the loop's fixed costs with it. The library itself never imports this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from svb_spark.core.config import TrainingConfig, make_plan
from svb_spark.core.loop import TrainingResult, train
from svb_spark.core.partition import prepare_partition
from svb_spark.core.solvers import solver_for, solver_type
from svb_spark.spark.checkpoint import CheckpointStore
from svb_spark.transport.local import LocalExchangeGroup


def train_in_process(
    partitions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    config: TrainingConfig,
    on_exchange: Callable[[int, int, np.ndarray, np.ndarray], None] | None = None,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
    resume_from: str | None = None,
    timeout: float = 120.0,
) -> list[TrainingResult]:
    """Train with one thread per partition over a :class:`LocalExchangeGroup`.

    ``partitions`` are raw ``(X, y, weights)`` blocks in rank order, with a fourth item, a
    boolean mask of held-out rows, when the fit has a validation column; ``on_exchange(rank, step,
    W, b)`` observes every replica; ``resume_from`` is a checkpoint directory whose newest
    complete checkpoint the fit goes on from, as a retried barrier stage does; ``timeout`` the
    seconds a worker waits for a peer's message. Returns every
    worker's result, indexed by rank.
    """
    curvature = solver_type(config).steps_by_curvature
    prepared = [
        prepare_partition(X.copy(), y, w, config, *rest, with_curvature=curvature)
        for X, y, w, *rest in partitions
    ]
    plan = make_plan(
        [p.rows for p in prepared], [p.curvature for p in prepared], config,
        [p.weight for p in prepared],
    )  # fmt: skip
    solvers = [solver_for(config, plan, rank, initial) for rank in range(len(prepared))]
    if resume_from is not None:
        store = CheckpointStore(resume_from)
        kind = solver_type(config)
        step = kind.common_step([kind.steps_seen(store, r) for r in range(len(prepared))])
        if step is not None:
            for rank, (data, solver) in enumerate(zip(prepared, solvers)):
                solver.restore(kind.load(store, data, rank, step))
    stores = [None] * len(prepared)
    if config.checkpoint_dir is not None:
        stores = [CheckpointStore(config.checkpoint_dir) for _ in prepared]
    group = LocalExchangeGroup(len(prepared), timeout=timeout)
    results: list[TrainingResult | None] = [None] * len(prepared)
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        observer = None
        if on_exchange is not None:

            def observer(step, W, b):
                on_exchange(rank, step, W, b)

        try:
            results[rank] = train(
                prepared[rank], group.member(rank), solvers[rank], observer, store=stores[rank]
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
