"""Cancelling a fit's job group stops it, and the session stays usable. (Ctrl-C on the
driver is covered with the other faults, in test_faults.py.)"""

import threading
import time

import pytest

from svb_spark import SVBLogisticRegression


def _progress_threads():
    return [t for t in threading.enumerate() if t.name.startswith("svb-progress")]


def test_cancelling_the_job_group_stops_the_fit_and_the_next_fit_works(
    spark, digits_frames, on_progress, job_groups
):
    train, _ = digits_frames
    cancelled_at = []

    def cancel_after_first_epoch(message):
        if not cancelled_at:
            cancelled_at.append(time.perf_counter())
            spark.sparkContext.cancelJobGroup(job_groups[-1][0])

    estimator = SVBLogisticRegression(numWorkers=2, maxIter=100_000, tol=0.0, batchSize=8)
    on_progress(cancel_after_first_epoch)
    with pytest.raises(Exception, match="cancel"):
        estimator.fit(train)
    assert cancelled_at and time.perf_counter() - cancelled_at[0] < 30
    assert not _progress_threads()

    model = SVBLogisticRegression(numWorkers=2, maxIter=1).fit(train)
    assert model.summary.totalIterations == 1
