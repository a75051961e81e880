"""Many classes: generated Zipfian text (a head of classes with thousands of rows, a tail with a
handful); SVB's default fit against fixed-epoch fits, MLlib and fastText on the same rows: fit
time, epochs, stop, top-1/5 accuracy, precision@5, scoring time, bytes per step, peak RSS.

    python -m benchmarks.extreme --classes 100000 --features 8192 --rows 300000 --cap 3g
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.sql import functions as F

from benchmarks.peers import PeerFailed, fit_mllib
from benchmarks.session import RESULTS, WORKERS, cached_frame, local_spark, record_points
from svb_spark import SVBLogisticRegression
from svb_spark.datasets import tagged_text


def peak_rss() -> dict:
    """Peak resident MB (VmHWM) of this process and its descendants, by name (java, python)."""
    status = {}  # pid -> the fields of /proc/<pid>/status
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            lines = (proc / "status").read_text().splitlines()
            status[int(proc.name)] = {k: v.strip() for k, v in (x.split(":", 1) for x in lines)}
    mine, peaks = {os.getpid()}, {}
    while grown := {pid for pid, f in status.items() if int(f["PPid"]) in mine} - mine:
        mine |= grown
    for pid in sorted(mine & status.keys()):
        kind = "driver" if pid == os.getpid() else status[pid]["Name"]  # python or java
        peaks.setdefault(kind, []).append(int(status[pid].get("VmHWM", "0 kB").split()[0]) >> 10)
    return peaks


def svb(train, test, name: str, k_wide: bool = False, **params) -> dict:
    started = time.perf_counter()
    model = SVBLogisticRegression(
        numWorkers=WORKERS, topKCol="topK", probabilityCol="", rawPredictionCol="", **params
    ).fit(train)
    seconds, summary = time.perf_counter() - started, model.summary
    scored = model.transform(test).withColumn("relevant", F.array("label")).cache()
    started = time.perf_counter()  # the top-5 collected: the collect runs, then the clock reads
    rows, scoring = scored.select("label", "topK").collect(), time.perf_counter() - started
    precision = RankingEvaluator(predictionCol="topK", labelCol="relevant", k=5,
                                 metricName="precisionAtK").evaluate(scored)  # fmt: skip
    point = {
        "fit": name, "seconds": seconds, "epochs": summary.totalIterations,
        "stop": summary.stopReason, "exchange": summary.exchange,
        "held_out_accuracy": summary.validationAccuracy, "objective": summary.objectiveHistory,
        "top1": float(np.mean([r.label == r.topK[0] for r in rows])),
        "top5": float(np.mean([r.label in r.topK for r in rows])), "precision_at_5": precision,
        "payload_per_step": float(np.median(summary.payloadBytesPerExchange)),
        "predicted_bytes_per_step": summary.predictedBytesPerStep[summary.exchange],
        "top5_seconds": scoring,
    }  # fmt: skip
    if k_wide:  # the K-wide columns too, computed and dropped
        model.setProbabilityCol("probability").setRawPredictionCol("rawPrediction")
        started = time.perf_counter()
        model.transform(test).write.format("noop").mode("overwrite").save()
        point["k_wide_seconds"] = time.perf_counter() - started
    if name == "default":  # the peak of the whole run so far: the default fit comes first
        point["peak_rss_mb"] = peak_rss()
    scored.unpersist()
    del model, scored, summary  # the model sits in reference cycles: the next fit needs its room
    gc.collect()
    train.sparkSession.sparkContext._jvm.System.gc()  # and the heap scoring grew goes back
    return point


def mllib(train, X_test, y_test) -> dict:
    """MLlib at its defaults: its time and accuracy, or its failure (stopped after 10 min)."""
    try:
        return {"fit": "MLlib", **fit_mllib(train, X_test, y_test, 100, 600.0).to_dict()}
    except PeerFailed as failed:
        return {"fit": "MLlib", "seconds": failed.seconds, "outcome": failed.reason}


def fasttext(X, y, X_test, y_test, loss: str) -> dict:
    """fastText (2 threads, its defaults) on the same rows as words "f<feature>"; its failure at
    every learning rate is recorded (the error's first line)."""
    import fasttext as ft

    def lines(M):  # feature j counted c times: the word "fj" c times
        return [" ".join(f"f{j} " * int(c) for j, c in zip(r.indices, r.data)) for r in M]

    with tempfile.NamedTemporaryFile("w", suffix=".txt") as file:
        file.writelines(f"__label__{label} {text}\n" for label, text in zip(y, lines(X)))
        file.flush()
        started, model = time.perf_counter(), None
        for lr in (0.1, 0.05, 0.025, 0.0125):  # its default first; its threads NaN on small sets
            try:
                model = ft.train_supervised(file.name, loss=loss, lr=lr, thread=WORKERS, verbose=0)
                break
            except RuntimeError as error:
                failure = str(error).splitlines()[0]
    point = {"fit": f"fastText {loss}", "seconds": time.perf_counter() - started}
    if model is None:
        return {**point, "outcome": failure}
    top = [[int(x[len("__label__") :]) for x in row] for row in model.predict(lines(X_test), 5)[0]]
    return {**point, "lr": lr, "top1": float(np.mean([t[:1] == [c] for t, c in zip(top, y_test)])),
            "top5": float(np.mean([c in t for t, c in zip(top, y_test)]))}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.extreme")
    for name, default in (("--classes", 20_000), ("--features", 1 << 16), ("--rows", 200_000)):
        parser.add_argument(name, type=int, default=default)
    parser.add_argument("--epochs", type=int, nargs="*", default=[5, 10])
    parser.add_argument("--cap", help="spark.executor.pyspark.memory: a worker's memory cap")
    choices = ["default", "mllib", "fasttext", "softmax", "k-wide"]  # k-wide: those columns
    parser.add_argument("--skip", nargs="*", default=[], choices=choices)
    args = parser.parse_args(argv)
    cap = {"spark.executor.pyspark.memory": args.cap} if args.cap else {}
    cap["spark.memory.fraction"] = "0.3"  # the broadcast class blocks spill, not fill the heap
    model_gb = -(-args.classes * args.features // (1 << 27))  # the float64 model's GiB
    spark = local_spark("extreme", driver_memory=f"{max(6, model_gb)}g", **cap)  # (its check)
    draw = tagged_text(args.classes, np.random.default_rng(0), num_features=args.features)
    (X, y), (X_test, y_test) = draw(args.rows), draw(50_000)
    train, test = cached_frame(spark, X, y), cached_frame(spark, X_test, y_test)
    path = RESULTS / f"extreme_{args.classes}x{args.features}.json"
    runs = [lambda: svb(train, test, "default", k_wide="k-wide" not in args.skip)]
    runs *= "default" not in args.skip
    runs += [lambda n=n: svb(train, test, f"{n} epochs", tol=0.0, maxIter=n) for n in args.epochs]
    losses = [loss for loss in ("hs", "softmax") if {loss, "fasttext"}.isdisjoint(args.skip)]
    runs += [lambda x=x: fasttext(X, y, X_test, y_test, x) for x in losses]  # softmax: O(K)
    runs += [lambda: mllib(train, X_test, y_test)] * ("mllib" not in args.skip)
    record_points(runs, path, vars(args))  # MLlib last: its failure may take the JVM down
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
