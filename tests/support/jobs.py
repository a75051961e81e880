"""Run a job script of ``tests.jobs`` in a Python process of its own and read back its
``RESULT`` line.

A Python process holds one SparkContext, and the suite's local[2] session is already running,
so every test that needs another master (local-cluster, Spark Connect, its own local[2]) runs
a job script that prints ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_job(job: str, *args: str, timeout: float = 600) -> dict:
    """Run ``python -m tests.jobs.<job> args...`` from the repository root and return its
    ``RESULT`` JSON.

    The job imports ``tests.support`` as a package from the root; the root also goes on
    ``PYTHONPATH`` so that the executors' Python workers it starts can unpickle functions of
    ``tests`` modules, and import svb_spark from this checkout.
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    completed = subprocess.run(
        [sys.executable, "-m", f"tests.jobs.{job}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": path},
        cwd=ROOT,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])
