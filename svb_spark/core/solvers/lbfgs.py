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

from svb_spark.core import numerics
from svb_spark.core.partition import LocalPartition
from svb_spark.core.penalty import Penalty
from svb_spark.core.solvers.base import FitFacts, Outcome, Solver
from svb_spark.core.stopping import ITERATION_FLOOR, ITERATION_WINDOW, objective_settled
from svb_spark.transport import codec

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

# Armijo's sufficient-decrease constant and the most halvings of a step before giving up:
# every halving is a full pass, and a step cut below 1/1024 of L-BFGS's scaled unit step means
# the objective is at the limit of its precision.
ARMIJO = 1e-4
MAX_HALVINGS = 10


def minimize(
    evaluate: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    max_iter: int,
    converged: Callable[[list[float]], bool],
    l1: np.ndarray | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[float], bool]:
    """L-BFGS from ``x`` with a backtracking (Armijo) line search; deterministic.

    ``evaluate(x)`` returns the objective and its gradient. ``converged(history)`` judges the
    objectives so far, the start's first, after every iteration. Returns the last point, the
    objective after each iteration, and whether it converged (see :func:`iterations`, also
    for ``l1`` and ``bounds``).

    Examples
    --------
    >>> import numpy as np
    >>> def evaluate(x):  # (x - 3)^2 + (y + 1)^2
    ...     d = x - np.array([3.0, -1.0])
    ...     return float(d @ d), 2 * d
    >>> x, history, converged = minimize(evaluate, np.zeros(2), 50, lambda h: False)
    >>> np.round(x, 6).tolist(), converged
    ([3.0, -1.0], True)
    """
    history: list[float] = []
    steps = iterations(x, max_iter, converged, history, l1, bounds)
    point = next(steps)
    try:
        while True:
            point = steps.send(evaluate(point))
    except StopIteration as stop:
        x, done = stop.value
    return x, history, done


