"""The driver's side of ``SVBLogisticRegression.fit``: validate and inspect the data, plan the
fit, run it (one barrier stage, or the broadcast mode's rounds) and build the model.

:mod:`svb_spark.classification` holds the public estimator and model and hands its ``_fit``
here; the numerics and the training loop live in :mod:`svb_spark.core`, the barrier task in
:mod:`svb_spark.spark.task`, and the choices of the plan in :mod:`svb_spark.planning`.
"""

from __future__ import annotations

import secrets
import time

import numpy as np

from svb_spark import planning
from svb_spark.control.delivery import ModelBuild
from svb_spark.control.progress import progress_listener
from svb_spark.core.config import TrainingConfig
from svb_spark.core.modes import MODES
from svb_spark.core.solvers import check_memory
from svb_spark.params import validate_param_values
from svb_spark.spark.broadcast import fit_by_broadcast, require_spark_context
from svb_spark.spark.checkpoint import remove_checkpoints
from svb_spark.spark.contract import training_frame
from svb_spark.spark.inspection import check_columns, class_labels, inspect_training_data
from svb_spark.spark.session import classic_conf, job_group, spark_context
from svb_spark.spark.task import fit_by_barrier_stage
from svb_spark.summary import FitRecord
from svb_spark.tracking import fit_tracker
from svb_spark.warm_start import initial_weights


def fit_model(estimator, dataset, model_class) -> tuple[object, TrainingConfig]:
    """Fit ``estimator`` (an SVBLogisticRegression) on ``dataset``.

    Parameters
    ----------
    estimator : SVBLogisticRegression
        Whose params the fit follows; the model copies them and keeps its uid.
    dataset : DataFrame
    model_class : type
        The model to build (SVBLogisticRegressionModel): made from ``(W, b)``, and used to
        load an ``initialModel`` given as a saved model's path.

    Returns
    -------
    tuple
        The model, with its training summary, and the config it was trained with ("auto"
        resolved).
    """
    started = time.perf_counter()
    validate_param_values(estimator)
    features = estimator.getFeaturesCol()
    label, weight = estimator.getLabelCol(), estimator._weight_column()
    check_columns(dataset.schema, features, label, weight)
    spark = dataset.sparkSession
    asked = MODES.get(estimator.getExchange())  # None for "auto"
    if asked is not None and asked.runner == "rounds":  # the driver broadcasts every round
        require_spark_context(spark)
    validation = planning.validation_column(estimator, dataset)
    num_workers = planning.num_workers(estimator, spark)
    stats = inspect_training_data(dataset, features, label, weight, estimator.getNumClasses())
    inspected = time.perf_counter()
    config, facts, choice = planning.plan_fit(estimator, spark, stats, num_workers)
    mode, reason = choice.mode, choice.reason
    rounds = MODES[mode].runner == "rounds"
    check_memory(facts, config.solver, mode)
    initial = _initial_weights(estimator, config, model_class)
    training = training_frame(
        dataset, features, label, weight, num_workers, validation, stats=stats,
        holdout=config.holdout_fraction, seed=config.seed,
    )  # fmt: skip
    description = (
        f"{type(estimator).__name__}.fit: {stats.num_classes} classes x {stats.num_features} "
        f"features, {num_workers} workers"
    )
    if not rounds:  # the rounds' driver holds the state between rounds
        # Made last: removed in the finally below.
        config = planning.with_checkpoints(estimator, config)
    sc = spark_context(spark)
    # Classic mode: the warm start travels once per executor by TorrentBroadcast instead of
    # inside every task's closure. Spark Connect has no SparkContext: closure it is.
    shipped = sc.broadcast(initial) if sc is not None and initial is not None else initial
    secret = secrets.token_urlsafe(32)
    build = ModelBuild(config.num_classes, config.num_features, config.scale, config.mean)
    tracker = fit_tracker(spark)  # None unless an MLflow run is active: see tracking.py
    try:
        with (
            job_group(spark, description),
            progress_listener(
                classic_conf(spark),
                secret,
                description,
                not rounds,
                tracker and tracker.on_progress,
            ) as progress,
        ):
            if rounds:
                result, _ = fit_by_broadcast(
                    spark, training, config, secrets.token_hex(8), initial=shipped
                )
            else:
                transport = planning.transport_config(estimator, spark, config)
                result = fit_by_barrier_stage(
                    training, config, transport, secret, shipped, progress, build
                )
    finally:
        if shipped is not initial:
            shipped.destroy()
        if config.checkpoint_dir is not None:
            remove_checkpoints(config.checkpoint_dir)
    trained = time.perf_counter()

    W, b = build.finish(result.W, result.b)
    planning.hold_coefficient_bounds(estimator, W)
    result.W = result.b = None  # the summary keeps the record, not a second K x D copy
    if config.elastic_net > 0 and config.loss.centered_intercepts and config.fit_intercept:
        # An L2 fit's intercepts already are centered (its updates sum to zero over the
        # classes); L1's thresholds break that symmetry. (Bounds, which pin intercepts,
        # refuse L1.)
        b -= b.mean()
    model = estimator._copyValues(model_class(W, b))
    model._resetUid(estimator.uid)  # as MLlib's: the model keeps its estimator's uid
    if config.loss.label_sets:  # "auto" resolved: the model scores (and saves) as multi-label
        model._set(family="multilabel")
    model._labels = class_labels(dataset.schema[label], model.numClasses)
    record = FitRecord(
        result=result,
        num_workers=num_workers,
        exchange=mode,
        exchange_reason=reason,
        predicted_bytes_per_step=choice.predicted_bytes,
        predicted_seconds_per_step=choice.predicted_seconds,
        sync_interval=config.sync_interval,
        solver=config.solver,
        timings={"inspect": inspected - started, "train": trained - inspected},
    )
    model._summary = model._training_summary(dataset, record)
    if tracker is not None:
        tracker.finish(model.summary)
    return model, config


def _initial_weights(
    estimator, config: TrainingConfig, model_class
) -> tuple[np.ndarray, np.ndarray] | None:
    """initialModel's (W, b) in the standardized space training runs in, or None. A saved
    model's path is loaded here, where the model class is known."""
    if not estimator.isDefined(estimator.initialModel) or estimator.getInitialModel() is None:
        return None
    model = estimator.getInitialModel()
    if isinstance(model, str):
        model = model_class.load(model)
    return initial_weights(model, config, type(estimator).__name__)
