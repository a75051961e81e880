"""``python -m benchmarks.exchange [--quick]``: the exchange modes side by side, one run.

**Class-sharded against replicated p2p.** Both fit the same cached rows with SGD (float32, the
default batchSize, 2 epochs) on local[2], at P = 1 and P = 2 workers; P = 4 runs as processes
outside Spark over a Flight mesh on 127.0.0.1, oversubscribed (4 workers on 2 cores), so its
times show the trend only. Per shape: the loop's seconds per epoch, the payload bytes per step
against the cost model's formula, and the ratios the class-sharded mode is judged by:

- sharded / replicated time per epoch at P = 2 (theory 2/3: 2 B K D flops against 3 B K D);
- sharded at P = 2 / sharded at P = 1 on the dense shape (theory 1/2).

**auto's choice.** At shapes where sufficient vectors, the dense gradient or the class blocks
should win, every mesh mode fits the same rows (SGD, P = 2, the fastest of REPEATS fits) and
``exchange="auto"`` says which it takes: the table shows whether that is the measured fastest,
and its time against p2p's. ``--auto-only`` runs just this check and keeps the stored
class-sharded results.

Results go to ``benchmarks/results/exchange.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from benchmarks import peers, session, workloads
from benchmarks.session import markdown_table

RESULTS = session.RESULTS / "exchange.json"
# name: (rows, classes, features, batchSize) for the auto check
AUTO_SHAPES = {
    "SVs win": (4096, 60, 300, 8),
    "dense gradient wins": (16384, 4, 1000, 512),
    "bytes and time disagree": (8192, 100, 1024, 32),
    "large model": (2048, 1000, 4096, 32),
    "a small dense model at the default batch": (16384, 10, 784, 32),
}
EPOCHS = 2
# auto's check fits every mode this many times and keeps its fastest fit: a single fit's time
# moves by up to 20% on a shared machine, more than some of the differences it judges.
REPEATS = 2
MODES = {"replicated": "p2p", "sharded": "sharded"}


def shapes(quick: bool) -> dict:
    """name: (rows, features, classes, sparse)."""
    if quick:
        return {"dense": (1024, 1024, 200, False), "sparse": (2048, 2**15, 200, True)}
    return {"dense": (4096, 4096, 1000, False), "sparse": (8192, 2**18, 1000, True)}


def sgd_fit(df, mode: str, workers: int, **params):
    """The summary of an SGD fit of ``EPOCHS`` epochs (no tol) in exchange ``mode``."""
    from svb_spark import SVBLogisticRegression

    estimator = SVBLogisticRegression(exchange=mode, solver="sgd", numWorkers=workers,
                                      maxIter=EPOCHS, tol=0.0, **params)  # fmt: skip
    return estimator.fit(df).summary


def epoch_seconds(summary) -> float:
    """The training loop's seconds per epoch: its phases, without the fit's fixed costs."""
    return peers.loop_seconds(summary.timings) / summary.totalIterations


def spark_point(df, mode: str, workers: int) -> dict:
    summary = sgd_fit(df, mode, workers)
    return {
        "epoch_seconds": epoch_seconds(summary),
        # Rank 0's payload (Arrow buffers, no framing) over its steps: the formula's quantity;
        # a worker's last step of an epoch may be short, so this is a lower bound.
        "payload_per_step": summary.payloadBytesSent / summary.steps,
        "predicted_bytes_per_step": summary.predictedBytesPerStep[mode],
        "framing_per_exchange": summary.framingBytesSent / max(summary.exchanges, 1),
        "peak_rss": [w.get("peak_rss") for w in summary.workers],
    }


def process_point(X, y, mode: str, workers: int) -> dict:
    finished = peers.train_over_flight_processes(X, y, workers, exchange=mode)
    return {"epoch_seconds": peers.loop_seconds(finished["seconds"]), "oversubscribed": True}


def measure(spark, name: str, shape: tuple) -> dict:
    rows, features, classes, sparse = shape
    X, y = workloads.planted_rows(rows, features, classes, sparse)
    X = X if sparse else X.astype(np.float32)
    df = session.cached_frame(spark, X, y)
    points = {}
    for workers in (1, 2):
        for label, mode in MODES.items():
            points[f"{label} P={workers}"] = spark_point(df, mode, workers)
            print(name, label, workers, points[f"{label} P={workers}"], flush=True)
    df.unpersist()
    for label, mode in MODES.items():
        points[f"{label} P=4 (processes, oversubscribed)"] = process_point(X, y, mode, 4)
    at2 = {label: points[f"{label} P=2"]["epoch_seconds"] for label in MODES}
    return {
        "shape": {"rows": rows, "features": features, "classes": classes, "sparse": sparse},
        "points": points,
        "sharded_over_replicated_at_2": at2["sharded"] / at2["replicated"],
        "sharded_2_over_1": at2["sharded"] / points["sharded P=1"]["epoch_seconds"],
    }


def auto_check(spark, name: str, shape: tuple) -> dict:
    """Epoch seconds of every mesh mode at ``shape``, and the mode auto takes."""
    rows, classes, features, batch = shape
    X, y = workloads.planted_rows(rows, features, classes, sparse=False, seed=1)
    df = session.cached_frame(spark, X.astype(np.float32), y)
    measured = {}
    for mode in ("p2p", "dense", "sharded", "auto"):
        fits = [sgd_fit(df, mode, session.WORKERS, batchSize=batch) for _ in range(REPEATS)]
        measured[mode] = min(epoch_seconds(summary) for summary in fits)
        if mode == "auto":
            chosen, predicted = fits[0].exchange, fits[0].predictedSecondsPerStep
    df.unpersist()
    fastest = min(("p2p", "dense", "sharded"), key=measured.get)
    print(name, measured, chosen, flush=True)
    return {"shape": dict(zip(("rows", "classes", "features", "batch_size"), shape)),
            "epoch_seconds": measured, "auto_chose": chosen, "measured_fastest": fastest,
            "predicted_step_seconds": predicted,
            "auto_over_p2p": measured["auto"] / measured["p2p"]}  # fmt: skip


def tables(sharded: dict, auto: dict) -> str:
    """The class-sharded points and their ratios, and auto's choice against every mode."""
    points = []
    for name, result in sharded.items():
        for point, values in result["points"].items():
            sent = framing = "-"
            if values.get("payload_per_step"):
                formula = values["predicted_bytes_per_step"]
                sent = f"{values['payload_per_step']:.0f} ({formula:.0f})"
                framing = f"{values['framing_per_exchange']:.0f}"
            points.append([name, point, f"{values['epoch_seconds']:.2f}", sent, framing])
    ratios = [
        f"{name}: sharded / replicated at P=2 {result['sharded_over_replicated_at_2']:.2f} "
        f"(target <= 0.75); sharded P=2 / P=1 {result['sharded_2_over_1']:.2f}"
        for name, result in sharded.items()
    ]
    choices = []
    for name, check in auto.items():
        times = check["epoch_seconds"]
        choices.append([name, *(f"{times[mode]:.2f}" for mode in ("p2p", "dense", "sharded")),
                        check["auto_chose"], check["measured_fastest"],
                        f"{check['auto_over_p2p']:.2f}"])  # fmt: skip
    return "\n\n".join([
        markdown_table("shape | mode, P | s / epoch | payload bytes / step (formula) | "
                       "framing / exchange", points, "llrrr"),
        "\n".join(ratios),
        markdown_table("shape | p2p | dense | sharded | auto takes | measured fastest | "
                       "auto / p2p", choices, "lrrrllr"),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exchange", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke run")
    parser.add_argument("--auto-only", action="store_true", help="only auto's check")
    args = parser.parse_args(argv)

    spark = session.local_spark("exchange", "12g")
    started = time.perf_counter()
    stored = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results = stored.get("sharded", {})
    if not args.auto_only:
        results = {name: measure(spark, name, shape) for name, shape in shapes(args.quick).items()}
    auto = {name: auto_check(spark, name, shape) for name, shape in AUTO_SHAPES.items()}
    spark.stop()
    session.write({"sharded": results, "auto": auto}, RESULTS)
    print(tables(results, auto))
    print(f"({time.perf_counter() - started:.0f} s in all; written to {RESULTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
