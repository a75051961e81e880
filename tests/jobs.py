"""Run a test job script in a Python process of its own and read back its ``RESULT`` line.

A Python process holds one SparkContext, and the suite's local[2] session is already running,
so every test that needs another master (local-cluster, Spark Connect, its own local[2])
runs a script from this directory that prints ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run_job(script: str, *args: str, timeout: float = 600) -> dict:
    """Run ``tests/<script>`` with ``args`` and return its ``RESULT`` JSON.

    The job (and the executors' Python workers it starts) import svb_spark from this checkout
    and the test helpers from this directory.
    """
    path = [str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")]
    completed = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
        cwd=HERE.parent,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])
