"""Averaged SGD (Polyak-Ruppert tail averaging): SGD's steps, and the model is the mean of
the iterates after every step from the second epoch on, kept on every replica."""

from __future__ import annotations

import numpy as np

from svb_spark.core import numerics
from svb_spark.core.solvers.base import FitFacts, Outcome
from svb_spark.core.solvers.stochastic import SgdSolver


class AsgdSolver(SgdSolver):
    """Averaged SGD: SGD's steps, and the model is the running mean of the iterates after
    every step from the second epoch on (dense rows: the replica has no L2 factor)."""

    name = "asgd"
    scores_held_out = False  # its held-out rows would judge SGD's iterate, not the mean

    def _add_state(self) -> None:
        self.weights.state["mean_W"] = np.zeros_like(self.weights.W)
        self.weights.state["mean_b"] = np.zeros_like(self.weights.b)

    @classmethod
    def why_not(cls, facts: FitFacts) -> str | None:
        """Its mean of the iterates is a second K x D array updated every step: dense rows
        only (a sparse step touches a few columns, the mean would cost a K x D pass)."""
        if facts.sparse:
            return "the features are sparse (stored as CSR rows), which train with SGD"
        if facts.validation:
            return "validationIndicatorCol is set; it would score SGD's iterate, not the mean"
        return None

    @classmethod
    def memory_bytes(cls, facts: FitFacts) -> tuple[int, str]:
        K, D, size = facts.num_classes, facts.num_features, np.dtype(facts.dtype).itemsize
        formula = (
            f"averaged SGD's 2 x numClasses x numFeatures x {size} bytes ({facts.dtype}) = "
            f"2 x {K} x {D} x {size}"
        )
        return 2 * K * D * size, formula

    @property
    def averaged_steps(self) -> int:
        """How many iterates the mean holds (those after the first epoch)."""
        return max(0, self.step - self.plan.steps_per_epoch)

    def after_step(self) -> None:
        n = self.averaged_steps
        if n == 0:
            return
        state, weights = self.weights.state, self.weights
        numerics.fold_into_mean(state["mean_W"], weights.W, n)
        numerics.fold_into_mean(state["mean_b"], weights.b, n)

    def outcome(self) -> Outcome:
        if not self.averaged_steps:
            return super().outcome()
        self.weights.fold_factor()
        state = self.weights.state
        if self.penalty.bounded:  # a mean of points in the box, exact after its rounding
            self.penalty.project(state["mean_W"], state["mean_b"])
        return Outcome(state["mean_W"], state["mean_b"], self.stop_reason)
