"""One row per exchange mode on a shape where sufficient vectors should win.

K=200 classes, D=2048 dense features, batchSize 16, 2 workers on local Spark (sufficient
vectors are 11x smaller than the gradient here); every mode trains two epochs on the same data
and partitions, so bytes per step, time per step and test
accuracy are comparable. Run: ``python -m benchmarks.exchange_modes [--rows N]``.
"""

from __future__ import annotations

import argparse

from svb_spark import SVBLogisticRegression, datasets
from svb_spark.session import local_session

MODES = [("p2p", 1), ("dense", 1), ("broadcast", 1), ("auto", 1), ("p2p", 4)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    spark = local_session("local[2]", app_name="svb-spark exchange modes")
    X, y = datasets.planted(args.rows, args.features, args.classes, seed=3)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, seed=3)
    train = datasets.to_dataframe(spark, X_train, y_train, num_partitions=2).cache()
    test = datasets.to_dataframe(spark, X_test, y_test).cache()
    train.count(), test.count()

    print(
        f"K={args.classes} D={args.features} batchSize={args.batch_size} workers=2, "
        f"{len(y_train)} train / {len(y_test)} test rows, {args.epochs} epoch(s), float32"
    )
    print("| mode | in force | bytes/step (measured) | bytes/step (model) | ms/step | accuracy |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for mode, sync_interval in MODES:
        estimator = SVBLogisticRegression(
            numWorkers=2, maxIter=args.epochs, batchSize=args.batch_size, exchange=mode,
            syncInterval=sync_interval, tol=0.0,
        )  # fmt: skip
        model = estimator.fit(train)
        summary = model.summary
        in_force = summary.exchange
        label = mode if sync_interval == 1 else f"{mode}, syncInterval={sync_interval}"
        predicted = summary.predictedBytesPerStep[in_force]
        print(
            f"| {label} | {in_force} | {summary.bytesPerStep:,.0f} | {predicted:,.0f} | "
            f"{1000 * summary.timings['train'] / summary.steps:.1f} | "
            f"{model.evaluate(test).accuracy:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