def iterations(
    x: np.ndarray,
    max_iter: int,
    converged: Callable[[list[float]], bool],
    history: list[float],
    l1: np.ndarray | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> Generator[np.ndarray, tuple[float, np.ndarray], tuple[np.ndarray, bool]]:
    """L-BFGS as a generator: it yields each point to evaluate and is sent back its objective
    and gradient, so that every evaluation can be one exchange of the loop. Appends the
    objective after each iteration to ``history``; returns the last point and whether it
    converged: ``converged`` said so, or no step decreased the objective any more, which
    happens at the precision limit of the objective (on separable data, whose objective falls
    towards zero).

    With ``l1`` (a weight per coordinate) it minimizes the objective plus ``sum_i l1_i |x_i|``
    by OWL-QN (:func:`orthant_wise_iterations`); with ``bounds`` (lower, upper per coordinate)
    it minimizes it within the box (:func:`bounded_iterations`). Not both.
    """
    if l1 is not None and np.any(l1 > 0.0):
        return (yield from orthant_wise_iterations(x, max_iter, converged, history, l1))
    if bounds is not None:
        return (yield from bounded_iterations(x, max_iter, converged, history, *bounds))
    f, g = yield x
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []  # (s, y, 1 / y.s), oldest first
    start = f
    for _ in range(max_iter):
        direction = -_two_loop(g, pairs)
        slope = float(g @ direction)
        if slope >= 0.0:  # not a descent direction (rounding): restart from the gradient
            pairs.clear()
            direction, slope = -g, -float(g @ g)
            if slope == 0.0:  # a zero gradient: the minimum itself
                return x, True
        # The first step has no curvature to scale it: a unit move, as MLlib's first step.
        step = 1.0 if pairs else 1.0 / max(float(np.sqrt(g @ g)), 1e-12)
        for _ in range(MAX_HALVINGS):
            candidate = x + step * direction
            f_new, g_new = yield candidate
            if f_new <= f + ARMIJO * step * slope:
                break
            step *= 0.5
        else:
            return x, True
        s, y_diff = candidate - x, g_new - g
        curvature = float(y_diff @ s)
        if curvature > 1e-10 * float(y_diff @ y_diff):  # keeps the inverse Hessian positive
            pairs.append((s, y_diff, 1.0 / curvature))
            del pairs[:-HISTORY]
        x, f, g = candidate, f_new, g_new
        history.append(f)
        if converged([start, *history]):
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


def orthant_wise_iterations(
    x: np.ndarray,
    max_iter: int,
    converged: Callable[[list[float]], bool],
    history: list[float],
    l1: np.ndarray,
) -> Generator[np.ndarray, tuple[float, np.ndarray], tuple[np.ndarray, bool]]:
    """OWL-QN (Andrew and Gao, 2007; breeze's OWLQN, which MLlib uses) as a generator like
    :func:`iterations`: it is sent the smooth objective and gradient and minimizes them plus
    ``sum_i l1_i |x_i|``, the objective it records.

    Each iteration: the pseudo-gradient; the L-BFGS direction from it, with the components
    that do not descend along it zeroed; a backtracking search whose points are projected
    onto the orthant of the current point (the pseudo-gradient's sign where a coordinate is
    zero), so coordinates that would cross zero stop at exactly zero. The correction pairs
    are built from the smooth gradients, as in the paper. Coordinates with ``l1_i = 0`` (the
    intercepts) are neither projected nor sign-restricted. Every step is a pure function of
    the values sent, so replicas that are sent the same sums stay bit-identical.
    """
    penalized = l1 > 0.0
    f, g = yield x
    F = f + float(l1 @ np.abs(x))
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    start = F
    for _ in range(max_iter):
        pg = pseudo_gradient(x, g, l1)
        direction = -_two_loop(pg, pairs)
        direction[penalized & (direction * pg >= 0.0)] = 0.0
        slope = float(pg @ direction)
        if slope >= 0.0:  # nothing left of the quasi-Newton direction: restart
            pairs.clear()
            direction, slope = -pg, -float(pg @ pg)
            if slope == 0.0:  # zero in the pseudo-gradient: the minimum itself
                return x, True
        orthant = np.where(x != 0.0, np.sign(x), -np.sign(pg))
        step = 1.0 if pairs else 1.0 / max(float(np.sqrt(pg @ pg)), 1e-12)
        for _ in range(MAX_HALVINGS):
            candidate = x + step * direction
            candidate[penalized & (candidate * orthant <= 0.0)] = 0.0
            f_new, g_new = yield candidate
            F_new = f_new + float(l1 @ np.abs(candidate))
            if F_new < F and F_new <= F + ARMIJO * float(pg @ (candidate - x)):
                break
            step *= 0.5
        else:
            return x, True
        _remember(pairs, candidate - x, g_new - g)
        x, f, g, F = candidate, f_new, g_new, F_new
        history.append(F)
        if converged([start, *history]):
            return x, True
    return x, False


def bounded_iterations(
    x: np.ndarray,
    max_iter: int,
    converged: Callable[[list[float]], bool],
    history: list[float],
    lower: np.ndarray,
    upper: np.ndarray,
) -> Generator[np.ndarray, tuple[float, np.ndarray], tuple[np.ndarray, bool]]:
    """A projected L-BFGS within the box ``lower <= x <= upper``, as a generator like
    :func:`iterations` (MLlib uses L-BFGS-B; both reach the box-constrained minimum).

    The start is clipped into the box, as MLlib does. Each iteration fixes the active set,
    the coordinates at a bound whose gradient points out of the box; the L-BFGS direction
    is computed from the gradient of the free ones and has no component on the active set
    nor out of the box at a bound (Bertsekas' projected quasi-Newton); when that leaves no
    descent, the projected gradient is taken. The backtracking search clips its points to
    the box and asks for an Armijo decrease along the step actually taken. Deterministic.
    In both, a step must lower the objective: at its precision limit the search gives up
    and the iteration ends, converged.
    """
    x = np.clip(x, lower, upper)
    f, g = yield x
    pairs: list[tuple[np.ndarray, np.ndarray, float]] = []
    start = f
    for _ in range(max_iter):
        at_lower, at_upper = x <= lower, x >= upper
        free = ~((at_lower & (g > 0.0)) | (at_upper & (g < 0.0)))
        free_gradient = np.where(free, g, 0.0)
        direction = -_two_loop(free_gradient, pairs)
        direction[~free | (at_lower & (direction < 0.0)) | (at_upper & (direction > 0.0))] = 0.0
        if float(g @ direction) >= 0.0:  # no quasi-Newton descent: the projected gradient
            pairs.clear()
            direction = -free_gradient
            if not direction.any():  # the gradient points out of the box where it is not 0
                return x, True
        step = 1.0 if pairs else 1.0 / max(float(np.sqrt(direction @ direction)), 1e-12)
        for _ in range(MAX_HALVINGS):
            candidate = np.clip(x + step * direction, lower, upper)
            f_new, g_new = yield candidate
            if f_new < f and f_new <= f + ARMIJO * float(g @ (candidate - x)):
                break
            step *= 0.5
        else:
            return x, True
        _remember(pairs, candidate - x, g_new - g)
        x, f, g = candidate, f_new, g_new
        history.append(f)
        if converged([start, *history]):
            return x, True
    return x, False


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
    # Its state is a few vectors, but a retried stage would repeat at most a few full passes.
    checkpoints = False

    def start(self, initial: tuple[np.ndarray, np.ndarray] | None) -> None:
        super().start(initial)
        config = self.config
        K, D = config.num_classes, config.num_features
        self.penalty = Penalty.of(config)
        x = np.zeros(K * (D + 1))
        if initial is not None:
            x[: K * D] = np.asarray(initial[0], dtype=np.float64).ravel()
            x[K * D :] = initial[1] if config.fit_intercept else 0.0

        def settled(history: list[float]) -> bool:  # the start's objective first
            return objective_settled(history, config.tol, ITERATION_WINDOW, ITERATION_FLOOR)

        # L1 makes it OWL-QN, bounds a bound-constrained L-BFGS: the same exchange per
        # evaluation, the smooth sums, and the L1 term added by every worker alike.
        penalty = self.penalty
        self._steps = iterations(
            x, config.max_iter, settled, self.history,
            penalty.coordinate_l1(K, D), penalty.coordinate_bounds(K, D),
        )  # fmt: skip
        self._point = next(self._steps)
        self._result: tuple[np.ndarray, bool] | None = None

    @classmethod
    def why_not(cls, facts: FitFacts, mode: str) -> str | None:
        if mode in ("broadcast", "sharded"):
            return f"exchange='{mode}' trains with minibatch steps"
        if facts.sync_interval != 1:
            return f"syncInterval is {facts.sync_interval}; L-BFGS exchanges every iteration"
        if facts.validation:
            return "validationIndicatorCol is set; L-BFGS does not score held-out rows"
        return None

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
        loss, gradient = numerics.loss_and_gradient_sums(W, b, data.X, data.y, data.w)
        return np.concatenate([[loss], gradient.ravel()])

    def encode(self, sums: np.ndarray):
        return codec.encode_sums(sums)

    def decode(self, batch) -> np.ndarray:
        return codec.sums_array(batch)

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


def as_vector(gradient: np.ndarray) -> np.ndarray:
    """A K x (D + 1) gradient in the iteration's layout: W's rows, then b."""
    return np.concatenate([gradient[:, :-1].ravel(), gradient[:, -1]])
