"""MLflow: a fit logs its training curve and outcome to the active run, autologging logs a model
that loads back and scores the same, and a fit without a run (or without mlflow) logs nothing.

Every test but the last two needs mlflow (the ``mlflow`` fixture skips without it) and talks to a
real SQLite tracking store in a temporary directory.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from svb_spark import SVBLogisticRegression
from svb_spark.tracking import ENABLED_CONF, FitTracker

ALLOWLIST_CONF = "spark.mlflow.pysparkml.autolog.logModelAllowlistFile"
MODEL_CLASS = "svb_spark.classification.SVBLogisticRegressionModel"


@pytest.fixture(scope="module")
def tracking_store(tmp_path_factory):
    """(tracking URI, experiment id) of a SQLite store whose artifacts stay in a temp dir."""
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.create_experiment("svb", artifact_location=(root / "artifacts").as_uri())
    return uri, experiment


@pytest.fixture
def mlflow(tracking_store, monkeypatch):
    """mlflow, pointed at the test store; no run is left active afterwards."""
    import mlflow

    uri, experiment = tracking_store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", experiment)
    yield mlflow
    while mlflow.active_run() is not None:
        mlflow.end_run()


@pytest.fixture
def client(mlflow, tracking_store):
    return mlflow.tracking.MlflowClient(tracking_store[0])


@pytest.fixture
def autolog(mlflow, spark, tmp_path, monkeypatch):
    """``mlflow.pyspark.ml.autolog()`` with an allowlist file that adds SVB's model to MLflow's
    own list, given by the Spark conf as docs/mlflow.md says."""
    import importlib.resources

    import mlflow.models
    import mlflow.pyspark.ml

    # log_model infers the model's pip requirements by loading it in a subprocess, which starts
    # a second Spark; the tests take MLflow's default requirements instead.
    monkeypatch.setattr(
        mlflow.models, "infer_pip_requirements", lambda path, flavor, fallback=None: fallback
    )

    builtin = importlib.resources.files("mlflow.pyspark.ml") / "log_model_allowlist.txt"
    allowlist = tmp_path / "allowlist.txt"
    allowlist.write_text(f"{builtin.read_text()}\n{MODEL_CLASS}\n")
    # The session is shared, so the key goes into its live SparkConf, where autolog() reads it,
    # rather than into the builder as a user would.
    conf = spark.sparkContext._conf
    conf.set(ALLOWLIST_CONF, str(allowlist))
    try:
        mlflow.pyspark.ml.autolog(
            log_models=True, log_datasets=False, log_input_examples=False, silent=True
        )
        yield mlflow
    finally:
        mlflow.pyspark.ml.autolog(disable=True)
        conf._jconf.remove(ALLOWLIST_CONF)


def _history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    metrics = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in metrics], [m.value for m in metrics]


def _probabilities(model, frame) -> np.ndarray:
    rows = model.transform(frame).select("probability").collect()
    return np.array([row.probability.toArray() for row in rows])


def _assert_fit_logged(client, run_id: str, summary, live: bool = True) -> None:
    """The run holds the fit's curve (one value per epoch) and outcome."""
    epochs = list(range(summary.totalIterations))
    steps, values = _history(client, run_id, "objective")
    assert steps == epochs
    assert values == pytest.approx(summary.objectiveHistory, rel=1e-12)
    steps, values = _history(client, run_id, "rowsPerSecond")
    if live:  # only the driver's live progress messages carry rows/s
        assert steps == epochs and min(values) > 0
    run = client.get_run(run_id)
    assert run.data.metrics["totalIterations"] == summary.totalIterations
    assert run.data.metrics["bytesPerStep"] == pytest.approx(summary.bytesPerStep)
    tags = run.data.tags
    assert tags["svb.stopReason"] == summary.stopReason
    assert tags["svb.exchange"] == summary.exchange
    assert tags["svb.solver"] == summary.solver


