"""The driver's plan of a fit: how many workers, the validation column, the config every
worker trains with (the family, the solver and exchange mode in force, the rows held out),
the transport its workers talk over, and the fit's own checkpoint directory. Each function takes the
:class:`~svb_spark.classification.SVBLogisticRegression` whose params it reads."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import secrets

import numpy as np

from svb_spark.core.config import TrainingConfig
from svb_spark.core.loss import BINOMIAL, MULTINOMIAL, Loss
from svb_spark.core.modes import MODES
from svb_spark.core.multilabel import MULTILABEL
from svb_spark.core.solvers import SOLVERS, FitFacts, choose, solver_type
from svb_spark.core.solvers.auto import holdout as holdout_fraction
from svb_spark.core.solvers.lbfgs import mllib_intercepts
from svb_spark.spark.checkpoint import filesystem as checkpoint_filesystem
from svb_spark.spark.inspection import check_validation_column
from svb_spark.spark.session import (
    available_task_slots,
    check_barrier_mode_supported,
    default_parallelism,
    driver_memory,
    spark_or_session_conf,
    worker_memory,
)
from svb_spark.transport.config import TransportConfig
from svb_spark.transport.tls import tls_files_from_conf


def num_workers(estimator, spark) -> int:
    check_barrier_mode_supported(spark)
    requested = estimator.getNumWorkers() or default_parallelism(spark)
    slots = available_task_slots(spark)
    if slots is not None and requested > slots:
        raise ValueError(
            f"numWorkers={requested} but the cluster has only {slots} free task slot(s); a "
            "barrier stage needs one slot per worker at the same time. Set numWorkers to at "
            f"most {slots} or add executors/cores."
        )
    return requested


def validation_column(estimator, dataset) -> str | None:
    """The validation indicator column, checked against the exchange and the data, or None."""
    validation = estimator._validation_column()
    mode = MODES.get(estimator.getExchange())  # None for "auto"
    if validation and mode is not None and not mode.scores_held_out():
        scoring = ", ".join(f"'{m.name}'" for m in MODES.values() if m.scores_held_out())
        raise ValueError(
            f"validationIndicatorCol needs exchange={scoring} or 'auto'; the "
            f"{estimator.getExchange()} mode's rounds do not score held-out rows. Unset "
            "validationIndicatorCol or choose another exchange."
        )
    if validation:
        check_validation_column(dataset, validation)
    return validation


def plan_fit(estimator, spark, stats, num_workers: int):
    """The config every worker trains with, the facts the solver and exchange mode were
    chosen from, and the :class:`~svb_spark.core.solvers.Choice` ("auto" resolved)."""
    thresholds = estimator._thresholds()
    if thresholds and len(thresholds) != stats.num_classes:
        raise ValueError(
            f"The 'thresholds' parameter has {len(thresholds)} values but the data has "
            f"{stats.num_classes} classes; give one threshold per class."
        )
    loss = family_loss(estimator, stats.num_classes, stats.label_sets)
    rows = loss.rows(stats.num_classes)
    coefficient_bounds, intercept_bounds = bounds(estimator, rows, stats.num_features)
    config = TrainingConfig.from_statistics(
        rows,
        stats.num_features,
        stats.mean,
        stats.std,
        stats.density,
        fit_intercept=estimator.getFitIntercept(),
        standardization=estimator.getStandardization(),
        coefficient_bounds=coefficient_bounds,
        intercept_bounds=intercept_bounds,
        elastic_net=estimator.getElasticNetParam(),
        loss=loss,
        batch_size=estimator.getBatchSize(),
        max_iter=estimator.getMaxIter(),
        tol=estimator.getTol(),
        reg_param=estimator.getRegParam(),
        step_size=estimator.getStepSize(),
        seed=estimator.getSeed(),
        # "auto" is settled once the solver is known; the choice weighs the stochastic
        # solvers' float32 replicas (L-BFGS counts its float64 vectors itself).
        dtype="float32" if estimator.getDtype() == "auto" else estimator.getDtype(),
        sync_interval=estimator.getSyncInterval(),
        verify_interval=estimator.getVerifyInterval(),
        validation_tol=estimator.getValidationTol() if estimator._validation_column() else None,
    )
    key, available = worker_memory(spark)
    facts = FitFacts(
        num_classes=config.num_classes,
        num_features=config.num_features,
        num_workers=num_workers,
        num_rows=stats.num_rows,
        sparse=config.sparse,
        nonzeros_per_row=stats.nonzeros_per_row if config.sparse else None,
        batch_size=config.batch_size,
        dtype=config.dtype,
        sync_interval=config.sync_interval,
        validation=bool(estimator._validation_column()),
        solver=estimator.getSolver(),
        exchange=estimator.getExchange(),
        worker_memory=available,
        worker_memory_key=key,
        driver_memory=driver_memory(spark),
        tol=config.tol,
        validation_fraction=estimator.getValidationFraction(),
    )
    choice = choose(facts, type(estimator).__name__)
    dtype = training_dtype(estimator.getDtype(), choice.solver)
    config = dataclasses.replace(config, exchange=choice.mode, solver=choice.solver, dtype=dtype)
    config = dataclasses.replace(
        config, start_intercepts=mllib_intercepts(config, stats.class_weights, stats.weight_sum)
    )
    facts = dataclasses.replace(facts, dtype=dtype)
    holdout = holdout_fraction(facts, choice.solver, choice.mode)
    if holdout:
        config = dataclasses.replace(
            config, holdout_fraction=holdout, validation_tol=estimator.getValidationTol()
        )
    return config, facts, choice


def transport_config(estimator, spark, config: TrainingConfig) -> TransportConfig:
    """How the workers of the fit of ``config`` talk: the exchange timeout, the largest
    message the solver in force sends, and mutual TLS between the workers when the three
    spark.svb.tls.* keys are set."""
    return TransportConfig(
        timeout=estimator.getExchangeTimeout(),
        max_message_bytes=solver_type(config).max_message_bytes(config),
        tls=tls_files_from_conf(lambda key: spark_or_session_conf(spark, key)),
    )


def training_dtype(dtype: str, solver: str) -> str:
    """The dtype a fit of ``solver`` trains in: the param's, or for "auto" the solver's own.

    >>> training_dtype("auto", "lbfgs"), training_dtype("auto", "sgd")
    ('float64', 'float32')
    >>> training_dtype("float32", "lbfgs")
    'float32'
    """
    return SOLVERS[solver].auto_dtype if dtype == "auto" else dtype


def bounds(estimator, rows: int, num_features: int):
    """The bounds params as ((lower, upper) coefficients, (lower, upper) intercepts), each a
    float64 array or None, checked as MLlib checks them: ``rows`` x numFeatures and ``rows``
    values (1 for the binomial family), lower <= upper, L2 only, intercept bounds only with
    an intercept."""

    def value(name: str):
        param = estimator.getParam(name)
        return estimator.getOrDefault(param) if estimator.isSet(param) else None

    names = ("lowerBoundsOnCoefficients", "upperBoundsOnCoefficients",
             "lowerBoundsOnIntercepts", "upperBoundsOnIntercepts")  # fmt: skip
    given = {name: value(name) for name in names}
    if all(v is None for v in given.values()):
        return (None, None), (None, None)
    owner = type(estimator).__name__
    if estimator.getElasticNetParam() != 0.0:
        raise ValueError(
            f"{owner}: fitting under bound constrained optimization only supports L2 "
            f"regularization, but got elasticNetParam = {estimator.getElasticNetParam()}. Set "
            "elasticNetParam=0 or unset the bounds."
        )
    if not estimator.getFitIntercept() and (
        given["lowerBoundsOnIntercepts"] is not None or given["upperBoundsOnIntercepts"] is not None
    ):
        raise ValueError(
            f"{owner}: please don't set bounds on intercepts if fitting without intercept "
            "(fitIntercept=False)."
        )
    arrays = {}
    for name, bound in given.items():
        if bound is None:
            arrays[name] = None
            continue
        array = bound.toArray().astype(np.float64)
        shape = (rows, num_features) if "Coefficients" in name else (rows,)
        if array.shape != shape:
            expected = (
                "(1, number of features) for binomial regression, or (number of classes, "
                "number of features) for multinomial regression"
                if "Coefficients" in name
                else "1 for binomial regression, or the number of classes for multinomial "
                "regression"
            )
            raise ValueError(
                f"The '{name}' parameter of {owner} must be compatible with {expected}, i.e. "
                f"{shape} here, but found: {array.shape}."
            )
        arrays[name] = array
    for kind in ("Coefficients", "Intercepts"):
        lower, upper = arrays[f"lowerBoundsOn{kind}"], arrays[f"upperBoundsOn{kind}"]
        if lower is not None and upper is not None and (lower > upper).any():
            raise ValueError(
                f"lowerBoundsOn{kind} should always be less than or equal to "
                f"upperBoundsOn{kind}, but found: lowerBoundsOn{kind} = {lower.tolist()}, "
                f"upperBoundsOn{kind} = {upper.tolist()}."
            )
    return (
        (arrays["lowerBoundsOnCoefficients"], arrays["upperBoundsOnCoefficients"]),
        (arrays["lowerBoundsOnIntercepts"], arrays["upperBoundsOnIntercepts"]),
    )


def hold_coefficient_bounds(estimator, W: np.ndarray) -> None:
    """Clip the model's coefficients to the bounds params, in place. Training ran on
    standardized features, where a coefficient at its bound is ``bound x std``; mapped back
    by ``1 / std`` it can miss the user's bound by a rounding, which it must not."""
    (lower, upper), _ = bounds(estimator, *W.shape)
    if lower is not None or upper is not None:
        np.clip(W, lower, upper, out=W)


