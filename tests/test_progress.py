"""Live progress of a fit: rank 0's epochs reach the driver's log or notebook display, under a
job group that names the fit."""

import logging
import subprocess
import sys
import time

import pytest

from svb_spark import SVBLogisticRegression


def test_progress_reaches_the_driver_under_a_described_job_group(
    spark, digits_frames, caplog, on_progress, job_groups
):
    train, _ = digits_frames
    messages = []
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=3, tol=0.0)
    on_progress(messages.append)
    with caplog.at_level(logging.INFO, logger="svb_spark"):
        model = estimator.fit(train)

    history = model.summary.objectiveHistory
    assert [m["epoch"] for m in messages] == [1, 2, 3]
    assert [m["objective"] for m in messages] == pytest.approx(history, rel=1e-12)
    assert all(m["rows_per_second"] > 0 and m["bytes_sent"] > 0 for m in messages)
    assert messages[-1]["bytes_sent"] == model.summary.bytesSent
    # digits train with L-BFGS at the defaults: its progress counts iterations.
    assert model.summary.solver == "lbfgs" and {m["unit"] for m in messages} == {"iterations"}
    assert "iteration 3/3  objective" in caplog.text and "rows/s" in caplog.text

    (group, description, interrupt) = job_groups[-1]
    assert description == "SVBLogisticRegression.fit: 10 classes x 64 features, 2 workers"
    assert interrupt is True
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(group)
    # The group is cleared afterwards, so the caller's later jobs are not labelled as the fit.
    assert spark.sparkContext.getLocalProperty("spark.jobGroup.id") is None
    assert spark.sparkContext.getLocalProperty("spark.job.description") is None


def test_progress_listener_refuses_a_wrong_secret():
    from svb_spark.control.progress import ProgressReporter, ProgressServer

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


def test_notebook_progress_updates_one_display_in_place(monkeypatch):
    import IPython.display

    from svb_spark.control import progress

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


def test_the_library_adds_no_logging_handler_but_the_command_line_does(monkeypatch):
    import subprocess
    import sys

    from svb_spark import cli

    # A fresh process: what importing the library and showing progress leave behind.
    code = (
        "import logging, svb_spark.control.progress as p; p.ProgressDisplay('a fit'); "
        "print([type(h).__name__ for h in logging.getLogger('svb_spark').handlers], "
        "logging.getLogger().handlers)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "['NullHandler'] []"

    library = logging.getLogger("svb_spark")
    monkeypatch.setattr(library, "handlers", [logging.NullHandler()])
    monkeypatch.setattr(library, "level", logging.NOTSET)
    cli._show_progress()
    assert any(type(h) is logging.StreamHandler for h in library.handlers)
    assert library.getEffectiveLevel() == logging.INFO


def test_outside_a_notebook_the_progress_display_does_not_import_ipython():
    # Importing IPython costs about 0.4 s, paid by the first fit of a spark-submit job.
    code = (
        "import sys\n"
        "from svb_spark.control import progress\n"
        "display = progress.ProgressDisplay('fit')\n"
        "print(progress._in_notebook(), 'IPython' in sys.modules)"
    )
    printed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert printed == "False False"