def test_an_autologged_fit_leaves_params_curve_tags_and_a_model_that_scores_the_same(
    autolog, client, digits_frames
):
    import mlflow.pyfunc
    import mlflow.spark

    train, test = digits_frames
    model = SVBLogisticRegression(numWorkers=2, maxIter=5, seed=0).fit(train)
    run = mlflow.last_active_run()

    assert run.data.params["maxIter"] == "5" and run.data.params["solver"] == "auto"
    assert run.data.tags["estimator_class"] == "svb_spark.classification.SVBLogisticRegression"
    assert model.summary.solver == "lbfgs"  # digits' default: the curve is per iteration
    _assert_fit_logged(client, run.info.run_id, model.summary)

    expected = _probabilities(model, test)
    uri = f"runs:/{run.info.run_id}/model"
    np.testing.assert_array_equal(_probabilities(mlflow.spark.load_model(uri), test), expected)

    # The pyfunc flavor scores pandas rows through the active SparkSession: arrays of floats in
    # the features column become vectors, the prediction column comes back.
    rows = test.select("features").collect()
    features = test.sparkSession.createDataFrame(rows).toPandas()
    features["features"] = features["features"].map(lambda v: v.toArray().tolist())
    predicted = np.asarray(mlflow.pyfunc.load_model(uri).predict(features)).ravel()
    np.testing.assert_array_equal(predicted, expected.argmax(axis=1))


def test_an_autologged_pipeline_logs_the_inner_fit_and_a_model_that_scores_the_same(
    autolog, client, digits_frames
):
    import mlflow.spark
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import StandardScaler

    train, test = digits_frames
    pipeline = Pipeline(
        stages=[
            StandardScaler(inputCol="features", outputCol="scaled"),
            SVBLogisticRegression(featuresCol="scaled", numWorkers=2, maxIter=5, seed=0),
        ]
    )
    model = pipeline.fit(train)
    run = mlflow.last_active_run()

    _assert_fit_logged(client, run.info.run_id, model.stages[-1].summary)
    loaded = mlflow.spark.load_model(f"runs:/{run.info.run_id}/model")
    np.testing.assert_array_equal(_probabilities(loaded, test), _probabilities(model, test))


@pytest.mark.parametrize("family", ["auto", "multilabel"])
def test_a_fit_in_a_run_logs_the_held_out_loss_and_accuracy_per_epoch(
    mlflow, client, spark, request, family
):
    from pyspark.sql import functions as F

    from tests.support.data import tagged_frame

    if family == "multilabel":  # its held-out accuracy is the rows' mean F1 (auto picks it)
        train, _ = tagged_frame(spark, rows=300)
    else:
        train, _ = request.getfixturevalue("digits_frames")
    held_out = train.withColumn("held_out", F.rand(seed=1) < 0.2)
    estimator = SVBLogisticRegression(
        numWorkers=2, maxIter=4, seed=0, validationIndicatorCol="held_out", validationTol=0.0
    )
    with mlflow.start_run() as run:
        model = estimator.fit(held_out)

    summary = model.summary
    assert model.getFamily() == family
    _assert_fit_logged(client, run.info.run_id, summary)
    steps, values = _history(client, run.info.run_id, "validationLoss")
    assert steps == list(range(len(summary.validationHistory))) and steps
    assert values == pytest.approx(summary.validationHistory, rel=1e-12)
    steps, values = _history(client, run.info.run_id, "validationAccuracy")
    assert steps == list(range(len(summary.validationAccuracy))) and steps
    assert values == pytest.approx(summary.validationAccuracy, rel=1e-12)
    assert client.get_run(run.info.run_id).data.params == {}  # params are autologging's


def test_a_fit_without_an_active_run_logs_nothing(mlflow, client, tracking_store, digits_frames):
    train, _ = digits_frames
    experiment = tracking_store[1]
    before = client.search_runs([experiment])
    SVBLogisticRegression(numWorkers=2, maxIter=2, seed=0).fit(train)
    assert mlflow.active_run() is None
    assert len(client.search_runs([experiment])) == len(before)