def family_loss(estimator, num_classes: int, label_sets: bool) -> Loss:
    """The fit's loss, from the family param as MLlib decides it ("auto" takes the binomial
    family for at most 2 classes) and, for label sets, the multi-label family."""
    family, label = estimator.getFamily(), estimator.getLabelCol()
    if label_sets and family not in ("auto", "multilabel"):
        raise ValueError(
            f"Column '{label}' holds label sets (an array of labels a row), which the "
            f"{family} family cannot train: it takes one class index a row. Set "
            "family='multilabel' (or 'auto'), or give each row one label."
        )
    if family == "multilabel" and not label_sets:
        raise ValueError(
            f"family='multilabel' trains on label sets, but column '{label}' holds one label a "
            "row. Make it array<double>, each row's label indices (e.g. F.array('"
            f"{label}') for one label a row), or set family='auto'."
        )
    if label_sets:
        return MULTILABEL
    if family == "binomial" and num_classes > 2:
        raise ValueError(
            f"Binomial family only supports 1 or 2 outcome classes but found {num_classes}. "
            "Set family='multinomial' or 'auto'."
        )
    binomial = family == "binomial" or (family == "auto" and num_classes <= 2)
    mode = MODES.get(estimator.getExchange())  # None for "auto"
    if binomial and mode is not None and not mode.replicated:
        raise ValueError(
            "exchange='sharded' splits the rows of the coefficients by class, but the "
            "binomial family has one row. Set family='multinomial' or use another exchange."
        )
    return BINOMIAL if binomial else MULTINOMIAL


def with_checkpoints(estimator, config: TrainingConfig) -> TrainingConfig:
    """``config`` with this fit's own checkpoint directory, made and checked here.

    A directory that cannot be made fails now, on the driver, not in rank 0 mid-fit.
    """
    base = estimator.getCheckpointDir()
    if not base or estimator.getCheckpointInterval() == -1:
        return config
    if "://" not in base:
        base = os.path.abspath(base)  # pyarrow.fs takes absolute paths or URIs
    fit = f"{estimator.uid}-{secrets.token_hex(8)}"  # one directory per fit
    directory = posixpath.join(base.rstrip("/"), fit)
    try:
        fs, path = checkpoint_filesystem(directory)
        fs.create_dir(path, recursive=True)
    except Exception as error:
        raise ValueError(
            f"The 'checkpointDir' parameter of {type(estimator).__name__} is {base!r}, where no "
            f"directory can be made ({error}). Give a writable path or Hadoop-compatible URI "
            "that every executor can reach, or leave checkpointDir unset."
        ) from None
    return dataclasses.replace(
        config, checkpoint_dir=directory, checkpoint_interval=estimator.getCheckpointInterval()
    )
