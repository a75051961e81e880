"""``solver="auto"`` and ``exchange="auto"``: from the facts of a fit to the solver and the
exchange mode in force, and the check that a worker can hold what they need. Pure functions of
:class:`~svb_spark.core.solvers.base.FitFacts`, so the whole choice is testable without Spark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from svb_spark.core.modes import MODES, ClassSharded, choose_exchange
from svb_spark.core.solvers.averaged import AsgdSolver
from svb_spark.core.solvers.base import FitFacts, Solver
from svb_spark.core.solvers.lbfgs import AUTO_MAX_COEFFICIENTS, LbfgsSolver
from svb_spark.core.solvers.saga import SagaSolver
from svb_spark.core.solvers.sharded import ShardedSolver, class_blocks
from svb_spark.core.solvers.stochastic import SgdSolver
from svb_spark.core.stopping import (
    HOLDOUT_MIN_HELD_OUT,
    HOLDOUT_MIN_ROWS,
    HOLDOUT_MIN_ROWS_PER_CLASS,
)

# The solvers by the name the ``solver`` param gives them.
SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls for cls in (SgdSolver, SagaSolver, AsgdSolver, LbfgsSolver)
}


@dataclass(frozen=True)
class Choice:
    """The solver and exchange mode in force, why that mode, and the cost model's predicted
    bytes and seconds per step of every mode."""

    solver: str
    mode: str
    reason: str
    predicted_bytes: dict
    predicted_seconds: dict


def solver_class(solver: str, mode: str) -> type[Solver]:
    """The implementation that trains ``solver`` in exchange ``mode``: a mode that shards
    the classes trains SGD on blocks of them, every other mode on replicas."""
    return SOLVERS[solver] if MODES[mode].replicated else ShardedSolver


def why_not(solver: str, mode: str, facts: FitFacts) -> str | None:
    """Why ``solver`` cannot train a fit with ``facts`` in exchange ``mode``, or None."""
    return MODES[mode].why_not_solver(solver) or SOLVERS[solver].why_not(facts)


def automatic_holdout(
    fraction: float,
    tol: float,
    num_rows: int,
    solver: str,
    mode: str,
    validation: bool,
    num_classes: int = 2,
) -> float:
    """The fraction of rows a fit holds out to judge when to stop, or 0.

    A fit holds out ``fraction`` (validationFraction) of its rows when it has no validation
    column, ``tol`` > 0 (``tol=0`` asks for maxIter epochs), at least :data:`HOLDOUT_MIN_ROWS`
    rows of which the fraction is at least :data:`HOLDOUT_MIN_HELD_OUT`, at least
    :data:`HOLDOUT_MIN_ROWS_PER_CLASS` rows per class on average, and a solver that
    scores held-out rows (:attr:`Solver.scores_held_out`) in a mode that does
    (:meth:`~svb_spark.core.modes.ExchangeMode.scores_held_out`: all but broadcast).

    >>> automatic_holdout(0.1, 1e-6, 50_000, "sgd", "p2p", validation=False)
    0.1
    >>> automatic_holdout(0.1, 0.0, 50_000, "sgd", "p2p", validation=False)
    0.0
    >>> automatic_holdout(0.1, 1e-6, 50_000, "sgd", "p2p", validation=False, num_classes=10_000)
    0.0
    """
    if validation or tol <= 0.0 or num_rows < HOLDOUT_MIN_ROWS:
        return 0.0
    if num_rows < HOLDOUT_MIN_ROWS_PER_CLASS * max(num_classes, 2):  # a long tail: see there
        return 0.0
    if fraction * num_rows < HOLDOUT_MIN_HELD_OUT:
        return 0.0
    scored = solver_class(solver, mode).scores_held_out and MODES[mode].scores_held_out()
    return fraction if scored else 0.0


def holdout(facts: FitFacts, solver: str, mode: str) -> float:
    """The fraction of rows a fit with ``facts``, ``solver`` and ``mode`` holds out."""
    return automatic_holdout(
        facts.validation_fraction, facts.tol, facts.num_rows, solver, mode, facts.validation,
        facts.num_classes,
    )  # fmt: skip


def choose(facts: FitFacts, name: str = "SVBLogisticRegression") -> Choice:
    """The solver and the exchange mode for ``facts``: ``auto`` resolved, explicit choices
    checked against what they need (a ValueError that says why and what to do).

    The mode: ``auto`` shards the classes when a replica would not fit a worker; otherwise it
    takes the mode with the fastest predicted step, at the fit's numWorkers, among p2p, dense
    and, when SGD is in force on more than one worker, sharded.

    The solver: ``auto`` takes L-BFGS for the binomial family, and for dense rows and a model
    of at most AUTO_MAX_COEFFICIENTS, where a full pass is cheap and one exchange of the
    gradient replaces an epoch of latency-bound steps (when a worker can hold its vectors);
    for larger dense models SGD when the fit holds rows out to stop on (see
    :func:`automatic_holdout`), SAGA otherwise; SGD for sparse rows.
    """
    mode, reason, sent, seconds = _exchange_mode(facts, name)
    solver = _solver(facts, mode, name)
    if solver == LbfgsSolver.name:
        reason = (
            "solver lbfgs: every iteration each worker sends its loss and its "
            f"{facts.num_classes} x {facts.num_features + 1} gradient sum, in float64"
        )
    return Choice(solver, mode, reason, sent, seconds)


def _exchange_mode(facts: FitFacts, name: str):
    K, D, P = facts.num_classes, facts.num_features, facts.num_workers
    if facts.exchange == ClassSharded.name:
        class_blocks(K, P)  # raises if a worker would own no class
        if facts.sync_interval != 1:
            raise ValueError(
                f"exchange='sharded' needs syncInterval=1 (got {facts.sync_interval}): its "
                "steps are exact synchronous SGD. Set syncInterval=1 or use exchange='p2p'."
            )
    shardable = ClassSharded.why_not(facts) is None
    sgd = facts.sparse or facts.solver == SgdSolver.name
    sharding = shardable and sgd and P > 1
    # The modes of one barrier stage: the broadcast mode is only ever asked for.
    candidates = [
        mode.name
        for mode in MODES.values()
        if mode.runner == "barrier" and (mode.replicated or sharding)
    ]
    shape = dict(
        num_workers=P,
        batch_size=facts.batch_size,
        num_classes=K,
        num_features=D,
        itemsize=np.dtype(facts.dtype).itemsize,
        nonzeros_per_row=facts.nonzeros_per_row if facts.sparse else None,
    )
    fastest, sent, seconds = choose_exchange(candidates, **shape)
    if facts.exchange != "auto":
        return facts.exchange, "set by the exchange param", sent, seconds
    if shardable and not replica_fits(facts):
        return ClassSharded.name, (
            f"a replica of the {K} x {D} weights does not fit {facts.worker_memory_key}; a "
            f"block of {-(-K // P)} classes per worker does"
        ), sent, seconds  # fmt: skip
    others = ", ".join(f"{m} {seconds[m] * 1e3:.3g} ms" for m in candidates if m != fastest)
    return fastest, (
        f"the cost model predicts the fastest step: {fastest} {seconds[fastest] * 1e3:.3g} "
        f"ms against {others}"
    ), sent, seconds  # fmt: skip


def _solver(facts: FitFacts, mode: str, name: str) -> str:
    requested = facts.solver
    if requested != "auto":
        if why := why_not(requested, mode, facts):
            others = "'saga' or 'sgd'" if requested == LbfgsSolver.name else "'sgd'"
            raise ValueError(
                f"The 'solver' parameter of {name} is '{requested}' but {why}. Use "
                f"solver={others}, or 'auto' to pick the solver that applies."
            )
        return requested
    small = facts.num_classes * (facts.num_features + 1) <= AUTO_MAX_COEFFICIENTS
    # The binomial family's gradient is one row: even at 2^20 hashed features an iteration's
    # exchange (8 MB) costs less than the thousands of latency-bound steps of an SGD epoch
    # (benchmarks/results/binary.json: 200k sparse rows, L-BFGS 5.9 to 10.5 s against SGD's
    # 139 to 149 s and MLlib's 19.6 to 32.1 s, with the best held-out AUC and log loss).
    wanted = small and not facts.sparse or facts.num_classes == 1
    if wanted and why_not(LbfgsSolver.name, mode, facts) is None and _fits(LbfgsSolver, facts):
        return LbfgsSolver.name
    # SAGA's constant step converges to the unpenalized optimum, which a many-class model
    # overfits (benchmarks/results/stopping.json, 1000 classes x 1024 dense features from 30k
    # rows: SAGA 0.2588 in 77.7 s, where two epochs of SGD's decaying step had 0.3082 in
    # 19.6 s). Where held-out rows judge the stop, SGD stops near its best; without them
    # SAGA's converged model is the one tol can recognize.
    if why_not(SagaSolver.name, mode, facts) or holdout(facts, SgdSolver.name, mode):
        return SgdSolver.name
    return SagaSolver.name


def _fits(cls: type[Solver], facts: FitFacts) -> bool:
    """Whether a worker can hold what ``cls`` keeps (True where unknown)."""
    return facts.worker_memory is None or cls.memory_bytes(facts)[0] <= facts.worker_memory


def replica_fits(facts: FitFacts) -> bool:
    """Whether one replica of the K x D weights fits a worker (True where unknown)."""
    size = np.dtype(facts.dtype).itemsize
    available = facts.worker_memory
    return available is None or facts.num_classes * facts.num_features * size <= available


def check_memory(facts: FitFacts, solver: str, mode: str) -> None:
    """Raise ValueError, with the formula, when a worker cannot hold what ``solver`` in
    ``mode`` keeps (a lower bound: the update and the result travel in buffers of the same
    size, so passing it does not promise a fit); in the class-sharded mode also when the
    driver cannot assemble the float64 model."""
    cls = solver_class(solver, mode)
    needed, formula = cls.memory_bytes(facts)
    key, available = facts.worker_memory_key, facts.worker_memory
    size = np.dtype(facts.dtype).itemsize
    K, D = facts.num_classes, facts.num_features
    if facts.validation or holdout(facts, solver, mode):  # held-out rows keep the best model
        kept = -(-K // facts.num_workers) if cls is ShardedSolver else K
        needed += kept * D * size
        formula = f"{formula}, plus {kept} x {D} x {size} bytes for the best model kept"
    if available is not None and needed > available:
        if cls is ShardedSolver:
            raise ValueError(
                "The model does not fit in a worker's memory even split by classes: a worker "
                f"holds {formula}, = {needed:.0f} bytes ({needed / (1 << 30):.2f} GiB), but "
                f"{key} is {available} bytes ({available / (1 << 30):.2f} GiB). Raise {key}, "
                "use more workers"
                + (", use dtype='float32'" if size == 8 else "")
                + ", or reduce numFeatures."
            )
        raise ValueError(
            f"The model does not fit in a worker's memory: every worker holds a replica of the "
            f"weights, {formula} = {needed} bytes ({needed / (1 << 30):.2f} GiB), but "
            f"{key} is {available} bytes ({available / (1 << 30):.2f} GiB). Raise {key}"
            + (", use dtype='float32'" if size == 8 and cls is not LbfgsSolver else "")
            + (", use solver='sgd'" if cls is not SgdSolver else "")
            + ", or reduce numClasses or numFeatures (e.g. fewer buckets in "
            "pyspark.ml.feature.FeatureHasher)."
        )
    driver = facts.driver_memory
    if cls is ShardedSolver and driver is not None and K * D * 8 > driver:
        raise ValueError(
            "The driver assembles the model in float64: numClasses x numFeatures x 8 bytes = "
            f"{K} x {D} x 8 = {K * D * 8} bytes ({K * D * 8 / (1 << 30):.2f} GiB), but "
            f"spark.driver.memory is {driver} bytes ({driver / (1 << 30):.2f} GiB). Raise "
            "spark.driver.memory, or reduce numClasses or numFeatures."
        )