def test_the_spark_conf_switches_the_logging_off(mlflow, client, spark, digits_frames):
    train, _ = digits_frames
    spark.conf.set(ENABLED_CONF, "false")
    try:
        with mlflow.start_run() as run:
            SVBLogisticRegression(numWorkers=2, maxIter=2, seed=0).fit(train)
    finally:
        spark.conf.unset(ENABLED_CONF)
    assert client.get_run(run.info.run_id).data.metrics == {}


def test_a_failing_store_costs_the_fit_nothing_and_warns_once(
    mlflow, monkeypatch, caplog, digits_frames
):
    def refuse(*args, **kwargs):
        raise ConnectionError("tracking server unreachable")

    monkeypatch.setattr(mlflow.tracking.MlflowClient, "log_batch", refuse)
    train, test = digits_frames
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=4, tol=0.0, seed=0)
    with caplog.at_level(logging.WARNING, logger="svb_spark"), mlflow.start_run():
        model = estimator.fit(train)

    assert model.summary.totalIterations == 4
    assert model.evaluate(test).accuracy > 0.8
    warned = [r for r in caplog.records if "MLflow logging" in r.getMessage()]
    assert len(warned) == 1 and "tracking server unreachable" in warned[0].getMessage()


def test_epochs_missing_from_the_live_messages_come_from_the_summary(mlflow, client):
    """Spark Connect and the broadcast mode have no driver listener, a retried stage resends
    epochs: the run still ends with one value per epoch."""
    with mlflow.start_run() as run:
        tracker = FitTracker(client, run.info.run_id)
        tracker.on_progress({"epoch": 2, "objective": 0.7, "rows_per_second": 10.0})
        tracker.on_progress({"epoch": 2, "objective": 0.7, "rows_per_second": 11.0})  # resent
        summary = SimpleNamespace(
            objectiveHistory=[0.9, 0.7, 0.6],
            validationHistory=[1.0, 0.8, 0.75],
            validationAccuracy=[0.5, 0.6, 0.65],
            totalIterations=3,
            bytesPerStep=123.0,
            stopReason="maxIter",
            exchange="p2p",
            solver="sgd",
        )
        tracker.finish(summary)
        tracker.on_progress({"epoch": 3, "objective": 0.6, "rows_per_second": 12.0})  # late

    run_id = run.info.run_id
    assert _history(client, run_id, "objective") == ([0, 1, 2], [0.9, 0.7, 0.6])
    assert _history(client, run_id, "validationLoss") == ([0, 1, 2], [1.0, 0.8, 0.75])
    assert _history(client, run_id, "validationAccuracy") == ([0, 1, 2], [0.5, 0.6, 0.65])
    assert _history(client, run_id, "rowsPerSecond") == ([1], [10.0])
    assert client.get_run(run_id).data.tags["svb.solver"] == "sgd"


class _MlflowBlocker(importlib.abc.MetaPathFinder):
    """Makes ``import mlflow`` fail as if it were not installed, and records every attempt."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, name, path, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            self.attempts.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_a_fit_without_mlflow_works_and_never_tries_to_import_it(spark, digits_frames, monkeypatch):
    # Runs where mlflow is installed (its modules are hidden for the test) and where it is not.
    for name in [n for n in sys.modules if n == "mlflow" or n.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    blocker = _MlflowBlocker()
    monkeypatch.setattr(sys, "meta_path", [blocker, *sys.meta_path])
    with pytest.raises(ModuleNotFoundError):
        import mlflow  # noqa: F401

    train, _ = digits_frames
    model = SVBLogisticRegression(numWorkers=2, maxIter=3, seed=0).fit(train)
    assert model.summary.totalIterations > 0
    assert blocker.attempts == ["mlflow"]  # the test's own import only
