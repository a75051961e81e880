"""SAGA on sufficient vectors: SGD's round with a constant step that converges.

Each worker keeps the last U it computed for each of its own rows and sends
``dU = U_new - U_old`` instead of U (the same bytes); every replica keeps the average gradient
A (K x D) and a (K), updated by the same rebuilt outer products, and steps along it (see
:func:`svb_spark.core.numerics.apply_saga`). Dense rows, syncInterval 1.
"""

from __future__ import annotations

import math

import numpy as np

from svb_spark.core import numerics, wire
from svb_spark.core.partition import LocalPartition
from svb_spark.core.solvers.base import FitFacts, newest_common
from svb_spark.core.solvers.stochastic import SgdSolver, step_gradient, step_vectors
from svb_spark.core.state import ReplicaState


class SagaSolver(SgdSolver):
    """SAGA on sufficient vectors with a constant step (see :func:`numerics.apply_saga`).

    A worker sends ``dU = U - memory[rows]`` for its batch and keeps each of its rows' last
    ``U``; every replica keeps the average gradient ``A``, updated from the rebuilt update.
    """

    name = "saga"

    def _add_state(self) -> None:
        self.weights.state["A"] = np.zeros_like(self.weights.W)
        self.weights.state["a"] = np.zeros_like(self.weights.b)
        self._weight_seen = 0.0  # first epoch: the weight of the rows seen so far

    @classmethod
    def why_not(cls, facts: FitFacts) -> str | None:
        """SAGA applies each step's update at once (syncInterval 1). On sparse rows its
        average gradient costs a K x D pass per step, which plain SGD's sparse update
        avoids."""
        if facts.sparse:
            return "the features are sparse (stored as CSR rows), which train with SGD"
        if facts.sync_interval != 1:
            return f"syncInterval is {facts.sync_interval}; SAGA needs 1"
        return None

    @classmethod
    def memory_bytes(cls, facts: FitFacts) -> tuple[int, str]:
        # Each worker gets about rows / numWorkers rows (hashed, or kept input partitions
        # within 10% of that); 10% of slack.
        K, D, size = facts.num_classes, facts.num_features, np.dtype(facts.dtype).itemsize
        rows = math.ceil(1.1 * facts.num_rows / facts.num_workers)
        formula = (
            f"SAGA's (2 x numClasses x numFeatures + rows x numClasses) x {size} bytes "
            f"({facts.dtype}) = (2 x {K} x {D} + {rows} x {K}) x {size}"
        )
        return (2 * K * D + rows * K) * size, formula

    def schedule(self, step: int) -> float:
        """Constant: variance reduction lets SAGA converge without a decay."""
        return self.plan.base_learning_rate

    def own_vectors(self, data: LocalPartition, rows: np.ndarray, U: np.ndarray) -> np.ndarray:
        if self.pass_left:  # the held-out rows have no memory: the last pass is plain SGD
            return U
        return numerics.saga_delta(data.saga_memory(self.config.num_classes), rows, U)

    def apply_step(self, messages: list[wire.RoundMessage], j: int, weight: float, lr: float):
        if self.pass_left:
            return super().apply_step(messages, j, weight, lr)
        config, weights = self.config, self.weights
        # After the first epoch every row has been seen: A is the average over all of them.
        seen = 1.0
        if self.step < self.plan.steps_per_epoch:
            seen = numerics.saga_seen_scale(self._weight_seen, self.plan.total_weight)
        if not self.mode.sends_gradients:
            update = ("vectors", *step_vectors(messages, j))
        else:
            G = step_gradient(messages, j)
            update = ("gradient", G[:, :-1], G[:, -1])
        numerics.apply_saga(
            weights.W, weights.b, weights.state["A"], weights.state["a"], update, weight,
            self.plan.total_weight, lr, self.penalty.l2, self.penalty.l2_scale, seen,
            config.fit_intercept,
        )  # fmt: skip
        self.penalize(weights.W, weights.b, lr)
        self._weight_seen += weight

    def save(self, store, data: LocalPartition) -> int:
        """Every worker writes its own rows' memory of this step; rank 0 also the replica,
        keeping two, since until every worker has written its memory of the new step the
        step before is the newest whole checkpoint."""
        store.write_rows(self.rank, self.step, data.memory)
        if self.rank != 0:
            return 0
        store.write_replica(self.state(), keep=2)
        return 1

    @classmethod
    def steps_seen(cls, store, rank: int) -> list[int]:
        mine = set(store.rows_steps(rank))
        if rank == 0:
            mine &= set(store.replica_steps())
        return sorted(mine)

    @classmethod
    def common_step(cls, seen: list[list[int]]) -> int | None:
        return newest_common(seen)

    @classmethod
    def load(cls, store, data: LocalPartition, rank: int, step: int) -> ReplicaState:
        data.memory = store.read_rows(rank, step)
        return store.read_replica(step)
