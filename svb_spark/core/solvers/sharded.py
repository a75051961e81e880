"""Class-sharded training: each worker owns one block of the classes, rows travel, W never.

Replicated SVB keeps all of ``W`` on every worker, so the largest model is what one worker
holds, and every worker applies every worker's update. Here worker ``r`` owns the rows
``W_r`` (about K / P classes x D) and their intercepts, as the vocabulary-parallel
cross-entropy of large language-model trainers does. One step on the global batch of G rows:

1. every worker sends its batch's rows (dense or CSR), labels and weights to every peer;
2. each worker scores all G rows against its classes and sends, per row, the max and the sum
   of exponentials of its block (2 numbers a row);
3. from these every worker has each row's softmax normalizer, forms its block of
   ``U = diag(w) (P - Y)`` and applies ``W_r <- W_r - lr U_r^T X / total_weight``.

Step 2 of step t travels with step 1 of step t + 1, so a step is one exchange. Every class has
one owner, so there are no replicas to keep equal: the fit is the same synchronous minibatch
SGD as the replicated modes, on the same global batches. A row's loss is counted by the worker
that owns its label; at each epoch's end one small exchange sums the workers' losses and L2
penalties into the epoch objective every worker then judges the same way.

Per worker and step: memory K D / P plus G rows; compute about 2 B K D (against (P + 1) B K D
replicated); bytes (P - 1) (B (D or 2 nnz) + 2 G), with no K term.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from svb_spark.core import numerics
from svb_spark.core.training import (
    ROUND_PHASES,
    LocalPartition,
    Plan,
    Replica,
    TrainingConfig,
    TrainingResult,
    epoch_checkpoint_due,
    result_of,
    stack_rows,
)
from svb_spark.spark.checkpoint import ReplicaState, write_block
from svb_spark.transport import Exchange, codec


def class_blocks(num_classes: int, num_workers: int) -> list[tuple[int, int]]:
    """The ``(first, stop)`` classes each rank owns: contiguous, sizes differing by at most 1."""
    if num_classes < num_workers:
        raise ValueError(
            f"the class-sharded mode needs at least one class per worker, but there are "
            f"{num_classes} classes and {num_workers} workers; use fewer workers or "
            "another exchange mode"
        )
    size, extra = divmod(num_classes, num_workers)
    bounds = [0]
    for rank in range(num_workers):
        bounds.append(bounds[-1] + size + (rank < extra))
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass
class _ScoredStep:
    """A step whose rows every worker has scored, waiting for the peers' normalizers."""

    X: np.ndarray  # the global batch, rank order: dense, or CSR
    w: np.ndarray
    weight: float  # the batch's total row weight, summed per worker in rank order
    labels: tuple  # see numerics.label_margins
    exponentials: np.ndarray  # G x (this block's classes): exp(margin - row_max)
    row_max: np.ndarray
    row_sum: np.ndarray


