"""``svb-spark``: the command line, usable directly and under ``spark-submit``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from svb_spark.session import JavaNotFoundError, require_java


def _demo(args: argparse.Namespace) -> int:
    from svb_spark import SVBConvergenceWarning, SVBLogisticRegression, datasets
    from svb_spark.session import local_session

    try:
        X, y = datasets.digits()
        name = "scikit-learn digits (1797 x 64, 10 classes)"
    except ImportError:
        X, y = datasets.planted()
        name = f"generated planted-teacher data ({len(y)} x {X.shape[1]}, {y.max() + 1} classes)"
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, seed=args.seed)

    print(f"Starting Spark ({args.master}) ...", flush=True)
    spark = local_session(args.master, app_name="svb-spark demo")
    train = datasets.to_dataframe(spark, X_train, y_train).cache()
    test = datasets.to_dataframe(spark, X_test, y_test).cache()
    train.count(), test.count()

    estimator = SVBLogisticRegression(
        numWorkers=args.workers, maxIter=args.max_iter, batchSize=args.batch_size, seed=args.seed
    )
    print(
        f"Training on {name} with {estimator.getNumWorkers() or 'default'} workers ...", flush=True
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Reported below as "stopped at maxIter" rather than as a warning.
        warnings.simplefilter("ignore", SVBConvergenceWarning)
        model = estimator.fit(train)
    seconds = time.perf_counter() - started
    summary = model.summary
    accuracy = model.evaluate(test).accuracy
    print(f"test accuracy        {accuracy:.4f}")
    stop = "objective converged (tol)" if summary.converged else "stopped at maxIter"
    print(f"epochs               {summary.totalIterations} ({summary.steps} SGD steps, {stop})")
    print(f"workers              {summary.numWorkers} (exchange: {summary.exchange})")
    print(
        f"bytes exchanged      {summary.bytesSent:,} sent by rank 0, "
        f"{summary.bytesPerStep:,.0f} per step"
    )
    print(f"fit time             {seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="svb-spark",
        description="Multiclass logistic regression on Spark with the Sufficient Vector "
        "Broadcaster.",
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train on embedded data with local Spark and report")
    demo.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    demo.add_argument("--workers", type=int, default=2, help="barrier tasks (default: 2)")
    demo.add_argument("--max-iter", type=int, default=100, help="epochs (default: 100)")
    demo.add_argument("--batch-size", type=int, default=32, help="rows per worker per step")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        require_java()
        return args.run(args)
    except (JavaNotFoundError, ValueError, TypeError, FileNotFoundError) as error:
        if args.verbose:
            raise
        print(f"svb-spark: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
