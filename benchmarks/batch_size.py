"""Batch-size study: ``SVBLogisticRegression`` (p2p, 2 workers on ``local[2]``, defaults
otherwise) on W2 and the quick W1 at every ``--sizes``: time to target (scikit-learn's accuracy
minus one point, by re-fitting as the harness does), accuracy after ``--epochs``, loop ms and
bytes per step. Writes ``benchmarks/results/batch_size.json`` and prints one table a workload.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from benchmarks import machine, peers, workloads
from benchmarks.report import markdown_table
from benchmarks.run import WORKERS, cached_frame

SIZES = [8, 16, 32, 64, 128]
RESULT = Path(__file__).parent / "results" / "batch_size.json"


def study(spark, workload, sizes: list[int], epochs: int) -> dict:
    """Every batch size of ``sizes`` on one workload; returns the target and one row per size."""
    train_df = cached_frame(spark, workload.X_train, workload.y_train)
    Xt, yt = workload.X_test, workload.y_test
    reference = peers.fit_sklearn(workload.X_train, workload.y_train, Xt, yt)
    target = reference.accuracy - 0.01
    rows = []
    for size in sizes:
        load = machine.load_average()

        def fit(k, size=size):
            return peers.fit_svb(train_df, Xt, yt, k, numWorkers=WORKERS, batchSize=size)

        final = fit(epochs)
        reached = peers.time_to_target(fit, final, target, peers.doubling_ladder(epochs))
        rows.append({
            "batch_size": size, "global_batch": size * WORKERS,
            "time_to_target_s": reached["seconds"], "epochs_to_target": reached["iterations"],
            "final_accuracy": final.accuracy, "final_epochs": final.iterations,
            "final_fit_s": final.seconds,
            "steps_per_epoch": final.extra["steps"] // max(final.iterations, 1),
            "loop_ms_per_step": 1000 * peers.loop_seconds_per_step(final),
            "bytes_per_step": final.extra["bytes_per_step"], "load_before": load,
            "curve": reached["curve"],
        })  # fmt: skip
        print(f"  batchSize {size}: {' | '.join(cells(rows[-1]))}", flush=True)
    train_df.unpersist()
    return {
        "describe": workload.describe(),
        "reference_accuracy": reference.accuracy,
        "target_accuracy": target,
        "rows": rows,
    }


def cells(row: dict) -> list[str]:
    """One row of :func:`table`."""
    seconds = row["time_to_target_s"]
    reached = (
        "not reached" if seconds is None else f"{seconds:.1f} s ({row['epochs_to_target']} ep.)"
    )
    return [str(row["batch_size"]), reached,
            f"{row['final_accuracy']:.4f} ({row['final_epochs']} ep.)", str(row["steps_per_epoch"]),
            f"{row['loop_ms_per_step']:.2f}", f"{row['bytes_per_step'] / 1e3:,.1f} kB"]  # fmt: skip


def table(entry: dict) -> str:
    """Markdown table of one workload's rows."""
    header = ["batchSize", "time to target", "final accuracy", "steps/epoch", "loop ms/step",
              "bytes/step/worker"]  # fmt: skip
    return markdown_table(header, [cells(row) for row in entry["rows"]], "rrrrrr")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--epochs", type=int, default=20, help="epochs of the final fits")
    parser.add_argument("--workloads", default="W2,W1", help="W1 (quick shape) and/or W2")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    from svb_spark.spark.session import local_session

    # Each barrier task pins its BLAS to its one core (svb_spark.spark.task.limit_blas_threads).
    spark = local_session(f"local[{WORKERS}]", app_name="svb-spark batch size")
    result: dict = {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine.python_machine(), "load_start": machine.load_average()},
        "sizes": sizes, "epochs": args.epochs, "workers": WORKERS, "workloads": {},
    }  # fmt: skip
    try:
        for name in [w.strip() for w in args.workloads.split(",") if w.strip()]:
            workload = workloads.w1_planted("quick") if name == "W1" else workloads.w2_digits()
            title = f"{name}: {workload.describe()['title']}"
            print(f"{title}, {args.epochs} epochs, {WORKERS} workers", flush=True)
            entry = study(spark, workload, sizes, args.epochs)
            result["workloads"][name] = entry
            print(
                f"\n{title}; target {entry['target_accuracy']:.4f} (scikit-learn "
                f"{entry['reference_accuracy']:.4f} minus 0.01)\n\n{table(entry)}\n",
                flush=True,
            )
    finally:
        spark.stop()
    result["machine"]["load_end"] = machine.load_average()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
