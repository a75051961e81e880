"""Where a default fit stops on a long tail of classes: generated Zipfian text with a few
rows a class, the default fit against the fits the issue of extreme classification names
(every row with the tol stop, and a fixed number of epochs), top-1 and top-5 on test rows.

    python -m benchmarks.long_tail [--classes 10000 4000] [--rows 40000] [--epochs 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.session import (
    RESULTS,
    WORKERS,
    cached_frame,
    local_spark,
    log,
    markdown_table,
    where_and_when,
    write,
)
from svb_spark.datasets import tagged_text

FEATURES = 1 << 14


def fit(train, test, name: str, **params) -> dict:
    from svb_spark import SVBLogisticRegression

    started = time.perf_counter()
    model = SVBLogisticRegression(
        numWorkers=WORKERS, topKCol="topK", probabilityCol="", rawPredictionCol="", **params
    ).fit(train)
    seconds = time.perf_counter() - started
    rows = model.transform(test).select("label", "topK").collect()
    summary = model.summary
    point = {
        "fit": name, "seconds": seconds, "epochs": summary.totalIterations,
        "stop": summary.stopReason, "exchange": summary.exchange,
        "top1": float(np.mean([r.label == r.topK[0] for r in rows])),
        "top5": float(np.mean([r.label in r.topK for r in rows])),
    }  # fmt: skip
    log(point)
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_tail")
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 4_000])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    spark = local_spark("long-tail", driver_memory="6g")
    result = {**where_and_when(), "sets": []}
    for classes in args.classes:
        draw = tagged_text(classes, np.random.default_rng(0), num_features=FEATURES)
        X, y = draw(args.rows)
        X_test, y_test = draw(10_000)
        train, test = cached_frame(spark, X, y), cached_frame(spark, X_test, y_test)
        points = [
            fit(train, test, "default"),
            fit(train, test, f"{args.epochs} epochs", tol=0.0, maxIter=args.epochs),
        ]
        result["sets"].append({"classes": classes, "rows": args.rows, "points": points})
        train.unpersist()
        test.unpersist()
    write(result, RESULTS / "long_tail.json")
    rows = [
        [f"{s['classes']} x {s['rows']}", p["fit"], f"{p['seconds']:.1f}", str(p["epochs"]),
         f"{p['stop']}, {p['exchange']}", f"{p['top1']:.4f}", f"{p['top5']:.4f}"]
        for s in result["sets"] for p in s["points"]
    ]  # fmt: skip
    print(markdown_table("classes x rows | fit | s | epochs | stop | top-1 | top-5", rows))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
