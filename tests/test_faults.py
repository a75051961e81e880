"""Dead and stalled workers on a real Spark: Spark retries the barrier stage, the retry resumes
from the newest checkpoint, and nothing is left listening.

A test-only hook (SVB_SPARK_RECORD_WORKERS_TO in the executors' environment) makes every
barrier task record its rank, process id and Flight location, so a test can SIGKILL or
SIGSTOP a given worker mid-fit.
"""

import glob
import json
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from svb_spark import SVBLogisticRegression
from svb_spark.spark.task import _RECORD_WORKERS_ENV
from tests.support.data import planted_frame
from tests.support.jobs import run_job


@pytest.fixture
def recorded_workers(spark, tmp_path):
    """A directory where every barrier task of the next fits records itself."""
    directory = tmp_path / "workers"
    directory.mkdir()
    environment = spark.sparkContext.environment
    environment[_RECORD_WORKERS_ENV] = str(directory)
    yield directory
    del environment[_RECORD_WORKERS_ENV]


def _records(directory, rank):
    records = []
    for path in glob.glob(str(directory / f"rank{rank}-task*.json")):
        with open(path) as source:
            records.append(json.load(source))
    return sorted(records, key=lambda r: r["task"])


def _listening(location: str) -> bool:
    host, port = location.split("://")[1].rsplit(":", 1)
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, int(port))) == 0


def _estimator(checkpoints, timeout=120.0, exchange="p2p"):
    # SAGA on the replicated mesh: its checkpoints hold the most state (the replica and every
    # worker's memory); the class-sharded mode trains with SGD.
    return SVBLogisticRegression(
        weightCol="weight", numWorkers=2, maxIter=30, tol=0.0, dtype="float64",
        checkpointDir=str(checkpoints), checkpointInterval=2, exchangeTimeout=timeout,
        exchange=exchange, solver="saga" if exchange == "p2p" else "sgd",
    )  # fmt: skip


def _whole_checkpoint_steps(checkpoints) -> set[str]:
    def steps(pattern):
        return {path.rsplit("step-", 1)[1] for path in glob.glob(str(checkpoints / "*" / pattern))}

    replicated = steps("step-*") & steps("memory-00001-step-*")
    return replicated | (steps("block-00000-step-*") & steps("block-00001-step-*"))


def _interrupt_rank_1(workers, checkpoints, sig, events):
    """Once the first whole checkpoint exists, send ``sig`` to rank 1; then time the retry.

    Whole: the replica's file and, as the fit's solver is SAGA, rank 1's memory of the same
    step (rank 0 writes its memory before the replica's file); in the class-sharded mode, both
    workers' blocks of one step.
    """
    while not (_whole_checkpoint_steps(checkpoints) and _records(workers, 1)):
        time.sleep(0.02)
    victim = _records(workers, 1)[0]["pid"]
    events["pid"], events["sent"] = victim, time.perf_counter()
    os.kill(victim, sig)
    while len(_records(workers, 1)) < 2:
        time.sleep(0.02)
    events["retried"] = time.perf_counter()


@pytest.mark.parametrize(
    "sig, exchange",
    [(signal.SIGKILL, "p2p"), (signal.SIGSTOP, "p2p"), (signal.SIGKILL, "sharded")],
    ids=["killed", "stalled", "killed-sharded"],
)
def test_a_lost_worker_is_retried_and_the_fit_resumes_from_its_checkpoint(
    spark, recorded_workers, tmp_path, sig, exchange
):
    df = planted_frame(spark).cache()
    checkpoints = tmp_path / "checkpoints"
    expected = _estimator(checkpoints, exchange=exchange).fit(df)
    for path in glob.glob(str(recorded_workers / "*")):
        os.remove(path)

    events = {}
    interrupter = threading.Thread(
        target=_interrupt_rank_1, args=(recorded_workers, checkpoints, sig, events), daemon=True
    )
    interrupter.start()
    try:
        model = _estimator(checkpoints, timeout=3.0, exchange=exchange).fit(df)
    finally:
        if "pid" in events and sig == signal.SIGSTOP:
            try:  # Spark normally kills it with the failed stage
                os.kill(events["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    interrupter.join(5)

    # The retry went on from the checkpoint and ended exactly where the uninterrupted fit did.
    summary = model.summary
    assert summary.resumedFromStep > 0 and summary.resumedFromStep % 2 == 0
    assert summary.objectiveHistory == expected.summary.objectiveHistory
    np.testing.assert_allclose(
        model.coefficientMatrix.toArray(), expected.coefficientMatrix.toArray(), rtol=1e-6
    )
    # Detected within the exchange timeout (3 s) plus Spark's rescheduling.
    detected = events["retried"] - events["sent"]
    print(f"{signal.Signals(sig).name}: retry started {detected:.1f} s after the signal")
    assert detected < 30
    # Every Flight server of both attempts is gone, and so is the fit's checkpoint directory.
    locations = [r["location"] for rank in (0, 1) for r in _records(recorded_workers, rank)]
    assert len(locations) == 4
    assert not any(_listening(location) for location in locations)
    assert os.listdir(checkpoints) == []


def test_a_checkpoint_dir_that_cannot_be_made_fails_before_training(spark, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    estimator = _estimator(blocker / "checkpoints")
    with pytest.raises(ValueError, match="'checkpointDir' parameter .* no directory can be made"):
        estimator.fit(planted_frame(spark))


@pytest.mark.slow
def test_a_killed_worker_on_a_two_executor_cluster_is_retried_and_resumed():
    result = run_job("fault", "kill")
    print(f"SIGKILL on local-cluster: retry started {result['retry_after_seconds']:.1f} s later")
    assert result["resumed_from_step"] > 0 and result["retry_after_seconds"] < 30
    np.testing.assert_allclose(result["coefficients"], result["expected"], rtol=1e-6)
    assert len(result["executor_pids"]) >= 3  # two executors' workers, and the replacement
    assert result["listening"] == [] and result["checkpoints_left"] == []


@pytest.mark.slow
def test_a_stalled_worker_without_retries_fails_the_fit_with_a_clear_error_in_time():
    result = run_job("fault", "stall")
    print(f"SIGSTOP on local-cluster: the fit failed {result['failed_after_seconds']:.1f} s later")
    assert "could not deliver step" in result["error"] and "within 3 s" in result["error"]
    assert result["failed_after_seconds"] < 30
    assert result["interrupted_worker_gone"]
    assert result["listening"] == [] and result["checkpoints_left"] == []


def test_keyboard_interrupt_cancels_the_fit_and_leaves_no_flight_server(
    spark, recorded_workers, on_progress
):
    interrupted = []

    def interrupt_after_first_epoch(message):
        if not interrupted:
            interrupted.append(time.perf_counter())
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C

    estimator = SVBLogisticRegression(
        weightCol="weight", numWorkers=2, maxIter=100_000, tol=0.0, batchSize=8
    )
    on_progress(interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(planted_frame(spark))
    locations = [r["location"] for rank in (0, 1) for r in _records(recorded_workers, rank)]
    assert len(locations) == 2
    # Spark cancels the tasks, and their Python workers stop their servers or are killed.
    deadline = time.time() + 30
    while any(_listening(location) for location in locations) and time.time() < deadline:
        time.sleep(0.2)
    print(f"servers gone {time.perf_counter() - interrupted[0]:.1f} s after Ctrl-C")
    assert not any(_listening(location) for location in locations)
    # No job of the fit is left running.
    tracker = spark.sparkContext.statusTracker()
    while tracker.getActiveJobsIds() and time.time() < deadline:
        time.sleep(0.2)
    assert not tracker.getActiveJobsIds()