class ShardedWorker:
    """One worker's block of classes (a :class:`Replica` of K / P classes, for its weights,
    step, objective history and stopping rules) and the two halves of its steps."""

    def __init__(
        self,
        config: TrainingConfig,
        plan: Plan,
        rank: int,
        initial: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.first, stop = class_blocks(config.num_classes, plan.num_workers)[rank]
        if initial is not None:
            initial = (initial[0][self.first : stop], initial[1][self.first : stop])
        self.block = Replica(dataclasses.replace(config, num_classes=stop - self.first),
                             plan, initial)  # fmt: skip

    def score(self, messages: list[codec.ShardMessage]) -> _ScoredStep:
        """Stack every worker's rows of the next step and score them against this block."""
        weights = self.block.weights
        X = stack_rows([m.X for m in messages])
        y = np.concatenate([m.y for m in messages])
        w = np.concatenate([m.w for m in messages])
        if self.block.config.sparse:
            margins = numerics.sparse_raw_margins(weights.W, weights.b, X, weights.factor)
            margins = margins.astype(weights.W.dtype, copy=False)
        else:
            margins = numerics.raw_margins(weights.W, weights.b, X)
        weight = sum(float(m.w.sum(dtype=np.float64)) for m in messages)
        labels = numerics.label_margins(margins, y, self.first)
        row_max, row_sum = numerics.partial_normalizers(margins)
        return _ScoredStep(X, w, weight, labels, margins, row_max, row_sum)

    def update(self, step: _ScoredStep, messages: list[codec.ShardMessage]) -> float:
        """Apply the scored step with every block's normalizers; returns the loss of the rows
        whose label this block owns."""
        block, config = self.block, self.block.config
        weights = block.weights
        normalizer = numerics.log_normalizers(
            [m.row_max for m in messages], [m.row_sum for m in messages]
        )
        U, loss = numerics.block_sufficient_vectors(
            step.exponentials, step.row_max, normalizer, step.labels, step.w
        )
        common = (step.weight, block.learning_rate(block.step), config.reg_param,
                  block.reg_scale, config.fit_intercept)  # fmt: skip
        if config.sparse:
            weights.factor = numerics.apply_sparse_sufficient_vectors(
                weights.W, weights.factor, weights.b, U, step.X, *common
            )
        else:
            numerics.apply_sufficient_vectors(weights.W, weights.b, U, step.X, *common)
        return loss


def train_sharded(
    data: LocalPartition,
    exchange: Exchange,
    config: TrainingConfig,
    plan: Plan,
    on_exchange: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
    resume: ReplicaState | None = None,
) -> TrainingResult:
    """:func:`svb_spark.core.training.train` for the class-sharded mode: the same arguments, with
    ``resume`` this worker's own block checkpoint; the result holds this worker's block of
    ``W`` and ``b`` (see :func:`class_blocks`)."""
    rank = exchange.rank
    worker = ShardedWorker(config, plan, rank, initial)
    block = worker.block
    if resume is not None:
        block.restore(resume)
    resumed_from = block.step
    seconds = dict.fromkeys(ROUND_PHASES, 0.0)
    exchanges = checkpoints = 0
    scored: _ScoredStep | None = None
    while not block.done:
        t0 = time.perf_counter()
        next_step = block.step + (scored is not None)
        message = codec.ShardMessage(next_step, rank, num_features=config.num_features)
        if scored is not None:
            message.row_max, message.row_sum = scored.row_max, scored.row_sum
        if next_step < block.total_steps:
            rows = data.batch_rows(next_step, plan, config, rank)
            message.X, message.y, message.w = data.X[rows], data.y[rows], data.w[rows]
        t1 = time.perf_counter()
        batch = codec.encode_shard(message)
        t2 = time.perf_counter()
        received = exchange.all_gather(exchanges, batch)
        t3 = time.perf_counter()
        messages = [codec.decode_shard(m) for m in received]
        t4 = time.perf_counter()
        exchanges += 1
        if scored is not None:
            epochs = len(block.history)
            loss = worker.update(scored, messages)
            if block.count_step(loss, scored.weight):
                _close_epoch(block, exchange, exchanges)
            scored = None
            if on_exchange is not None:
                on_exchange(block.step, block.weights.W, block.weights.b)
            if on_epoch is not None:
                for epoch in range(epochs, len(block.history)):
                    on_epoch(epoch, block.history[epoch])
            if epoch_checkpoint_due(config, epochs, block):
                write_block(config.checkpoint_dir, rank, block.state())
                checkpoints += 1
        t5 = time.perf_counter()
        if not block.done:  # the rows of the next step came with this exchange: score them
            scored = worker.score(messages)
        t6 = time.perf_counter()
        for name, elapsed in zip(
            ROUND_PHASES, (t1 - t0 + t6 - t5, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
        ):
            seconds[name] += elapsed
    result = result_of(block, exchange, exchanges, seconds)
    result.resumed_from_step, result.checkpoints = resumed_from, checkpoints
    return result


def _close_epoch(block: Replica, exchange: Exchange, exchanges: int) -> None:
    """Sum every worker's share of the epoch's loss and of the L2 penalty (one small exchange,
    at a negative index apart from the steps') and close the epoch on every worker alike."""
    penalty = block.weights.penalty(block.config.reg_param, block.reg_scale)
    mine = codec.encode_sums([block.epoch_loss, penalty])
    sums = [codec.decode_sums(m) for m in exchange.all_gather(-2 * exchanges, mine)]
    loss, penalty = (float(sum(values)) for values in zip(*sums))
    block.close_epoch(loss / max(block.epoch_weight, 1e-300) + penalty)
