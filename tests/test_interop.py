"""Live progress, job groups and cancellation, MLlib interop and warm starts on local[2]."""

import logging
import signal
import threading
import time

import numpy as np
import pytest
from common_data import to_frame
from pyspark import SparkContext
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.functions import vector_to_array

from svb_spark import SVBLogisticRegression, SVBLogisticRegressionModel


@pytest.fixture(scope="module")
def digits_model(digits_frames):
    train, _ = digits_frames
    return SVBLogisticRegression(numWorkers=2, maxIter=8, dtype="float64").fit(train)


def _record_job_groups(monkeypatch):
    calls = []
    original = SparkContext.setJobGroup

    def recording(self, group, description, interruptOnCancel=False):
        calls.append((group, description, interruptOnCancel))
        return original(self, group, description, interruptOnCancel)

    monkeypatch.setattr(SparkContext, "setJobGroup", recording)
    return calls


def test_progress_reaches_the_driver_under_a_described_job_group(
    spark, digits_frames, monkeypatch, caplog
):
    train, _ = digits_frames
    groups = _record_job_groups(monkeypatch)
    messages = []
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=3, tol=0.0)
    estimator._on_progress = messages.append
    with caplog.at_level(logging.INFO, logger="svb_spark"):
        model = estimator.fit(train)

    history = model.summary.objectiveHistory
    assert [m["epoch"] for m in messages] == [1, 2, 3]
    assert [m["objective"] for m in messages] == pytest.approx(history, rel=1e-12)
    assert all(m["rows_per_second"] > 0 and m["bytes_sent"] > 0 for m in messages)
    assert messages[-1]["bytes_sent"] == model.summary.bytesSent
    assert "epoch 3/3  objective" in caplog.text and "rows/s" in caplog.text

    (group, description, interrupt) = groups[-1]
    assert description == "SVBLogisticRegression.fit: 10 classes x 64 features, 2 workers"
    assert interrupt is True
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(group)
    # The group is cleared afterwards, so the caller's later jobs are not labelled as the fit.
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None
    assert spark.sparkContext.getLocalProperty("spark.job.description") is None


def test_progress_listener_refuses_a_wrong_secret():
    from svb_spark.progress import ProgressReporter, ProgressServer

    seen = []
    server = ProgressServer("127.0.0.1", "right", seen.append)
    for secret in ("wrong", "right"):
        reporter = ProgressReporter(server.address, secret)
        reporter.send({"epoch": 1})
        reporter.close()
    deadline = time.time() + 5
    while not seen and time.time() < deadline:  # the listener reads in its own threads
        time.sleep(0.05)
    server.close()
    assert seen == [{"epoch": 1}]
    # A reporter whose listener is gone neither blocks nor raises.
    reporter = ProgressReporter(server.address, "right", timeout=0.5)
    started = time.perf_counter()
    reporter.send({"epoch": 2})
    reporter.close()
    assert time.perf_counter() - started < 2


def _progress_threads():
    return [t for t in threading.enumerate() if t.name.startswith("svb-progress")]


def test_cancelling_the_job_group_stops_the_fit_and_the_next_fit_works(
    spark, digits_frames, monkeypatch
):
    train, _ = digits_frames
    groups = _record_job_groups(monkeypatch)
    cancelled_at = []

    def cancel_after_first_epoch(message):
        if not cancelled_at:
            cancelled_at.append(time.perf_counter())
            spark.sparkContext.cancelJobGroup(groups[-1][0])

    estimator = SVBLogisticRegression(numWorkers=2, maxIter=100_000, tol=0.0, batchSize=8)
    estimator._on_progress = cancel_after_first_epoch
    with pytest.raises(Exception, match="cancel"):
        estimator.fit(train)
    assert cancelled_at and time.perf_counter() - cancelled_at[0] < 30
    assert not _progress_threads()

    model = SVBLogisticRegression(numWorkers=2, maxIter=1).fit(train)
    assert model.summary.totalIterations == 1


def test_keyboard_interrupt_cancels_the_fit(spark, digits_frames):
    train, _ = digits_frames
    interrupted_at = []

    def interrupt_after_first_epoch(message):
        if not interrupted_at:
            interrupted_at.append(time.perf_counter())
            # What Ctrl-C does: SIGINT to the driver's main thread, blocked in the job.
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    estimator = SVBLogisticRegression(numWorkers=2, maxIter=100_000, tol=0.0, batchSize=8)
    estimator._on_progress = interrupt_after_first_epoch
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(train)
    assert time.perf_counter() - interrupted_at[0] < 30
    # No job of the fit is left running.
    deadline = time.time() + 30
    while spark.sparkContext.statusTracker().getActiveJobsIds() and time.time() < deadline:
        time.sleep(0.2)
    assert not spark.sparkContext.statusTracker().getActiveJobsIds()


def _columns(frame, *names):
    rows = frame.select(*[vector_to_array(n).alias(n) for n in names[:-1]], names[-1]).collect()
    return [np.array([r[i] for r in rows], dtype=np.float64) for i in range(len(names))]


