"""When a fit stops: the ``tol`` rule on the objective, and the held-out rule of a validation
column or of the rows a fit holds out by itself. Every replica judges the same numbers the same
way, so all stop after the same step.

``tol`` has one meaning for every solver: a fit stops once the mean objective of its last
``window`` epochs (L-BFGS: iterations) improved on the mean of the ``window`` before by at
most ``tol`` times the larger of the current objective and ``floor`` times the first. Each
kind of solver has its own window and floor (below).
"""

from __future__ import annotations

import numpy as np

# The windows and floors of ``tol``. Stochastic epochs are noisy from one to the next (a
# comparison of single epochs never fired), so three are averaged, and their noise scales
# with the start, so they are judged against the first epoch's objective (a floor of 1): that
# lets the rule fire on separable data too, whose objective falls towards zero for ever.
# Three, not five: replayed on the solver study's histories, SAGA stopped within 0.5 pt of the
# optimum's accuracy on the same sets with either, and a sparse SGD fit that settles in 3
# epochs stops after 7 instead of 11.
EPOCH_WINDOW, EPOCH_FLOOR = 3, 1.0
# A full-batch L-BFGS iteration has no sampling noise: two smooth out one that stalls in a
# curved valley, and it is judged against the current objective, since on data with a high
# optimum the last points of accuracy come late. The floor of 3% of the start stops
# (nearly) separable fits once their objective is small, instead of at the precision limit
# while only the weights grow. Replayed on the solver study's histories (digits, letter,
# satellite, shuttle, DNA, vehicle, vowel, and a planted K=200 x D=256 set), L-BFGS stopped
# within 0.5 pt of MLlib's or scikit-learn's held-out accuracy on all eight.
ITERATION_WINDOW, ITERATION_FLOOR = 2, 0.03

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


def objective_settled(history: list[float], tol: float, window: int, floor: float) -> bool:
    """Whether ``tol`` stops a fit whose objective after each epoch (or iteration) is
    ``history``, judged over windows of ``window`` against ``floor`` times the first.

    >>> objective_settled([2.0, 1.0, 0.9, 0.89, 0.889, 0.8889], 0.01, 2, ITERATION_FLOOR)
    True
    >>> objective_settled([2.0, 1.0, 0.5, 0.25], 0.01, 2, ITERATION_FLOOR)
    False
    """
    if tol <= 0.0 or len(history) < 2 * window:
        return False
    current = sum(history[-window:]) / window
    previous = sum(history[-2 * window : -window]) / window
    return previous - current <= tol * max(abs(current), floor * abs(history[0]))


def correct_weight(U: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """The weight of the rows whose predicted class is their label, from their sufficient
    vectors ``U = diag(weights) (P - Y)`` (the binomial family: one column, threshold 0.5).

    >>> U = np.array([[0.3, -0.4, 0.1], [0.5, 0.1, -0.6]])  # P = [.3 .6 .1] and [.5 .1 .4]
    >>> correct_weight(U, np.array([1, 2]), np.ones(2))
    1.0
    """
    w = weights.astype(U.dtype, copy=False)
    if U.shape[1] == 1:
        # U + w y = w sigmoid(m): the prediction is 1 where that exceeds w / 2.
        predicted = U[:, 0] + w * y > 0.5 * w
        return float(weights[predicted == (y == 1)].sum(dtype=np.float64))
    rows = np.arange(U.shape[0])
    own = U[rows, y] + w  # w P[y]
    others = U.copy()
    others[rows, y] = -np.inf
    return float(weights[own > others.max(axis=1, initial=-np.inf)].sum(dtype=np.float64))


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
