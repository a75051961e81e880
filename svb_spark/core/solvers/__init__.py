"""The optimizers: one interface (:class:`Solver`), implemented by SGD, SAGA, averaged SGD,
L-BFGS and the class-sharded SGD; ``auto``'s choice among them; and :func:`solver_for`, which
every runner (the barrier task, the broadcast mode, the in-process runner) uses."""

from __future__ import annotations

import numpy as np

from svb_spark.core.config import Plan, TrainingConfig
from svb_spark.core.solvers.auto import SOLVERS, Choice, check_memory, choose, solver_class
from svb_spark.core.solvers.base import FitFacts, Outcome, Solver

__all__ = [
    "SOLVERS",
    "Choice",
    "FitFacts",
    "Outcome",
    "Solver",
    "check_memory",
    "choose",
    "solver_class",
    "solver_for",
    "solver_type",
]


def solver_type(config: TrainingConfig) -> type[Solver]:
    """The implementation ``config`` trains with."""
    return solver_class(config.solver, config.exchange)


def solver_for(
    config: TrainingConfig,
    plan: Plan,
    rank: int,
    initial: tuple[np.ndarray, np.ndarray] | None = None,
) -> Solver:
    """A fresh solver for worker ``rank`` of the fit of ``config`` and ``plan``, starting
    from zero weights or from ``initial`` (W, b in the standardized space)."""
    return solver_type(config)(config, plan, rank, initial)
