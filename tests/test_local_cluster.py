"""The same fit with two executor JVMs (local-cluster), in a process of its own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from common_data import planted_frame

from svb_spark import SVBLogisticRegression
from svb_spark.worker import executor_host

HERE = Path(__file__).parent


def test_executor_host_parsing():
    assert executor_host("10.1.2.3:41234") == "10.1.2.3"
    assert executor_host("worker-7.cluster:7077") == "worker-7.cluster"
    assert executor_host("[fe80::1]:5000") == "fe80::1"


def test_fit_on_two_executor_jvms_matches_local_mode(spark):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    completed = subprocess.run(
        [sys.executable, str(HERE / "cluster_job.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT ") :])

    workers = result["workers"]
    assert len(workers) == 2
    # Two executor processes, neither of them the driver.
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and result["driver_pid"] not in pids
    # Each Flight server listened on the host Spark gave for its own task.
    for worker in workers:
        location_host = worker["location"].split("://")[1].rsplit(":", 1)[0]
        assert location_host == executor_host(worker["address"])

    local = SVBLogisticRegression(weightCol="weight", numWorkers=2, maxIter=4, dtype="float64")
    expected = local.fit(planted_frame(spark)).coefficientMatrix.toArray()
    np.testing.assert_allclose(np.array(result["coefficients"]), expected, rtol=1e-9, atol=1e-12)
