"""Full-batch L-BFGS over the mesh, for models whose gradient is small: the solver MLlib uses,
without a Spark job per iteration.

Every evaluation each worker computes the loss and the K x (D + 1) gradient of all its rows,
and one exchange gathers everyone's; every worker sums them in rank order, so each holds the
same objective and gradient and runs the same deterministic L-BFGS iteration. The replicas
stay bit-identical without any other communication, as in the SGD loop.

It sends K (D + 1) floats per evaluation, one evaluation per iteration in the usual case, where
SGD sends B (K + D) per step and takes rows / B steps an epoch. So it wins when the model is
small next to the data (many rows, a few thousand coefficients), which is where plain SGD
needed tens of epochs; large models keep the stochastic solvers (see ``solver="auto"``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import numpy as np

from svb_spark.core import cost, numerics, wire
from svb_spark.core.config import TrainingConfig
from svb_spark.core.partition import LocalPartition
from svb_spark.core.penalty import Penalty
from svb_spark.core.solvers.base import FitFacts, Outcome, Solver
from svb_spark.core.stopping import QuasiNewtonConvergence

# Correction pairs kept: MLlib's LogisticRegression keeps 10.
HISTORY = 10

# Vectors of K (D + 1) float64 a worker holds: the pairs, plus the point, its gradient, the
# direction, the candidate and its gradient, and the gradient sum being built.
VECTORS = 2 * HISTORY + 6

# solver="auto" takes L-BFGS for dense rows up to this many coefficients K (D + 1): 2 MB a
# vector, 56 MB of state a worker. A full pass does the arithmetic of about a stochastic
# epoch, and L-BFGS needs tens of them, so for large models (where arithmetic, not the
# per-step latency, sets the time) the stochastic solvers are kept. The bound is a judgment:
# the sets measured (up to 51,400 coefficients) all lie below it.
AUTO_MAX_COEFFICIENTS = 1 << 18

# Armijo's sufficient-decrease constant and the most halvings of a step before the search
# fails: every halving is a full pass, and a step cut below 1/1024 of L-BFGS's scaled unit
# step means the objective is at the limit of its precision.
ARMIJO = 1e-4
MAX_HALVINGS = 10


def minimize(
    evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    max_iter: int,
    tol: float,
    l1: np.ndarray | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[float], bool]:
    """L-BFGS from ``x`` with a backtracking (Armijo) line search; deterministic.

    ``evaluate(x)`` returns the objective and its gradient. Stops by MLlib's rule at ``tol``
    (:class:`~svb_spark.core.stopping.QuasiNewtonConvergence`). Returns the last point, the
    objective after each iteration, and whether it converged (see :func:`iterations`, also
    for ``l1`` and ``bounds``).

    Examples
    --------
    >>> import numpy as np
    >>> def evaluate(x):  # (x - 3)^2 + (y + 1)^2
    ...     d = x - np.array([3.0, -1.0])
    ...     return float(d @ d), 2 * d
    >>> x, history, converged = minimize(evaluate, np.zeros(2), 50, 1e-6)
    >>> np.round(x, 6).tolist(), converged
    ([3.0, -1.0], True)
    """
    history: list[float] = []
    steps = iterations(x, max_iter, tol, history, l1, bounds)
    point = next(steps)
    try:
        while True:
            point = steps.send(evaluate(point))
    except StopIteration as stop:
        x, done = stop.value
    return x, history, done


class Unconstrained:
    """Plain L-BFGS: the region is all of space."""

    def value(self, f: float, x: np.ndarray) -> float:
        """The objective minimized at ``x``, from the smooth one."""
        return f

    def steering(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """The gradient the direction is computed from."""
        return g

    def judged(self, g: np.ndarray, steer: np.ndarray) -> np.ndarray:
        """The gradient MLlib's gradient test judges: breeze's adjusted one, the steering
        gradient (OWL-QN's pseudo-gradient), except that L-BFGS-B adjusts nothing."""
        return steer

    def restrict(
        self, x: np.ndarray, g: np.ndarray, steer: np.ndarray, direction: np.ndarray
    ) -> np.ndarray:
        """The quasi-Newton direction with the moves the region forbids taken out."""
        return direction

    def project(self, candidate: np.ndarray, x: np.ndarray, steer: np.ndarray) -> np.ndarray:
        """A point of the line search brought back into the region."""
        return candidate


class OrthantWise(Unconstrained):
    """OWL-QN (Andrew and Gao, 2007; breeze's OWLQN, which MLlib uses): minimizes the smooth
    objective plus ``sum_i l1_i |x_i|``. The direction comes from the pseudo-gradient, with
    the components that do not descend along it zeroed; the search's points are projected
    onto the orthant of the current point (the pseudo-gradient's sign where a coordinate is
    zero), so coordinates that would cross zero stop at exactly zero. The correction pairs
    are built from the smooth gradients, as in the paper. Coordinates with ``l1_i = 0`` (the
    intercepts) are neither projected nor sign-restricted."""

    def __init__(self, l1: np.ndarray):
        self.l1 = l1
        self.penalized = l1 > 0.0

    def value(self, f, x):
        return f + float(self.l1 @ np.abs(x))

    def steering(self, x, g):
        return pseudo_gradient(x, g, self.l1)

    def restrict(self, x, g, steer, direction):
        direction[self.penalized & (direction * steer >= 0.0)] = 0.0
        return direction

    def project(self, candidate, x, steer):
        orthant = np.where(x != 0.0, np.sign(x), -np.sign(steer))
        candidate[self.penalized & (candidate * orthant <= 0.0)] = 0.0
        return candidate


class Box(Unconstrained):
    """A projected L-BFGS within ``lower <= x <= upper`` (MLlib uses L-BFGS-B; both reach
    the box-constrained minimum). Each iteration fixes the active set, the coordinates at a
    bound whose gradient points out of the box; the direction is computed from the gradient
    of the free ones and has no component on the active set nor out of the box at a bound
    (Bertsekas' projected quasi-Newton). The search's points are clipped to the box."""

    def __init__(self, lower: np.ndarray, upper: np.ndarray):
        self.lower, self.upper = lower, upper

    def _free(self, x, g):
        return ~(((x <= self.lower) & (g > 0.0)) | ((x >= self.upper) & (g < 0.0)))

    def steering(self, x, g):
        return np.where(self._free(x, g), g, 0.0)

    def judged(self, g, steer):
        return g

    def restrict(self, x, g, steer, direction):
        blocked = (x <= self.lower) & (direction < 0.0) | (x >= self.upper) & (direction > 0.0)
        direction[~self._free(x, g) | blocked] = 0.0
        return direction

    def project(self, candidate, x, steer):
        return np.clip(candidate, self.lower, self.upper)


def iterations(
    x: np.ndarray,
    max_iter: int,
    tol: float,
    history: list[float],
    l1: np.ndarray | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> Generator[np.ndarray, tuple[float, np.ndarray], tuple[np.ndarray, bool]]:
    """L-BFGS as a generator: it yields each point to evaluate and is sent back its objective
    and gradient, so that every evaluation can be one exchange of the loop. Appends the
    objective after each iteration to ``history``; returns the last point and whether it
    converged.

    With ``l1`` (a weight per coordinate) it minimizes the objective plus ``sum_i l1_i |x_i|``
    (:class:`OrthantWise`); with ``bounds`` (lower, upper per coordinate) it minimizes it
    within the box (:class:`Box`, the start clipped into it, as MLlib does). Not both.

    It stops as MLlib's does (:class:`~svb_spark.core.stopping.QuasiNewtonConvergence`):
    maxIter iterations, the function-value, gradient or projected-step test at ``tol``, or a
    line search that fails twice in a row. A search fails when no halving of the step gives
    an Armijo decrease; as breeze does, the first failure drops the correction pairs and tries
    again from the (projected) steepest descent. Every step is a pure function of the values
    sent, so replicas that are sent the same sums stay bit-identical.
    """
    if l1 is not None and np.any(l1 > 0.0):
        region: Unconstrained = OrthantWise(l1)
    elif bounds is not None:
        region = Box(*bounds)
        x = np.clip(x, *bounds)
    else:
        region = Unconstrained()
    rule = QuasiNewtonConvergence(tol, bounds)
    f, g = yield x
    F, steer = region.value(f, x), region.steering(x, g)
    if rule.check(x, F, g, region.judged(g, steer)):
        return x, True
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []  # (s, y, 1 / y.s), oldest first
    failed = False  # the last search failed (and the pairs were dropped)
    while len(history) < max_iter:
        direction = region.restrict(x, g, steer, -_two_loop(steer, pairs))
        if float(steer @ direction) >= 0.0:  # no quasi-Newton descent: the steepest one
            pairs.clear()
            direction = -steer
            if not direction.any():  # a zero (projected, pseudo-) gradient: the minimum
                return x, True
        # The first step has no curvature to scale it: a unit move, as MLlib's first step.
        step = 1.0 if pairs else 1.0 / max(float(np.sqrt(direction @ direction)), 1e-12)
        for _ in range(MAX_HALVINGS):
            candidate = region.project(x + step * direction, x, steer)
            f_new, g_new = yield candidate
            F_new = region.value(f_new, candidate)
            if F_new < F and F_new <= F + ARMIJO * float(steer @ (candidate - x)):
                break
            step *= 0.5
        else:
            if failed or not pairs:  # breeze gives up on the second failure in a row
                return x, True
            failed = True
            pairs.clear()
            continue
        failed = False
        _remember(pairs, candidate - x, g_new - g)
        x, f, g, F = candidate, f_new, g_new, F_new
        steer = region.steering(x, g)
        history.append(F)
        if rule.check(x, F, g, region.judged(g, steer)):
            return x, True
    return x, False


def pseudo_gradient(x: np.ndarray, g: np.ndarray, l1: np.ndarray) -> np.ndarray:
    """The pseudo-gradient of ``f + sum l1_i |x_i|`` (Andrew and Gao, 2007): the gradient
    where ``|x_i|`` is differentiable; at ``x_i = 0`` the one-sided derivative that descends,
    or 0 when neither does."""
    pg = g + l1 * np.sign(x)
    at_zero = x == 0.0
    right, left = g + l1, g - l1
    pg[at_zero] = np.where(
        right[at_zero] < 0.0, right[at_zero], np.where(left[at_zero] > 0.0, left[at_zero], 0.0)
    )
    return pg


def _remember(pairs: list, s: np.ndarray, y_diff: np.ndarray) -> None:
    """Keep the correction pair (s, y) when its curvature keeps the inverse Hessian positive."""
    curvature = float(y_diff @ s)
    if curvature > 1e-10 * float(y_diff @ y_diff):
        pairs.append((s, y_diff, 1.0 / curvature))
        del pairs[:-HISTORY]


def _two_loop(g: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """The L-BFGS inverse-Hessian product ``H g`` from the correction pairs."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * float(s @ q)
        q -= alpha * y
        alphas.append(alpha)
    if pairs:
        s, y, _ = pairs[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        q += (alpha - rho * float(y @ q)) * s
    return q


class LbfgsSolver(Solver):
    """Full-batch L-BFGS on every worker's rows: every evaluation one exchange of the
    workers' loss and gradient sums, summed in rank order, so every worker runs the same
    iteration. An iteration counts as an epoch (it reads every row once, or a few times when
    the line search halves a step): ``maxIter`` bounds them and ``tol`` judges them."""

    name = "lbfgs"
    unit = "iterations"
    steps_by_curvature = False  # its line search sizes the steps
    # Its state is a few vectors, but a retried stage would repeat at most a few full passes.
    checkpoints = False
    # MLlib's tol reaches below float32's rounding: in float32 a breast-cancer L1 fit at the
    # defaults ended 1.1e-3 of its largest coefficient from MLlib's model, in float64 4e-4.
    # A message is one gradient, small where auto picks L-BFGS.
    auto_dtype = "float64"

    def start(self, initial: tuple[np.ndarray, np.ndarray] | None) -> None:
        super().start(initial)
        config = self.config
        K, D = config.num_classes, config.num_features
        self.penalty = Penalty.of(config)
        x = np.zeros(K * (D + 1))
        if initial is not None:
            x[: K * D] = np.asarray(initial[0], dtype=np.float64).ravel()
            x[K * D :] = initial[1] if config.fit_intercept else 0.0
        elif config.start_intercepts is not None:
            x[K * D :] = config.start_intercepts

        # L1 makes it OWL-QN, bounds a bound-constrained L-BFGS: the same exchange per
        # evaluation, the smooth sums, and the L1 term added by every worker alike.
        penalty = self.penalty
        self._steps = iterations(
            x, config.max_iter, config.tol, self.history,
            penalty.coordinate_l1(K, D), penalty.coordinate_bounds(K, D),
        )  # fmt: skip
        self._point = next(self._steps)
        self._result: tuple[np.ndarray, bool] | None = None

    @classmethod
    def why_not(cls, facts: FitFacts) -> str | None:
        if facts.sync_interval != 1:
            return f"syncInterval is {facts.sync_interval}; L-BFGS exchanges every iteration"
        if facts.validation:
            return "validationIndicatorCol is set; L-BFGS does not score held-out rows"
        return None

    @classmethod
    def max_message_bytes(cls, config: TrainingConfig) -> int:
        """An iteration's message is the loss and the whole gradient, in float64; a
        resynchronisation sends rank 0's replica."""
        K, D = config.num_classes, config.num_features
        largest = (K * (D + 1) + 1) * 8
        if config.verify_interval:
            largest = max(largest, cost.dense_gradient_bytes(K, D, cost.itemsize(config.dtype)))
        return int(largest) + (1 << 16)  # slack for Arrow's buffer padding

    @classmethod
    def memory_bytes(cls, facts: FitFacts) -> tuple[int, str]:
        K, D = facts.num_classes, facts.num_features
        formula = (
            f"L-BFGS's {VECTORS} vectors of numClasses x (numFeatures + 1) x 8 bytes "
            f"(float64) = {VECTORS} x {K} x {D + 1} x 8"
        )
        return VECTORS * K * (D + 1) * 8, formula

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def stop_reason(self) -> str:
        return "tol" if self._result is not None and self._result[1] else "maxIter"

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        K, D = self.config.num_classes, self.config.num_features
        return x[: K * D].reshape(K, D), x[K * D :]

    def compute(self, data: LocalPartition) -> np.ndarray:
        """This worker's loss and K x (D + 1) gradient sums at the point to evaluate."""
        W, b = self._split(self._point)
        loss, gradient = numerics.loss_and_gradient_sums(
            W, b, data.X, data.y, data.w, self.config.loss
        )
        return np.concatenate([[loss], gradient.ravel()])

    def encode(self, sums: np.ndarray):
        return wire.encode_sums(sums)

    def decode(self, batch) -> np.ndarray:
        return wire.sums_array(batch)

    def apply(self, messages: list[np.ndarray], rounds=None) -> None:
        """Sum everyone's sums in rank order (the same sum on every worker) and take the
        iteration's next point."""
        config = self.config
        K, D = config.num_classes, config.num_features
        total = messages[0].copy()
        for sums in messages[1:]:
            total += sums
        W, _ = self._split(self._point)
        objective, gradient = numerics.objective_and_gradient(
            total[0], total[1:].reshape(K, D + 1), W, self.plan.total_weight, self.penalty.l2,
            self.penalty.l2_scale, config.fit_intercept,
        )  # fmt: skip
        try:
            self._point = self._steps.send((objective, as_vector(gradient)))
        except StopIteration as stop:
            self._result = stop.value
            self._point = self._result[0]
        self.step = len(self.history)

    def current(self) -> tuple[np.ndarray, np.ndarray]:
        dtype = np.dtype(self.config.dtype)
        W, b = self._split(self._point)
        return W.astype(dtype), b.astype(dtype)

    def outcome(self) -> Outcome:
        dtype = np.dtype(self.config.dtype)
        W, b = self._split(self._result[0])
        return Outcome(W.astype(dtype), b.astype(dtype), self.stop_reason)


def mllib_intercepts(
    config: TrainingConfig, class_weights: np.ndarray | None, total_weight: float
) -> np.ndarray | None:
    """MLlib's starting intercepts for L-BFGS, given the weight of each class's rows: those
    that give the classes their frequencies, ``log(1 + n_k)`` centered (binomial:
    ``log(n_1 / n_0)``), beside zero coefficients, so that a fit starts where MLlib's does and
    ``tol``, relative to the first objective, means the same. None for the other solvers
    (unless the loss starts every solver there), a fit without intercepts, or no histogram
    (then the fit starts from zero).

    >>> config = TrainingConfig(3, 2, 32, 100, 1e-6, 0.0, True, 1.0, 0, "float64",
    ...                         np.ones(2), solver="lbfgs")
    >>> np.round(mllib_intercepts(config, np.array([3.0, 1.0, 0.0]), 4.0), 4).tolist()
    [0.6931, 0.0, -0.6931]
    """
    solver = config.solver == LbfgsSolver.name or config.loss.intercepts_for_every_solver
    if not solver or not config.fit_intercept or class_weights is None:
        return None
    return config.loss.start_intercepts(class_weights, config.num_classes, total_weight)


def as_vector(gradient: np.ndarray) -> np.ndarray:
    """A K x (D + 1) gradient in the iteration's layout: W's rows, then b."""
    return np.concatenate([gradient[:, :-1].ravel(), gradient[:, -1]])
