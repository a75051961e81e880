"""A first fit in a fresh process, as ``spark-submit`` starts one, against the later fits.

    python -m benchmarks.cold_start [--rounds 2]

Each round starts one fresh Python process (and JVM) per way, in turn: SVBLogisticRegression
at its defaults; the same after one trivial ``mapInArrow`` job over the training frame, which
pays what Spark charges any session's first Python job and first conversion of a vector
column to Arrow, so that what the first fit still pays over later fits is the library's own;
and MLlib's LogisticRegression at its defaults. Each process builds the same job (16,000 dense
rows x 16 features, 26 classes, cached), then fits three times. It prints and writes
(``benchmarks/results/cold_start.json``) every fit's seconds and, for SVB, its seconds outside
the loop (the fit minus its round phases).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks import machine, peers, session
from benchmarks.session import markdown_table

RESULTS = session.RESULTS / "cold_start.json"
WAYS = ("svb", "svb_after_a_python_job", "mllib")


def one_process(way: str) -> dict:
    """The three fits of one fresh process (this one)."""
    from pyspark.ml.classification import LogisticRegression

    from svb_spark import SVBLogisticRegression, datasets

    started = time.perf_counter()
    spark = session.local_spark(f"cold-start-{way}")
    out: dict = {"way": way, "session_s": time.perf_counter() - started}
    prepared = time.perf_counter()
    X, y = datasets.planted(16_000, num_features=16, num_classes=26, seed=1)
    frame = session.cached_frame(spark, X, y)
    out["data_s"] = time.perf_counter() - prepared
    if way == "svb_after_a_python_job":
        began = time.perf_counter()
        frame.mapInArrow(lambda batches: (b.slice(0, 0) for b in batches), frame.schema).collect()
        out["python_job_s"] = time.perf_counter() - began
    out["fits"] = []
    for _ in range(3):
        estimator = LogisticRegression() if way == "mllib" else SVBLogisticRegression()
        model, seconds = peers.timed_fit(estimator, frame)
        out["fits"].append({"seconds": seconds})
        if way != "mllib":
            loop = peers.loop_seconds(model.summary.timings)
            out["fits"][-1]["outside_loop"] = seconds - loop
    spark.stop()
    return out


def table(processes: list[dict]) -> str:
    """One row per process: its first fit, its later fits, and what the first paid over them."""
    rows = []
    for p in processes:
        first, later = p["fits"][0], p["fits"][1:]
        key = "outside_loop" if "outside_loop" in first else "seconds"
        over = first[key] - min(f[key] for f in later)
        job = f"{p['python_job_s']:.2f}" if "python_job_s" in p else "-"
        rows.append([p["way"], f"{p['data_s']:.1f}", job, f"{first['seconds']:.2f}",
                     " / ".join(f"{f['seconds']:.2f}" for f in later),
                     f"{first.get('outside_loop', float('nan')):.2f}", f"{over:+.2f}"])  # fmt: skip
    header = (
        "process | data s | trivial Python job s | first fit s | later fits s | "
        "first fit outside the loop s | first over the best later s (SVB: outside the loop)"
    )
    return markdown_table(header, rows, "lrrrrrr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--process", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.process:
        print(json.dumps(one_process(args.process)), flush=True)
        return 0
    result = session.where_and_when()
    processes = []
    for number in range(args.rounds):
        for way in WAYS:
            session.log(f"round {number + 1}: a fresh process, {way}")
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.cold_start", "--process", way],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            processes.append(json.loads(done.stdout.strip().splitlines()[-1]))
    result["processes"] = processes
    result["load_average_at_end"] = machine.load_average()
    print("\n" + table(processes), flush=True)
    session.write(result, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
