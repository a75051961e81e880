"""When a fit stops: the ``tol`` rule on the objective, and the held-out rule of a validation
column or of the rows a fit holds out by itself. Every replica judges the same numbers the same
way, so all stop after the same step.

``tol`` is MLlib's, default 1e-6, and has a rule per kind of solver, both here:

- **L-BFGS, OWL-QN and the bounded L-BFGS** stop by MLlib's rule, the convergence check that
  MLlib's LogisticRegression configures in breeze (``FirstOrderMinimizer.defaultConvergenceCheck``
  with ``fvalMemory`` 20 and a relative tolerance, plus ``LBFGSB``'s projected-step test):
  :class:`QuasiNewtonConvergence`. So a default fit is MLlib's model, L1 zeros and active
  bounds included.
- **The stochastic solvers** (MLlib has none) stop once the mean objective of their last
  ``EPOCH_WINDOW`` epochs improved on the mean of the ``EPOCH_WINDOW`` before by at most
  ``max(tol, EPOCH_NOISE)`` times the larger of the current objective and the first epoch's
  (:func:`epochs_settled`): an epoch's objective is a mean over minibatches, noisier than
  MLlib's 1e-6 could ever judge. They also stop once the objective itself is within that bar
  of zero, where no window could improve more. Large fits stop on held-out rows first
  (below).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

# The stochastic rule. Epochs are noisy from one to the next (a comparison of single epochs
# never fired), so three are averaged, and their noise scales with the start, so they are
# judged against the first epoch's objective: that lets the rule fire on separable data too,
# whose objective falls towards zero for ever. Three, not five: replayed on the solver study's
# histories, SAGA stopped within 0.5 pt of the optimum's accuracy on the same sets with
# either, and a sparse SGD fit that settles in 3 epochs stops after 7 instead of 11.
EPOCH_WINDOW, EPOCH_FLOOR = 3, 1.0
# The smallest relative improvement of three epochs over the three before that the stochastic
# rule can tell from noise. Measured on the solver study's real and generated sets (letter,
# satellite, shuttle, digits, DNA, vehicle, vowel, planted dense and sparse): at 3e-3 it
# stopped SAGA within 0.5 pt of the optimum's held-out accuracy on letter, satellite, digits
# and DNA; a bar of 1e-6 never fired for SGD, whose decaying steps keep the epoch objective
# moving by more than that until maxIter.
EPOCH_NOISE = 3e-3

# MLlib's quasi-Newton rule, as breeze writes it (FirstOrderMinimizer and LBFGSB): the
# objectives kept for the function-value test (fvalMemory), the floor of the gradient test,
# and the bound of LBFGSB's projected-step test (PROJ_GRADIENT_EPS, absolute).
FUNCTION_VALUE_MEMORY = 20
GRADIENT_FLOOR = 1e-8
PROJECTED_STEP_TOL = 1e-5

# Epochs without a validationTol improvement of the held-out loss (error, for the rows
# validationFraction holds out) before a fit stops. One epoch (MLlib's GBTs) would stop SGD
# on noise; a few let a real plateau show.
VALIDATION_PATIENCE = 3

# Without a validation column, a stochastic fit of at least this many rows holds out
# validationFraction of them and stops on them (see solvers.auto.automatic_holdout). The training
# objective of a many-class model with regParam 0 keeps falling long after held-out accuracy
# has stopped rising (a 945-class text fit ran 15 epochs where 5 reached the same accuracy),
# so on large data held-out rows are the better judge. Smaller data cannot spare the rows,
# and its fits are short anyway. The size is scikit-learn's for HistGradientBoosting's
# early_stopping="auto"; the fraction's default, 0.1, is its validation_fraction and Vowpal
# Wabbit's holdout period of 10.
HOLDOUT_MIN_ROWS = 10_000

# Fewer expected held-out rows than this judge nothing: the fraction is then not used.
HOLDOUT_MIN_HELD_OUT = 100

# Nor is it with fewer rows than this per class on average (a long tail of classes with a
# handful of rows each). Holding a tenth out then takes the only rows of many tail classes,
# and the held-out accuracy that decides the stop is mostly the head classes': on 9,184
# classes of text at 3.4 rows a class the held-out stop lost 3.6 points of top-1 to the tol
# stop on every row; on generated Zipfian text (2^14 features, 40k rows) it lost 0.4 points
# at 4 rows a class (10,000 classes) and 0.2 at 10 (4,000 classes), while at 30 and 50 rows
# a class it won 5.5 and 3.0 points (docs/benchmarks.md: "Long tails of classes" and "Where
# a default fit stops"). The bar sits between the last loss and the first win.
HOLDOUT_MIN_ROWS_PER_CLASS = 20


def epochs_settled(history: list[float], tol: float) -> bool:
    """Whether ``tol`` stops a stochastic fit whose objective after each epoch is
    ``history``: the mean of the last :data:`EPOCH_WINDOW` epochs improved on the mean of the
    ones before by at most ``max(tol, EPOCH_NOISE)`` times the larger of the current objective
    and the first epoch's, or the objective is at most that bar times the first epoch's (the
    most that any later epochs could still improve it). ``tol = 0`` never stops (only maxIter
    does).

    >>> epochs_settled([2.0, 0.9, 0.89, 0.889, 0.8889, 0.8888, 0.8887], 1e-6)
    True
    >>> epochs_settled([2.0, 1.0, 0.5, 0.25, 0.2, 0.15, 0.1], 1e-6)
    False
    >>> epochs_settled([2.9, 0.44, 0.054, 0.0064], 1e-6)
    True
    """
    window, bar = EPOCH_WINDOW, max(tol, EPOCH_NOISE)
    if tol <= 0.0 or not history:
        return False
    # The objective (a loss plus a penalty) is never negative: once it is within the bar of
    # zero, no later epochs can improve on it by more than the bar, and the windows would only
    # wait to show that. On a long tail of classes that wait is most of the fit: on 20,000
    # classes of text at 10 rows a class the objective fell 450-fold in 4 epochs (2.85 to
    # 0.0064) and the windows fired after 9, at the same top-1 (docs/benchmarks.md).
    if history[-1] <= bar * EPOCH_FLOOR * abs(history[0]):
        return True
    if len(history) < 2 * window:
        return False
    current = sum(history[-window:]) / window
    previous = sum(history[-2 * window : -window]) / window
    return previous - current <= bar * max(abs(current), EPOCH_FLOOR * abs(history[0]))


class QuasiNewtonConvergence:
    """MLlib's stopping rule for L-BFGS, OWL-QN and the bounded L-BFGS: breeze's
    ``FirstOrderMinimizer.defaultConvergenceCheck(maxIter, tol)`` as MLlib's
    LogisticRegression configures it (relative, ``fvalMemory`` 20), and for bounds
    ``LBFGSB``'s projected-step test before it. Iterations stop once any of these holds:

    - **function values**: the objective is within ``tol x |the start's objective|`` of the
      largest of the last :data:`FUNCTION_VALUE_MEMORY` objectives (the memory starts with
      +inf, so this needs that many iterations);
    - **gradient**: the norm of the gradient (OWL-QN: the pseudo-gradient) is at most
      ``max(tol x |objective|, 1e-8)``;
    - **projected step** (bounds): ``max_i |clip(x_i - g_i, lower_i, upper_i) - x_i|`` is
      below 1e-5;
    - the line search failed twice in a row (the caller's test), or maxIter iterations ran.

    ``check`` is called on the start and after every iteration, in the same places as
    breeze's; the objective is the one minimized (OWL-QN's includes the L1 term).

    >>> rule = QuasiNewtonConvergence(1e-6)
    >>> rule.check(np.zeros(1), 1.0, np.ones(1))
    >>> rule.check(np.zeros(1), 0.5, np.array([1e-9]))
    'gradient'
    """

    def __init__(self, tol: float, bounds: tuple[np.ndarray, np.ndarray] | None = None):
        self.tol = tol
        self.bounds = bounds
        self.start: float | None = None
        # breeze's memory of objectives, which starts with +inf
        self.values = deque([math.inf], maxlen=FUNCTION_VALUE_MEMORY)

    def check(
        self, x: np.ndarray, value: float, gradient: np.ndarray, adjusted: np.ndarray | None = None
    ) -> str | None:
        """Why the iterations stop at ``x`` (objective ``value``, smooth ``gradient``), or
        None. ``adjusted``, when given, is what the gradient test judges instead: OWL-QN's
        pseudo-gradient."""
        if self.start is None:
            self.start = value
        else:
            self.values.append(value)
        if self.bounds is not None:
            step = np.clip(x - gradient, *self.bounds) - x
            if np.max(np.abs(step), initial=0.0) < PROJECTED_STEP_TOL:
                return "projected step"
        if len(self.values) >= 2 and abs(value - max(self.values)) <= self.tol * abs(self.start):
            return "function values"
        norm = float(np.linalg.norm(gradient if adjusted is None else adjusted))
        if norm <= max(self.tol * abs(value), GRADIENT_FLOOR):
            return "gradient"
        return None


def best_validation_epoch(history: list[float]) -> int:
    """The epoch (0-based) of the lowest held-out loss (or error): the first, on ties."""
    return int(np.argmin(history))


def validation_stalled(
    history: list[float], tol: float, patience: int = VALIDATION_PATIENCE
) -> bool:
    """Whether the last ``patience`` held-out losses (or errors) brought no improvement of
    more than ``tol`` (relative, as MLlib's validationTol) on the best before them."""
    if len(history) <= patience:
        return False
    best_before = min(history[:-patience])
    best_since = min(history[-patience:])
    return best_before - best_since < tol * max(best_since, 0.01)
