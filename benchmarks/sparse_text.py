"""The sparse, many-class problem: K=500 classes, D=2^18 hashed features, ~50 non-zeros/row.

Measures in one run, on local[2] with two workers: SVB p2p (fit time, test accuracy, bytes
per step, peak memory per worker), the dense-gradient exchange (on a few steps only: every
step ships the 500 x 2^18 gradient), and MLlib's LogisticRegression (stopped after a time
limit if it has not finished). Run: ``python -m benchmarks.sparse_text``. The harness runs the
same data as its W3 (``python -m benchmarks run --full``).
"""

from __future__ import annotations

import argparse
import threading
import time

from benchmarks.peers import jvm_failure_reason
from svb_spark import SVBLogisticRegression, datasets
from svb_spark.session import local_session


def _row(name, seconds, accuracy, summary=None, note=""):
    if summary is None:
        return f"| {name} | {seconds:.1f} | {accuracy} | - | - | {note} |"
    peak = max(w.get("peak_rss", 0) for w in summary.workers) / 2**20
    return (
        f"| {name} | {seconds:.1f} | {accuracy} | {summary.bytesPerStep:,.0f} "
        f"(model {summary.predictedBytesPerStep[summary.exchange]:,.0f}) | {peak:,.0f} | {note} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=25000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--mllib-seconds", type=float, default=300.0)
    args = parser.parse_args(argv)

    spark = local_session(
        "local[2]",
        app_name="svb-spark sparse text",
        **{"spark.driver.memory": "8g", "spark.driver.maxResultSize": "4g"},
    )
    X, y = datasets.planted_sparse(rows=args.rows, seed=11)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_fraction=0.2, seed=11)
    train = datasets.to_dataframe(spark, X_train, y_train).cache()
    test = datasets.to_dataframe(spark, X_test, y_test).cache()
    train.count(), test.count()
    K, D = 500, X.shape[1]
    print(f"K={K} D={D} nnz/row={X.nnz / X.shape[0]:.1f} train={len(y_train)} test={len(y_test)}")
    print(f"float32 replica: {K * D * 4 / 2**20:,.0f} MiB per worker")
    print("| method | fit s | test accuracy | bytes/step | peak RSS/worker MiB | note |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")

    started = time.perf_counter()
    model = SVBLogisticRegression(numWorkers=2, maxIter=args.epochs, tol=0.0).fit(train)
    seconds = time.perf_counter() - started
    accuracy = model.evaluate(test).accuracy
    summary = model.summary
    step_ms = 1000 * summary.timings["train"] / summary.steps
    note = f"{summary.steps} steps, {step_ms:.1f} ms/step"
    print(_row("SVB p2p", seconds, f"{accuracy:.4f}", summary, note), flush=True)
    del model

    few = datasets.to_dataframe(spark, X_train[:320], y_train[:320]).cache()
    started = time.perf_counter()
    dense = SVBLogisticRegression(numWorkers=2, maxIter=1, tol=0.0, exchange="dense").fit(few)
    seconds = time.perf_counter() - started
    summary = dense.summary
    per_step = summary.timings["train"] / summary.steps
    full = per_step * (len(y_train) / 64) * args.epochs
    print(_row("SVB dense", seconds, "n/a", summary,
               f"{summary.steps} steps on 320 rows; {per_step:.2f} s/step, a full fit would take "
               f"about {full / 3600:.1f} h"), flush=True)  # fmt: skip
    del dense

    from pyspark.ml.classification import LogisticRegression

    sc = spark.sparkContext
    sc.setJobGroup("mllib", "MLlib LogisticRegression on the sparse problem", True)
    timer = threading.Timer(args.mllib_seconds, lambda: sc.cancelJobGroup("mllib"))
    timer.start()
    started = time.perf_counter()
    try:
        mllib = LogisticRegression(family="multinomial", maxIter=100, tol=1e-6).fit(train)
        seconds = time.perf_counter() - started
        predictions = mllib.transform(test)
        accuracy = predictions.filter("label = prediction").count() / len(y_test)
        print(
            _row(
                "MLlib",
                seconds,
                f"{accuracy:.4f}",
                note=f"{mllib.summary.totalIterations} iterations",
            )
        )
    except Exception as error:  # report what MLlib raised, not a traceback
        seconds = time.perf_counter() - started
        reason = jvm_failure_reason(error)
        print(_row("MLlib", seconds, "n/a", note=f"did not finish: {reason}"))
    finally:
        timer.cancel()
        sc.setLocalProperty("spark.jobGroup.id", None)


if __name__ == "__main__":
    main()
