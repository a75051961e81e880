"""The replicated minibatch solver: SGD (the paper's method), the base of SAGA and averaged SGD.

Every worker holds a full replica of ``W`` and ``b``. Every exchange it sends its message for
the last ``syncInterval`` steps (sufficient vectors, or the dense gradient in the baseline
mode) to all peers, and applies everyone's messages step by step in rank order. Every replica
starts equal and applies the same update, so the replicas stay equal: with ``syncInterval = 1``
the fit equals synchronous minibatch SGD on the global batch.

- :class:`SgdSolver`: a step of ``stepSize / L`` decaying as ``1 / sqrt(1 + epoch)``.
- :class:`~svb_spark.core.solvers.saga.SagaSolver` and
  :class:`~svb_spark.core.solvers.averaged.AsgdSolver` change what a step applies and what
  the model is; the round, the epochs and the stopping are this module's.

When the fit holds rows out by itself (validationFraction), they judge every epoch; once the
epochs are over, every replica goes back to the most accurate model and makes one last pass
over the held-out rows, so that no row is left unused.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from svb_spark.core import numerics, wire
from svb_spark.core.modes import MODES, ExchangeMode
from svb_spark.core.partition import LocalPartition, stack_rows
from svb_spark.core.penalty import LazyPenalty, Penalty
from svb_spark.core.solvers.base import Outcome, Solver, best_of
from svb_spark.core.state import ReplicaState
from svb_spark.core.stopping import (
    best_validation_epoch,
    epochs_settled,
    validation_stalled,
)
from svb_spark.core.weights import ReplicaWeights

# Held-out rows scored at a time (see SgdSolver.held_out_sums).
_SCORING_ROWS = 4096


class SgdSolver(Solver):
    """Minibatch SGD on a replica; the base of the other replicated solvers.

    :meth:`apply` applies all workers' messages of one exchange step by step, in rank order,
    and keeps the epoch objective and the stopping decision (tol, validation or maxIter), so
    that every replica stops after the same step without further communication.
    """

    name = "sgd"
    scores_held_out = True

    def start(self, initial: tuple[np.ndarray, np.ndarray] | None) -> None:
        super().start(initial)
        config = self.config
        dtype = np.dtype(config.dtype)
        # Sparse updates touch a few features of every class: store W feature-major for them.
        self.weights = ReplicaWeights(
            config.num_classes, config.num_features, dtype,
            feature_major=self.sparse_steps,
        )  # fmt: skip
        if initial is not None:  # a warm start, already in the standardized space
            self.weights.start_from(*initial)
        elif config.start_intercepts is not None:  # the loss's start (zero coefficients)
            self.weights.b[...] = config.start_intercepts
        self._add_state()
        self.validation_pending = False  # an epoch closed and its held-out loss is not in
        if config.validation_tol is not None:  # the best model yet, folded (factor 1)
            self.weights.state["best_W"] = np.zeros_like(self.weights.W)
            self.weights.state["best_b"] = np.zeros_like(self.weights.b)
        self.stopped_by_validation = False
        self.held_out = None  # this worker's held-out rows (X, y, w), seen by compute
        self.held_out_rows = 0  # the most held-out rows any worker holds
        self.last_pass_steps = 0  # steps of the last pass over them, once it has begun
        self.pass_left = 0  # and of those, the steps not applied yet
        self.pass_rate = 0.0  # and their step
        self.penalty = Penalty.of(config, dtype)
        # Sparse steps touch a few columns: their L1 thresholds and bounds are paid lazily.
        self.lazy = None
        if self.penalty.active and self.penalty.lazy_ok and self.sparse_steps:
            self.lazy = LazyPenalty(self.penalty, self.weights.state, config.num_features)
        if self.penalty.bounded:  # start within the box, as MLlib does
            self.penalty.project(self.weights.W, self.weights.b)
        self.converged = False
        self.epoch_loss = 0.0  # the loss sum of the current epoch's steps so far
        self.epoch_weight = 0.0  # and their row weight

    def _add_state(self) -> None:
        """Make the optimizer's state arrays, the same on every replica (none for SGD)."""

    @property
    def mode(self) -> type[ExchangeMode]:
        """The exchange mode this replica's steps travel in."""
        return MODES[self.config.exchange]

    @property
    def sparse_steps(self) -> bool:
        """Whether steps touch only their batch's columns (CSR rows, sufficient vectors)."""
        return self.config.sparse and not self.mode.sends_gradients

    def penalize(self, W: np.ndarray, b: np.ndarray, learning_rate: float, factor: float = 1.0):
        """The proximal part of a step on all of ``W`` (unless the penalty is lazy)."""
        if self.penalty.active and self.lazy is None:
            self.penalty.prox(W, b, learning_rate, factor)

    def sparse_step(self, W, factor, b, U, V, weight, learning_rate, lazy) -> float:
        """One step of CSR rows on the scaled replica ``factor * W``; the new factor."""
        config = self.config
        if lazy is not None:
            return lazy.step(W, factor, b, U, V, weight, learning_rate, config.fit_intercept)
        factor = numerics.apply_sparse_sufficient_vectors(
            W, factor, b, U, V, weight, learning_rate, self.penalty.l2, self.penalty.l2_scale,
            config.fit_intercept,
        )  # fmt: skip
        self.penalize(W, b, learning_rate, factor)
        return factor

    def penalty_value(self) -> float:
        """The penalty of the replica's model, its lazy debts paid first."""
        weights = self.weights
        if self.lazy is not None:
            self.lazy.settle(weights.W, weights.factor)
        return self.penalty.value(weights.W, weights.factor)

    # -- stopping -----------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return self.config.max_iter * self.plan.steps_per_epoch

    @property
    def epochs_over(self) -> bool:
        """Whether the epochs are over: by tol, by the held-out rows' verdict or at maxIter."""
        return self.converged or self.stopped_by_validation or self.step >= self.total_steps

    @property
    def done(self) -> bool:
        return self.epochs_over and not self.validation_pending and not self.pass_left

    @property
    def stop_reason(self) -> str:
        if self.stopped_by_validation:
            return "holdout" if self.config.holdout_fraction else "validation"
        return "tol" if self.converged else "maxIter"

    def count_step(self, loss_sum: float, weight: float) -> bool:
        """Count one applied step with its loss and row weight; True if it closed an epoch."""
        self.epoch_loss += loss_sum
        self.epoch_weight += weight
        self.step += 1
        return self.step % self.plan.steps_per_epoch == 0

    def close_epoch(self, objective: float) -> None:
        """Record the epoch objective and take the stopping decisions.

        The objective is the loss each step saw before its update, plus the penalty at the
        epoch's end; every replica computes the same number from the same messages.
        """
        self.history.append(objective)
        self.epoch_loss = self.epoch_weight = 0.0
        self.converged = epochs_settled(self.history, self.config.tol)
        self.validation_pending = self.config.validation_tol is not None

    def epoch_objective(self, loss: float, weight: float) -> float:
        """The mean loss of an epoch's steps plus the penalty at its end."""
        return loss / max(weight, 1e-300) + self.penalty_value()

    def judged(self) -> list[float]:
        """The held-out history that stops the fit and picks the model returned: the loss
        for a validation column (as MLlib's validationTol), the error for the rows
        validationFraction held out (as scikit-learn's SGDClassifier judges its validation
        fraction by accuracy). On many classes the two part ways: on generated text (1000
        classes) the held-out accuracy was best after the first epoch while the loss fell
        for eight more; on 1000 dense classes the loss was lowest after the first epoch while
        the accuracy rose for three more. Accuracy is what a default fit is judged by (for
        label sets, the rows' mean F1: see MultiLabel.correct_weight)."""
        if self.config.holdout_fraction:
            return [1.0 - accuracy for accuracy in self.validation_accuracy]
        return self.validation_history

    def held_out_stalled(self) -> bool:
        """Whether the judged held-out history has not improved by validationTol (relative)
        for VALIDATION_PATIENCE epochs."""
        return validation_stalled(self.judged(), self.config.validation_tol)

    def record_validation(self, sums: list[list[float]]) -> None:
        """Take every worker's held-out (loss, weight, correct weight, rows) sums of the
        epoch closed last.

        The weights have not moved since they were scored, so a new best is copied now; after
        VALIDATION_PATIENCE epochs without a validationTol improvement the fit stops.
        """
        loss, weight, correct = (sum(s[i] for s in sums) for i in range(3))
        self.held_out_rows = max(int(s[3]) for s in sums)
        self.validation_pending = False
        if weight <= 0.0:  # held-out rows of weight 0 judge nothing (the sums are global)
            return
        self.validation_history.append(loss / weight)
        self.validation_accuracy.append(correct / weight)
        judged = self.judged()
        if best_validation_epoch(judged) == len(judged) - 1:
            state, weights = self.weights.state, self.weights
            if self.lazy is not None:
                self.lazy.settle(weights.W, weights.factor)
            np.multiply(weights.W, weights.W.dtype.type(weights.factor), out=state["best_W"])
            state["best_b"][...] = weights.b
        self.stopped_by_validation = self.held_out_stalled()

    # -- one exchange -------------------------------------------------------------------------

    def learning_rate(self, step: int) -> float:
        """The step of global step ``step``: the solver's schedule, or the last pass's."""
        return self.pass_rate if self.pass_left else self.schedule(step)

    def schedule(self, step: int) -> float:
        """SGD's decaying step."""
        epoch = step // self.plan.steps_per_epoch
        return numerics.learning_rate(self.plan.base_learning_rate, epoch)

    def own_vectors(self, data: LocalPartition, rows: np.ndarray, U: np.ndarray) -> np.ndarray:
        """What this worker sends for its batch ``rows`` whose U it just computed."""
        return U

    def compute(self, data: LocalPartition) -> wire.RoundMessage:
        """This worker's message for the next exchange: up to ``syncInterval`` steps.

        With more than one step per exchange (bounded staleness), the worker applies its own
        vectors to a scratch copy at once, scaled as if every worker had contributed as many
        rows, so that its later steps see fresher weights; the replica itself is only changed
        by :meth:`apply`.
        """
        config, plan, rank = self.config, self.plan, self.rank
        self.held_out = data.held_out
        left = self.pass_left or self.total_steps - self.step
        steps = min(config.sync_interval, left)
        W, b, factor = self.weights.W, self.weights.b, self.weights.factor
        lazy = self.lazy
        if steps > 1:
            W, b = W.copy(order="A"), b.copy()
            lazy = None if lazy is None else lazy.copy()
        mode = self.mode
        sparse_sv = self.sparse_steps
        rows, weights, losses, Us, Vs, Gs = [], [], [], [], [], []
        for j in range(steps):
            step = self.step + j
            if self.pass_left:  # (SAGA's own_vectors leaves the held-out rows' U alone)
                position = self.last_pass_steps - self.pass_left + j
                batch_rows = None
                Xb, yb, wb = data.held_out_batch(position, config, rank)
            else:
                batch_rows = data.batch_rows(step, plan, config, rank)
                Xb, yb, wb = data.X[batch_rows], data.y[batch_rows], data.w[batch_rows]
            U, loss = self.vectors(W, factor, b, lazy, Xb, yb, wb)
            U = self.own_vectors(data, batch_rows, U)
            weight = float(wb.sum(dtype=np.float64))
            rows.append(int(Xb.shape[0]))
            weights.append(weight)
            losses.append(loss)
            if not mode.sends_gradients:
                Us.append(U)
                Vs.append(Xb)
            else:
                Gs.append(numerics.batch_gradient(U, Xb))
            if j < steps - 1:
                lr = self.learning_rate(step)
                if sparse_sv:
                    own_weight = weight * plan.num_workers
                    factor = self.sparse_step(W, factor, b, U, Xb, own_weight, lr, lazy)
                    continue
                own = (weight * plan.num_workers, lr, self.penalty.l2, self.penalty.l2_scale,
                       config.fit_intercept)  # fmt: skip
                if config.sparse:
                    numerics.apply_gradient(W, b, Gs[-1][:, :-1], Gs[-1][:, -1], *own)
                else:
                    numerics.apply_sufficient_vectors(W, b, U, Xb, *own)
                self.penalize(W, b, lr)
        message = wire.RoundMessage(mode.message_kind, self.step, rank, rows, weights, losses)
        message.num_features = config.num_features
        if self.validation_pending:  # the weights are still those the last epoch ended with
            message.validation = self.held_out_sums()
        if not mode.sends_gradients:
            message.U = np.concatenate(Us)
            message.V = stack_rows(Vs)
        else:
            message.G = np.concatenate(Gs)
        return message

    def encode(self, message: wire.RoundMessage):
        return wire.encode(message)

    def decode(self, batch) -> wire.RoundMessage:
        return wire.decode(batch)

    def apply(self, messages: list[wire.RoundMessage], rounds=None) -> None:
        """Apply one exchange's messages (indexed by rank) in (step, rank) order."""
        if messages[0].validation is not None:
            self.record_validation([m.validation for m in messages])
        passing = bool(self.pass_left)
        for j in range(messages[0].steps):
            if self.epochs_over and not passing:
                break  # an earlier step of this round ended the epochs: the rest is discarded
            lr = self.learning_rate(self.step)
            weight = sum(m.weight_sums[j] for m in messages)
            self.apply_step(messages, j, weight, lr)
            if passing:
                self.step += 1
                self.pass_left -= 1
                continue
            closed = self.count_step(sum(m.loss_sums[j] for m in messages), weight)
            self.after_step()
            if closed:
                self.close_epoch(self.epoch_objective(self.epoch_loss, self.epoch_weight))
        if self.epochs_over and not passing:
            self.end_epochs(rounds)

    def end_epochs(self, rounds) -> None:
        """After the last epoch: its held-out sums (one small exchange), then, when the fit
        held rows out by itself, the last pass over them from the most accurate model, at
        the step SGD would take in the epoch after that model's.

        Rows never trained on cost accuracy where rows are scarce: in one process the pass
        added 1.7 pt on 1000 dense classes of about 30 rows each, 0.5 pt on 1000 classes of
        text and 0.5 pt on 40 classes of 12,000 rows (docs/design.md, "Stopping"). The first
        epoch's step gained more on the first two but lost up to 3.7 pt on the third: on data
        SGD has settled, a large step over a tenth of the rows adds more noise than their
        information is worth.
        """
        if self.validation_pending:
            self.record_validation(rounds.sum_up(self.held_out_sums()))
        if self.config.holdout_fraction and self.validation_history:
            self.begin_last_pass()

    def begin_last_pass(self) -> None:
        """Go back to the most accurate model and plan one pass over the held-out rows: as
        many steps as the worker holding the most of them needs."""
        state, weights = self.weights.state, self.weights
        weights.start_from(state["best_W"], state["best_b"])
        if self.lazy is not None:  # the best model was settled when it was kept
            self.lazy.forgive()
        best = best_validation_epoch(self.judged())
        self.pass_rate = numerics.learning_rate(self.plan.base_learning_rate, best + 1)
        self.last_pass_steps = self.pass_left = math.ceil(
            self.held_out_rows / self.config.batch_size
        )

    def apply_step(self, messages: list[wire.RoundMessage], j: int, weight: float, lr: float):
        """Step ``j`` of a round: everyone's sufficient vectors, or their summed gradient."""
        config, weights, penalty = self.config, self.weights, self.penalty
        common = (weight, lr, penalty.l2, penalty.l2_scale, config.fit_intercept)
        if not self.mode.sends_gradients:
            U, V = step_vectors(messages, j, stacked=not config.sparse)
            if config.sparse:
                weights.factor = self.sparse_step(
                    weights.W, weights.factor, weights.b, U, V, weight, lr, self.lazy
                )
                return
            numerics.apply_sufficient_vectors(weights.W, weights.b, U, V, *common)
        else:
            G = step_gradient(messages, j)
            numerics.apply_gradient(weights.W, weights.b, G[:, :-1], G[:, -1], *common)
        self.penalize(weights.W, weights.b, lr)

    def after_step(self) -> None:
        """Anything every replica does after each applied step (none for SGD)."""

    def vectors(self, W, factor, b, lazy, X, y, w) -> tuple[np.ndarray, float]:
        """``(U, loss_sum)`` of rows ``X`` on the model ``factor * W``, ``b``, with ``lazy``'s
        debts paid on the columns they use (sparse rows with a lazy penalty)."""
        loss = self.config.loss
        if lazy is not None:
            return lazy.sparse_sufficient_vectors(W, factor, b, X, y, w, loss)
        if self.config.sparse:
            return numerics.sparse_sufficient_vectors(W, factor, b, X, y, w, loss)
        return numerics.sufficient_vectors(W, b, X, y, w, loss)

    def held_out_sums(self) -> list[float]:
        """This worker's held-out (loss, weight, correctly predicted weight, rows) sums at
        the replica's current weights."""
        sums = [0.0, 0.0, 0.0, 0.0]
        if self.held_out is None:
            return sums
        X, y, w = self.held_out
        sums[3] = float(y.shape[0])
        weights = self.weights
        # In chunks: all held-out rows at once would take rows x numClasses floats, twice.
        for start in range(0, y.shape[0], _SCORING_ROWS):
            rows = slice(start, start + _SCORING_ROWS)
            Xc, yc, wc = X[rows], y[rows], w[rows]
            U, loss = self.vectors(weights.W, weights.factor, weights.b, self.lazy, Xc, yc, wc)
            sums[0] += float(loss)
            sums[1] += float(wc.sum(dtype=np.float64))
            sums[2] += self.config.loss.correct_weight(U, yc, wc)
        return sums

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        return self.weights.W, self.weights.b

    def replica_weights(self) -> ReplicaWeights:
        return self.weights

    def outcome(self) -> Outcome:
        weights = self.weights
        if self.lazy is not None:
            self.lazy.settle(weights.W, weights.factor)
        weights.fold_factor()
        if self.penalty.bounded:  # exact after the fold's rounding
            self.penalty.project(weights.W, weights.b)
        best = best_of(self.judged())
        if self.validation_history and not self.last_pass_steps:  # the best model seen
            state = weights.state
            return Outcome(state["best_W"], state["best_b"], self.stop_reason, best)
        # (after a last pass: the best model, trained once on the held-out rows)
        return Outcome(weights.W, weights.b, self.stop_reason, best)

    # -- checkpoints --------------------------------------------------------------------------

    def state(self) -> ReplicaState:
        return ReplicaState(
            values=self.weights.flat(),
            feature_major=self.weights.feature_major,
            factor=self.weights.factor,
            step=self.step,
            history=list(self.history),
            converged=self.converged,
            epoch_loss=self.epoch_loss,
            epoch_weight=self.epoch_weight,
            plan=dataclasses.asdict(self.plan),
            validation_history=list(self.validation_history),
            validation_accuracy=list(self.validation_accuracy),
            validation_pending=self.validation_pending,
        )

    def restore(self, state: ReplicaState) -> None:
        """Go on from a checkpointed ``state`` of a fit with the same plan."""
        if state.plan != dataclasses.asdict(self.plan):
            raise ValueError(
                f"the checkpoint at step {state.step} was written by a fit planned as "
                f"{state.plan}, not {dataclasses.asdict(self.plan)}; remove it or use another "
                "checkpointDir"
            )
        if state.feature_major != self.weights.feature_major:
            raise ValueError(f"the checkpoint at step {state.step} has another weights layout")
        self.weights.load_flat(state.values, state.factor)
        self.step = state.step
        self.history = list(state.history)
        self.converged = state.converged
        self.epoch_loss, self.epoch_weight = state.epoch_loss, state.epoch_weight
        self.validation_history = list(state.validation_history)
        self.validation_accuracy = list(state.validation_accuracy)
        self.validation_pending = state.validation_pending
        if self.validation_history and self.config.validation_tol is not None:
            self.stopped_by_validation = self.held_out_stalled()

    def checkpoint_due(self, epochs_before: int) -> bool:
        """As every solver's, but never in the last pass: a retried stage redoes it from the
        last epoch's checkpoint."""
        return not self.epochs_over and super().checkpoint_due(epochs_before)

    def save(self, store, data: LocalPartition) -> int:
        """Rank 0 writes the replica; the others hold the same one."""
        if self.rank != 0:
            return 0
        store.write_replica(self.state())
        return 1

    @classmethod
    def steps_seen(cls, store, rank: int) -> list[int]:
        return store.replica_steps() if rank == 0 else []

    @classmethod
    def common_step(cls, seen: list[list[int]]) -> int | None:
        return max(seen[0]) if seen[0] else None

    @classmethod
    def load(cls, store, data: LocalPartition, rank: int, step: int) -> ReplicaState:
        return store.read_replica(step)


def step_vectors(messages: list[wire.RoundMessage], j: int, stacked: bool = True):
    """Every worker's (U, V) of step ``j`` in rank order: U stacked, V stacked or (for the
    sparse update, which takes the same operations on the blocks) as a list of blocks."""
    parts = [m.step_vectors(j) for m in messages]
    V = [v for _, v in parts]
    return np.concatenate([u for u, _ in parts]), stack_rows(V) if stacked else V


def step_gradient(messages: list[wire.RoundMessage], j: int) -> np.ndarray:
    """The sum of every worker's dense gradient of step ``j``, in rank order."""
    G = messages[0].step_gradient(j).copy()
    for m in messages[1:]:
        G += m.step_gradient(j)
    return G
