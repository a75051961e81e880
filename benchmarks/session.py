"""What every benchmark command shares: its Spark session, the cached rows its fits read,
progress lines, the untimed warm-up fit, the result file it writes and the markdown tables it
prints."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks import machine

RESULTS = Path(__file__).parent / "results"
WORKERS = 2  # every benchmark fits on two workers, one per core of the benchmark machine


def log(message: str) -> None:
    """Progress on stdout, with the wall clock, so a long run shows where it is."""
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def local_spark(app: str, driver_memory: str = "1g", one_blas_thread=False, **conf):
    """A ``local[2]`` session named ``svb_spark-<app>`` with Spark ``conf``. With
    ``one_blas_thread`` every JVM it starts gets one BLAS thread, as an executor owning one core
    has; the JVMs read the variables at launch, and this process's are restored."""
    from svb_spark.spark.session import local_session

    threads = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"} if one_blas_thread else {}
    with mock.patch.dict(os.environ, threads):
        return local_session(f"local[{WORKERS}]", app_name=f"svb_spark-{app}",
                             **{"spark.driver.memory": driver_memory, **conf})  # fmt: skip


def cached_frame(spark, X, y):
    """Rows ``X``, labels ``y`` as a cached DataFrame of one partition per worker."""
    from svb_spark import datasets

    frame = datasets.to_dataframe(spark, X, y, num_partitions=WORKERS).cache()
    frame.count()
    return frame


def warm_up(spark, mllib: bool = True, **svb_params) -> None:
    """One untimed short fit on digits of SVB (and MLlib's), so that no timed fit pays the
    session's first-job costs (JIT compilation, Python workers starting)."""
    from benchmarks import peers, workloads

    small = workloads.w2_digits()
    frame = cached_frame(spark, small.X_train, small.y_train)
    peers.fit_svb(frame, small.X_test, small.y_test, 2, numWorkers=WORKERS, **svb_params)
    if mllib:
        peers.fit_mllib(frame, small.X_test, small.y_test, 2)
    frame.unpersist()


def where_and_when() -> dict:
    """The machine, and its load average now: a result records it at its start."""
    return {"machine": machine.python_machine(), "load_average": machine.load_average()}


def write(result: dict, path: Path) -> Path:
    """Write ``result`` as JSON to ``path`` (numpy values as plain numbers and lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    log(f"wrote {path}")
    return path


def record_points(runs, path: Path, settings: dict) -> list[dict]:
    """Run ``runs`` (each returns one point) in order, logging every point and writing the
    result file after each, so that a later failure keeps the points before it."""
    points: list[dict] = []
    for run in runs:
        points.append(run())
        log(points[-1])
        write({**where_and_when(), **settings, "points": points}, path)
    return points


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return str(value)


def markdown_table(header: str, rows: list[list[str]], align: str = "") -> str:
    """A markdown table; ``header`` as "a | b | c", ``align`` one l or r per column (default:
    the first column left, the others right)."""
    columns = header.split(" | ")
    align = align or "l" + "r" * (len(columns) - 1)
    marks = ["---" if a == "l" else "---:" for a in align]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [columns, marks, *rows])
