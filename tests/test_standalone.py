"""conf/standalone.sh: a one-machine standalone cluster runs the train command and stops cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from svb_spark import cli
from tests.support.data import planted

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "conf" / "standalone.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_standalone_script_usage():
    completed = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and "usage:" in completed.stderr


@pytest.mark.slow
def test_standalone_cluster_trains_with_two_workers_and_stops(tmp_path):
    import pyspark

    state = tmp_path / "cluster"
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "SVB_STANDALONE_DIR": str(state),
        "SVB_MASTER_PORT": str(_free_port()),
        "SVB_MASTER_WEBUI_PORT": str(_free_port()),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }
    X, y, _ = planted(seed=1, n=200, K=3, D=5)
    data = tmp_path / "train.libsvm"
    data.write_text(
        "".join(
            f"{label} " + " ".join(f"{j + 1}:{v}" for j, v in enumerate(row)) + "\n"
            for row, label in zip(X, y)
        )
    )
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", "2"], env=env, capture_output=True, text=True, timeout=300
    )
    pids = [int(p.read_text()) for p in sorted(state.glob("*.pid"))]
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert len(pids) == 3 and all(_alive(pid) for pid in pids)
        spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
        master = f"spark://127.0.0.1:{env['SVB_MASTER_PORT']}"
        submitted = subprocess.run(
            [
                spark_submit,
                "--master",
                master,
                "--properties-file",
                "conf/spark-defaults.conf",
                "--conf",
                f"spark.pyspark.python={sys.executable}",
                "--executor-memory",
                "1g",
                cli.__file__,
                "train",
                "--input",
                str(data),
                "--format",
                "libsvm",
                "--output",
                str(tmp_path / "model"),
                "--param",
                "numWorkers=2",
                "--param",
                "maxIter=3",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert submitted.returncode == 0, submitted.stderr[-3000:]
        assert f"spark master         {master}" in submitted.stdout
        assert "workers              2" in submitted.stdout
    finally:
        stopped = subprocess.run(
            ["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=300
        )
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_alive(pid) for pid in pids)
    assert not list(state.glob("*.pid"))
