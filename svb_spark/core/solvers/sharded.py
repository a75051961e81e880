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

Held-out rows (a validation column, or the rows validationFraction holds out) are judged as in
the replicated modes, with one difference: a row's verdict needs every block. At each epoch's
end every worker scores all held-out rows against its block and sends five numbers a row (its
partial normalizer, the label's margin where it owns the label, its best class and margin);
the held-out rows travel to every worker once, at the first epoch's end. The last pass over
the held-out rows runs as training steps do, from the best blocks.

Per worker and step: memory K D / P plus G rows; compute about 2 B K D (against (P + 1) B K D
replicated); bytes (P - 1) (B (D or 2 nnz) + 2 G), with no K term.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svb_spark.core import cost, numerics, wire
from svb_spark.core.partition import LocalPartition, stack_rows
from svb_spark.core.solvers.base import FitFacts, Outcome, Solver, newest_common
from svb_spark.core.solvers.stochastic import SgdSolver
from svb_spark.core.state import ReplicaState

# Held-out rows scored and judged at a time.
HELD_OUT_ROWS = 4096


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
    labels: tuple  # see Multinomial.label_margins
    exponentials: np.ndarray  # G x (this block's classes): exp(margin - row_max)
    row_max: np.ndarray
    row_sum: np.ndarray


class ShardedSolver(Solver):
    """One worker's block of classes, trained by SGD: a :class:`SgdSolver` of K / P classes
    (for its weights, step, objective history and stopping rules) and the two halves of its
    steps. The rows of step t + 1 travel with the normalizers of step t, so a step is one
    exchange; the rows a round brings are scored in the next round's compute phase."""

    name = "sgd"
    replicated = False
    scores_held_out = True

    def start(self, initial: tuple[np.ndarray, np.ndarray] | None) -> None:
        # Not Solver.start: the block keeps the history and the step.
        config, plan, rank = self.config, self.plan, self.rank
        if not config.loss.blocks:
            raise ValueError(
                f"exchange='sharded' needs the softmax's normalizer split by classes, but the "
                f"{config.loss.name} loss does not split by blocks of classes; use another "
                "exchange mode"
            )
        self.first, stop = class_blocks(config.num_classes, plan.num_workers)[rank]
        if initial is not None:
            initial = (initial[0][self.first : stop], initial[1][self.first : stop])
        block_config = config.for_classes(self.first, stop)
        self.block = SgdSolver(block_config, plan, rank, initial)
        self._scored: _ScoredStep | None = None  # the step whose normalizers go out next
        self._received: list[wire.ShardMessage] | None = None  # rows to score next
        self._held_out: tuple | None = None  # this worker's held-out rows (X, y, w)
        self._all_held_out: tuple | None = None  # every worker's, gathered once

    @classmethod
    def memory_bytes(cls, facts: FitFacts) -> tuple[int, str]:
        K, D, B, P = facts.num_classes, facts.num_features, facts.batch_size, facts.num_workers
        size = np.dtype(facts.dtype).itemsize
        nonzeros = facts.nonzeros_per_row if facts.sparse else None
        formula = (
            f"ceil(numClasses / numWorkers) = {-(-K // P)} classes x (numFeatures + 1) x "
            f"{size} bytes plus numWorkers x batchSize = {P * B} rows"
        )
        return cost.sharded_worker_bytes(K, D, P, B, size, nonzeros), formula

    @property
    def history(self) -> list[float]:
        return self.block.history

    @property
    def validation_history(self) -> list[float]:
        return self.block.validation_history

    @property
    def validation_accuracy(self) -> list[float]:
        return self.block.validation_accuracy

    @property
    def step(self) -> int:
        return self.block.step

    @property
    def done(self) -> bool:
        return self.block.done

    @property
    def stop_reason(self) -> str:
        return self.block.stop_reason

    def compute(self, data: LocalPartition) -> wire.ShardMessage:
        """Score the rows the last round brought, then send their normalizers with this
        worker's rows of the next step."""
        block, config = self.block, self.config
        if self._held_out is None:
            self._held_out = data.held_out or (data.X[:0], data.y[:0], data.w[:0])
        if self._received is not None:
            self._scored, self._received = self.score(self._received), None
        pending = self._scored is not None
        next_step = block.step + pending
        message = wire.ShardMessage(
            next_step, self.rank, num_features=config.num_features, num_labels=config.num_classes
        )
        if pending:
            message.row_max, message.row_sum = self._scored.row_max, self._scored.row_sum
        if block.pass_left:  # the last pass: the held-out rows, step by step
            position = block.last_pass_steps - block.pass_left + pending
            if position < block.last_pass_steps:
                batch = data.held_out_batch(position, config, self.rank)
                message.X, message.y, message.w = batch
        elif next_step < block.total_steps:
            rows = data.batch_rows(next_step, self.plan, config, self.rank)
            message.X, message.y, message.w = data.X[rows], data.y[rows], data.w[rows]
        return message

    def encode(self, message: wire.ShardMessage):
        return wire.encode_shard(message)

    def decode(self, batch) -> wire.ShardMessage:
        return wire.decode_shard(batch)

    def apply(self, messages: list[wire.ShardMessage], rounds) -> None:
        """Update this block with the scored step and every block's normalizers; keep the
        rows of the next step for scoring."""
        block = self.block
        received = messages
        if self._scored is not None:
            scored, self._scored = self._scored, None
            loss = self.update(scored, messages)
            if block.pass_left:
                block.step += 1
                block.pass_left -= 1
            elif block.count_step(loss, scored.weight):
                self._close_epoch(rounds)
                if block.epochs_over:
                    received = None  # the rows of a training step that will not be taken
        if not block.done:
            self._received = received

    def _close_epoch(self, rounds) -> None:
        """Sum every worker's share of the epoch's loss and of the L2 penalty (one small
        exchange) and close the epoch on every worker alike; judge the held-out rows, and
        after the last epoch begin the last pass over them (see SgdSolver.end_epochs)."""
        block = self.block
        sums = rounds.sum_up([block.epoch_loss, block.penalty_value()])
        loss, penalty = (float(sum(values)) for values in zip(*sums))
        block.close_epoch(loss / max(block.epoch_weight, 1e-300) + penalty)
        if block.validation_pending:
            block.record_validation([self.held_out_sums(rounds)])
        if block.epochs_over and block.config.holdout_fraction and block.validation_history:
            block.begin_last_pass()

    def held_out_sums(self, rounds) -> list[float]:
        """Every held-out row's (loss, weight, correctly predicted weight) sums and the most
        held-out rows a worker holds, the same on every worker: each scores all held-out rows
        against its block and sends their verdicts, a chunk of rows at a time (one side
        exchange each)."""
        X, y, w, most = self._gathered_held_out(rounds)
        loss, sums, config = self.config.loss, np.zeros(3), self.config
        # A chunk's margins take HELD_OUT_ROWS x the block's classes; its verdicts stay within
        # the largest message the mode allows (ClassSharded.max_message_bytes: K B rows').
        chunk = min(HELD_OUT_ROWS, config.num_classes * config.batch_size)
        for start in range(0, y.shape[0], chunk):
            rows = slice(start, start + chunk)
            mine = loss.block_verdicts(self.margins(X[rows]), y[rows], self.first)
            received = rounds.side(wire.encode_sums(mine.ravel()))
            blocks = [wire.sums_array(m).reshape(-1, len(mine[0])) for m in received]
            sums += loss.held_out_sums(blocks, y[rows], w[rows])
        return [*sums.tolist(), float(most)]

    def _gathered_held_out(self, rounds) -> tuple:
        """Every worker's held-out rows (X, y, w) in the same order on every worker, and the
        most a worker holds; gathered at the first call, batchSize rows a worker at a time."""
        if self._all_held_out is None:
            X, y, w = self._held_out
            counts = [int(count) for (count,) in rounds.sum_up([y.shape[0]])]
            size, parts = self.config.batch_size, []
            for start in range(0, max(counts), size):
                mine = wire.ShardMessage(-1, self.rank, num_features=self.config.num_features,
                                         num_labels=self.config.num_classes)  # fmt: skip
                rows = slice(start, start + size)
                mine.X, mine.y, mine.w = X[rows], y[rows], w[rows]
                parts += [wire.decode_shard(m) for m in rounds.side(wire.encode_shard(mine))]
            self._all_held_out = (
                stack_rows([m.X for m in parts]) if parts else X,
                stack_rows([m.y for m in parts]) if parts else y,
                np.concatenate([m.w for m in parts]) if parts else w,
                max(counts),
            )
        return self._all_held_out

    def score(self, messages: list[wire.ShardMessage]) -> _ScoredStep:
        """Stack every worker's rows of the next step and score them against this block."""
        X = stack_rows([m.X for m in messages])
        y = stack_rows([m.y for m in messages])
        w = np.concatenate([m.w for m in messages])
        margins = self.margins(X)
        weight = sum(float(m.w.sum(dtype=np.float64)) for m in messages)
        loss = self.config.loss
        labels = loss.label_margins(margins, y, self.first)
        row_max, row_sum = loss.partial_normalizers(margins)
        return _ScoredStep(X, w, weight, labels, margins, row_max, row_sum)

    def margins(self, X) -> np.ndarray:
        """Rows ``X`` (dense or CSR) scored against this block, in the training dtype."""
        weights, block = self.block.weights, self.block
        if block.lazy is not None:
            margins = block.lazy.sparse_raw_margins(weights.W, weights.b, X, weights.factor)
        elif block.config.sparse:
            margins = numerics.sparse_raw_margins(weights.W, weights.b, X, weights.factor)
        else:
            return numerics.raw_margins(weights.W, weights.b, X)
        return margins.astype(weights.W.dtype, copy=False)

    def update(self, step: _ScoredStep, messages: list[wire.ShardMessage]) -> float:
        """Apply the scored step with every block's normalizers; returns the loss of the rows
        whose label this block owns."""
        block, config = self.block, self.block.config
        weights = block.weights
        normalizer = config.loss.log_normalizers(
            [m.row_max for m in messages], [m.row_sum for m in messages]
        )
        U, loss = config.loss.block_vectors(
            step.exponentials, step.row_max, normalizer, step.labels, step.w
        )
        lr = block.learning_rate(block.step)
        if config.sparse:
            weights.factor = block.sparse_step(
                weights.W, weights.factor, weights.b, U, step.X, step.weight, lr, block.lazy
            )
        else:
            numerics.apply_sufficient_vectors(
                weights.W, weights.b, U, step.X, step.weight, lr, block.penalty.l2,
                block.penalty.l2_scale, config.fit_intercept,
            )  # fmt: skip
            block.penalize(weights.W, weights.b, lr)
        return loss

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        return self.block.current()

    def outcome(self) -> Outcome:
        return self.block.outcome()

    def state(self) -> ReplicaState:
        return self.block.state()

    def restore(self, state: ReplicaState) -> None:
        self.block.restore(state)

    def save(self, store, data: LocalPartition) -> int:
        """Every worker writes its own block; there is no replica."""
        store.write_block(self.rank, self.state())
        return 1

    @classmethod
    def steps_seen(cls, store, rank: int) -> list[int]:
        return store.block_steps(rank)

    @classmethod
    def common_step(cls, seen: list[list[int]]) -> int | None:
        return newest_common(seen)

    @classmethod
    def load(cls, store, data: LocalPartition, rank: int, step: int) -> ReplicaState:
        return store.read_block(rank, step)