def test_to_mllib_predicts_the_same_and_saves_as_mllib(
    spark, digits_frames, digits_model, tmp_path
):
    _, test = digits_frames
    mllib = digits_model.toMLlib()
    assert isinstance(mllib, LogisticRegressionModel)
    assert mllib.numClasses == 10 and mllib.numFeatures == 64
    ours = _columns(digits_model.transform(test), "probability", "rawPrediction", "prediction")
    theirs = _columns(mllib.transform(test), "probability", "rawPrediction", "prediction")
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)

    path = str(tmp_path / "mllib")
    mllib.write().overwrite().save(path)
    loaded = LogisticRegressionModel.load(path)
    np.testing.assert_array_equal(
        loaded.coefficientMatrix.toArray(), digits_model.coefficientMatrix.toArray()
    )
    np.testing.assert_array_equal(
        _columns(loaded.transform(test), "probability", "prediction")[1], ours[2]
    )


def test_warm_start_from_a_converged_model_starts_lower(digits_frames, digits_model):
    train, _ = digits_frames
    cold = SVBLogisticRegression(numWorkers=2, maxIter=1, dtype="float64").fit(train)
    warm = (
        SVBLogisticRegression(numWorkers=2, maxIter=1, dtype="float64")
        .setInitialModel(digits_model)
        .fit(train)
    )
    first_cold = cold.summary.objectiveHistory[0]
    first_warm = warm.summary.objectiveHistory[0]
    assert first_warm < 0.5 * first_cold
    assert first_warm <= digits_model.summary.objectiveHistory[-1] * 1.5


def test_warm_start_from_mllib_and_in_broadcast_mode(spark, digits_frames, digits_model):
    train, _ = digits_frames
    # An MLlib model maps to the same start: one epoch from it equals one from the SVB model.
    runs = [
        SVBLogisticRegression(numWorkers=2, maxIter=1, dtype="float64", exchange=exchange)
        .setInitialModel(start)
        .fit(train)
        .summary.objectiveHistory[0]
        for start, exchange in (
            (digits_model, "p2p"),
            (digits_model.toMLlib(), "p2p"),
            (digits_model, "broadcast"),
        )
    ]
    assert runs[1] == pytest.approx(runs[0], rel=1e-12)
    assert runs[2] == pytest.approx(runs[0], rel=1e-9)


def test_warm_start_from_a_binomial_mllib_model(spark):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 3))
    y = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype(float)
    df = to_frame(spark, X, y)
    binomial = LogisticRegression(family="binomial", maxIter=50).fit(df)
    warm = SVBLogisticRegression(numWorkers=2, maxIter=1, initialModel=binomial).fit(df)
    cold = SVBLogisticRegression(numWorkers=2, maxIter=1).fit(df)
    assert warm.summary.objectiveHistory[0] < cold.summary.objectiveHistory[0]


def test_warm_start_shape_mismatch_is_a_clear_value_error(spark, digits_frames):
    train, _ = digits_frames
    wrong = SVBLogisticRegressionModel(np.zeros((10, 32)), np.zeros(10))
    with pytest.raises(ValueError, match="has 10 classes x 32 features but the data has 10 "):
        SVBLogisticRegression(numWorkers=2, maxIter=1, initialModel=wrong).fit(train)
    with pytest.raises(TypeError, match="initialModel must be"):
        SVBLogisticRegression(initialModel=np.zeros((10, 64)))


def test_estimator_with_an_initial_model_saves_its_other_params(digits_model, tmp_path):
    estimator = SVBLogisticRegression(maxIter=7, initialModel=digits_model)
    estimator.write().overwrite().save(str(tmp_path / "estimator"))
    loaded = SVBLogisticRegression.load(str(tmp_path / "estimator"))
    assert loaded.getMaxIter() == 7 and not loaded.isSet(loaded.initialModel)
    digits_model.write().overwrite().save(str(tmp_path / "model"))
    by_path = SVBLogisticRegression(initialModel=str(tmp_path / "model"))
    by_path.write().overwrite().save(str(tmp_path / "estimator2"))
    reloaded = SVBLogisticRegression.load(str(tmp_path / "estimator2"))
    assert reloaded.getInitialModel() == str(tmp_path / "model")


def test_notebook_progress_updates_one_display_in_place(monkeypatch):
    import IPython.display

    from svb_spark import progress

    class Handle:
        def __init__(self, text):
            self.texts = [text]

        def update(self, text):
            self.texts.append(text)

    handles = []

    def fake_display(obj, display_id=False):
        assert display_id is True
        handles.append(Handle(obj))
        return handles[-1]

    monkeypatch.setattr(progress, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    display = progress.ProgressDisplay("SVBLogisticRegression.fit: 3 classes x 2 features")
    for epoch in (1, 2):
        display(
            {
                "epoch": epoch,
                "epochs": 2,
                "objective": 0.5 / epoch,
                "rows_per_second": 1000.0,
                "bytes_sent": 2048 * epoch,
            }  # fmt: skip
        )
    assert len(handles) == 1
    assert handles[0].texts[-1] == (
        "SVBLogisticRegression.fit: 3 classes x 2 features: epoch 2/2  objective 0.250000  "
        "1,000 rows/s  4,096 bytes sent"
    )
