"""``svb-spark``: the command line, usable directly and under ``spark-submit``.

Subcommands: ``train`` (fit and save a model), ``predict`` (write predictions as Parquet),
``evaluate`` (accuracy, weighted F1 and log loss; for a multi-label model the metrics of
``MultilabelClassificationEvaluator``) and ``demo``. Settings for ``train`` come from,
in increasing precedence: the library defaults, a TOML file (``--config``) and the flags; they
are read by :mod:`svb_spark.cli_settings`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from urllib.parse import urlparse

from svb_spark.cli_settings import UsageError, build_estimator, read_config
from svb_spark.core.solvers import SOLVERS
from svb_spark.spark.session import JavaNotFoundError, require_java

DEFAULT_MASTER = "local[2]"
FORMATS = ("parquet", "libsvm")
# MLlib's MulticlassClassificationEvaluator clips probabilities the same way for logLoss.
LOG_LOSS_EPS = 1e-15
# summary.stopReason in the words of the train and demo reports.
STOP_REASONS = {
    "tol": "objective converged (tol)",
    "validation": "held-out loss stopped improving (validationTol)",
    "holdout": "accuracy of the rows held out by validationFraction stopped improving",
    "maxIter": "stopped at maxIter",
}


# --- Spark and paths ----------------------------------------------------------------------------


def _under_spark_submit() -> bool:
    # spark-submit's PythonRunner hands the driver a Py4J gateway through these variables.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def spark_session(master: str | None, app_name: str):
    """The session a command runs on.

    An active session (a notebook, a test) is used as is. Under ``spark-submit`` the submitted
    master and conf are kept unless ``--master`` was given; otherwise a local session on
    ``master`` (default ``local[2]``) is started.
    """
    from svb_spark.spark.session import local_session

    if master is None and _under_spark_submit():
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.appName(app_name).getOrCreate()
    else:
        spark = local_session(master or DEFAULT_MASTER, app_name=app_name)
    return spark


def _local_path(path: str) -> str | None:
    """The filesystem path of a local path or ``file:`` URI; None for other filesystems."""
    scheme = urlparse(path).scheme
    if scheme == "file":
        return urlparse(path).path
    # A one-letter "scheme" is a Windows drive.
    return path if len(scheme) <= 1 else None


def check_input_exists(path: str, what: str = "input") -> None:
    """Raise UsageError if a local ``path`` does not exist (remote paths are left to Spark)."""
    local = _local_path(path)
    if local is not None and not os.path.exists(local):
        raise UsageError(f"{what} path does not exist: {path}")


def check_output_free(path: str, overwrite: bool, what: str = "output") -> None:
    """Raise UsageError if a local output ``path`` exists and ``overwrite`` is off."""
    local = _local_path(path)
    if not overwrite and local is not None and os.path.exists(local):
        raise UsageError(f"{what} path already exists: {path} (pass --overwrite to replace it)")


def read_input(spark, path: str, fmt: str, num_features: int | None = None):
    """Read ``path`` as Parquet or LIBSVM (columns ``label`` and ``features``).

    Parameters
    ----------
    spark : SparkSession
    path : str
        A file or directory, local or on any filesystem Spark can read.
    fmt : {"parquet", "libsvm"}
    num_features : int, optional
        LIBSVM only: the vector size; by default Spark infers it from the largest index.

    Returns
    -------
    DataFrame
    """
    check_input_exists(path)
    if fmt == "libsvm":
        reader = spark.read.format("libsvm")
        if num_features:
            reader = reader.option("numFeatures", str(num_features))
        return reader.load(path)
    return spark.read.parquet(path)


# --- commands -----------------------------------------------------------------------------------


def _train(args: argparse.Namespace) -> int:
    from svb_spark import SVBConvergenceWarning

    config = read_config(args.config) if args.config else {"input": {}, "params": {}}
    fmt = args.format or config["input"].get("format", "parquet")
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    num_features = args.num_features or config["input"].get("numFeatures")
    estimator = build_estimator(
        config["params"],
        args.param or [],
        {"featuresCol": args.features_col, "labelCol": args.label_col},
        args.config or "config",
    )
    check_input_exists(args.input)
    check_output_free(args.output, args.overwrite, "model")

    spark = spark_session(args.master, "svb-spark train")
    df = read_input(spark, args.input, fmt, num_features)
    print(f"spark master         {spark.conf.get('spark.master', '?')}", flush=True)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Reported below as "stopped at maxIter" rather than as a warning.
        warnings.simplefilter("ignore", SVBConvergenceWarning)
        model = estimator.fit(df)
    seconds = time.perf_counter() - started
    writer = model.write()
    (writer.overwrite() if args.overwrite else writer).save(args.output)

    summary = model.summary
    print(f"model                {args.output}")
    print(f"classes x features   {model.numClasses} x {model.numFeatures}")
    print(_epochs_line(summary))
    print(f"final objective      {summary.objectiveHistory[-1]:.6f}")
    print(f"training accuracy    {summary.accuracy:.4f}")
    print(f"workers              {summary.numWorkers} (exchange: {summary.exchange})")
    print(f"bytes per step       {summary.bytesPerStep:,.0f}")
    print(f"fit time             {seconds:.1f} s")
    return 0


def _load_model(path: str):
    from svb_spark import SVBLogisticRegressionModel

    return SVBLogisticRegressionModel.load(path)


def _predict(args: argparse.Namespace) -> int:
    check_input_exists(args.model, "model")
    check_input_exists(args.input)
    check_output_free(args.output, args.overwrite)
    spark = spark_session(args.master, "svb-spark predict")
    model = _load_model(args.model)
    # A test file in LIBSVM rarely has a non-zero in the model's last feature; use its size.
    df = read_input(spark, args.input, args.format, args.num_features or model.numFeatures)
    predictions = model.transform(df)
    predictions.write.mode("overwrite" if args.overwrite else "errorifexists").parquet(args.output)
    print(f"predictions          {args.output}")
    return 0


# What evaluate prints for a multi-label model: its summary's metrics of the same names as
# MultilabelClassificationEvaluator's.
MULTILABEL_METRICS = ("subsetAccuracy", "accuracy", "hammingLoss", "f1Measure", "microF1Measure")


def log_loss(predictions, probability_col: str, label_col: str, weight_col: str = "") -> dict:
    """Weighted mean of ``-log p_label`` over ``predictions``, computed by one aggregation.

    Probabilities are clipped to ``[1e-15, 1]`` as MLlib's evaluator does.

    Returns
    -------
    dict
        ``{"logLoss": float, "rows": int}``.

    Raises
    ------
    UsageError
        If some label is not a class index of the probability vectors.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    label = F.col(label_col).cast("double")
    probabilities = vector_to_array(F.col(probability_col))
    # Nested CASE WHENs so that no cast sees NaN or an out-of-range label (ANSI mode raises).
    valid = (
        F.when(label.isNull() | F.isnan(label), F.lit(False))
        .when((label < 0) | (label >= F.size(probabilities)), F.lit(False))
        .otherwise(F.round(label) == label)
    )
    index = label.cast("int") + 1
    p_label = F.when(valid, F.try_element_at(probabilities, index))
    weight = F.col(weight_col).cast("double") if weight_col else F.lit(1.0)
    row = predictions.agg(
        F.sum(-weight * F.log(F.greatest(p_label, F.lit(LOG_LOSS_EPS)))).alias("loss"),
        F.sum(F.when(p_label.isNotNull(), weight)).alias("weight"),
        F.count(F.lit(1)).alias("rows"),
        F.count(p_label).alias("valid"),
        F.min(F.when(p_label.isNull(), label)).alias("bad"),
    ).first()
    if row.rows and row.valid < row.rows:
        raise UsageError(
            f"{row.rows - row.valid} row(s) of column '{label_col}' are not a class index of "
            f"the model (an integer in [0, numClasses)), e.g. {row.bad!r}"
        )
    loss = row.loss / row.weight if row.weight else float("nan")
    return {"logLoss": float(loss), "rows": int(row.rows)}


def _evaluate(args: argparse.Namespace) -> int:
    check_input_exists(args.model, "model")
    check_input_exists(args.input)
    spark = spark_session(args.master, "svb-spark evaluate")
    model = _load_model(args.model)
    df = read_input(spark, args.input, args.format, args.num_features or model.numFeatures)
    summary = model.evaluate(df)
    if model.getFamily() == "multilabel":
        # MultilabelClassificationEvaluator's metrics, by its names: label sets have no log loss.
        metrics = {name: getattr(summary, name) for name in MULTILABEL_METRICS}
        metrics["rows"] = summary.predictions.count()
        names = {name: name for name in MULTILABEL_METRICS}
    else:
        loss = log_loss(
            summary.predictions, summary.probabilityCol, summary.labelCol, summary.weightCol
        )
        metrics = {"accuracy": summary.accuracy, "weightedFMeasure": summary.weightedFMeasure(),
                   **loss}  # fmt: skip
        names = {"accuracy": "accuracy", "weightedFMeasure": "weighted F1", "logLoss": "log loss"}
    if args.json:
        print(json.dumps(metrics))
    else:
        width = max(map(len, names.values()))
        print(f"{'metric':<{width}}  value")
        for key, name in names.items():
            print(f"{name:<{width}}  {metrics[key]:.4f}")
        print(f"{'rows':<{width}}  {metrics['rows']}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from svb_spark import SVBConvergenceWarning, SVBLogisticRegression, datasets
    from svb_spark.spark.session import local_session

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
        f"Training on {name}: SVB on {estimator.getNumWorkers() or 'default'} workers, "
        "then MLlib's LogisticRegression at its defaults ...",
        flush=True,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Reported below as "stopped at maxIter" rather than as a warning.
        warnings.simplefilter("ignore", SVBConvergenceWarning)
        model = estimator.fit(train)
    seconds = time.perf_counter() - started
    mllib_model, mllib_seconds = _fit_mllib(train)
    summary = model.summary
    accuracy = model.evaluate(test).accuracy
    mllib_accuracy = mllib_model.evaluate(test).accuracy
    print(f"{'':<21}{'SVB':<10}MLlib")
    print(f"{'test accuracy':<21}{accuracy:<10.4f}{mllib_accuracy:.4f}")
    print(f"{'fit time':<21}{f'{seconds:.1f} s':<10}{mllib_seconds:.1f} s")
    print(f"{'speed':<21}{_speed_ratio(seconds, mllib_seconds)}")
    print(_epochs_line(summary))
    print(f"workers              {summary.numWorkers} (exchange: {summary.exchange})")
    print(f"bytes exchanged      {summary.bytesSent:,} sent, {summary.bytesPerStep:,.0f} per step")
    return 0


def _fit_mllib(train):
    """pyspark's own LogisticRegression, every param at its default, and its fit seconds."""
    from pyspark.ml.classification import LogisticRegression

    started = time.perf_counter()
    model = LogisticRegression().fit(train)
    return model, time.perf_counter() - started


def _speed_ratio(svb_seconds: float, mllib_seconds: float) -> str:
    """The demo's verdict on speed: how many times faster the faster fit was."""
    if svb_seconds <= mllib_seconds:
        return f"SVB fit {mllib_seconds / svb_seconds:.1f}x faster than MLlib"
    return f"MLlib fit {svb_seconds / mllib_seconds:.1f}x faster than SVB"


# --- parser -------------------------------------------------------------------------------------


def _add_master(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master",
        default=None,
        help=f"Spark master (default: {DEFAULT_MASTER}, or the submitted one under spark-submit)",
    )


def _add_input(parser: argparse.ArgumentParser, default_format: str | None) -> None:
    parser.add_argument("--input", required=True, help="data to read (file or directory)")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=default_format,
        help="input format (default: parquet)",
    )
    parser.add_argument(
        "--num-features",
        type=int,
        default=None,
        metavar="N",
        help="libsvm only: vector size (default: inferred; the model's size for predict/evaluate)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``svb-spark`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="svb-spark",
        description="Multiclass logistic regression on Spark with the Sufficient Vector "
        "Broadcaster.",
    )
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="fit SVBLogisticRegression and save the model",
        description="Fit SVBLogisticRegression and save the model. Settings: flags override the "
        "--config file, which overrides the library defaults.",
    )
    # No default here: a format from --config must win over an implicit one.
    _add_input(train, None)
    train.add_argument("--output", required=True, metavar="MODEL_DIR", help="where to save")
    train.add_argument("--features-col", default=None, help="features column (default: features)")
    train.add_argument("--label-col", default=None, help="label column, 0..K-1 (default: label)")
    train.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="set an estimator param, e.g. maxIter=50 (repeatable)",
    )
    train.add_argument("--config", default=None, help="TOML file, see conf/train.toml")
    train.add_argument("--overwrite", action="store_true", help="replace an existing MODEL_DIR")
    _add_master(train)
    train.set_defaults(run=_train)

    predict = commands.add_parser("predict", help="write a model's predictions as Parquet")
    predict.add_argument("--model", required=True, metavar="MODEL_DIR")
    _add_input(predict, "parquet")
    predict.add_argument("--output", required=True, help="Parquet directory to write")
    predict.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_master(predict)
    predict.set_defaults(run=_predict)

    evaluate = commands.add_parser(
        "evaluate",
        help="print accuracy, weighted F1 and log loss of a model on labelled data (multi-label: "
        "subset accuracy, accuracy, Hamming loss, F1 and micro F1)",
    )
    evaluate.add_argument("--model", required=True, metavar="MODEL_DIR")
    _add_input(evaluate, "parquet")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    _add_master(evaluate)
    evaluate.set_defaults(run=_evaluate)

    demo = commands.add_parser("demo", help="train on embedded data with local Spark and report")
    demo.add_argument("--master", default=DEFAULT_MASTER, help="Spark master (default: local[2])")
    demo.add_argument("--workers", type=int, default=2, help="barrier tasks (default: 2)")
    demo.add_argument(
        "--max-iter",
        type=int,
        default=100,
        help="maxIter: epochs, or iterations with lbfgs (default: 100)",
    )
    demo.add_argument("--batch-size", type=int, default=32, help="rows per worker per step")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (
        JavaNotFoundError,
        ValueError,
        TypeError,
        FileNotFoundError,
        FileExistsError,
    )
    try:
        # Spark's word for a missing path or column and for an argument it rejects.
        from pyspark.errors import AnalysisException, IllegalArgumentException

        errors += (AnalysisException, IllegalArgumentException)
    except ImportError:
        pass
    return errors


def _one_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _show_progress() -> None:
    """Print the library's INFO lines (per-epoch progress) to stderr, once per process."""
    import logging

    library = logging.getLogger("svb_spark")
    if not any(isinstance(h, logging.StreamHandler) for h in library.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        library.addHandler(handler)
    library.setLevel(logging.INFO)


def _epochs_line(summary) -> str:
    """How long a fit ran, in its solver's unit, and why it stopped.

    L-BFGS counts iterations (each one full pass and one exchange), the minibatch solvers count
    epochs and the SGD steps within them.
    """
    stop = STOP_REASONS.get(summary.stopReason, f"stopped by {summary.stopReason}")
    unit = SOLVERS[summary.solver].unit
    if unit != "epochs":  # full passes: no minibatch steps to count
        return f"{unit:<21}{summary.totalIterations} ({summary.solver}, {stop})"
    return (
        f"{'epochs':<21}{summary.totalIterations} ({summary.solver}: {summary.steps} steps, {stop})"
    )


def main(argv: list[str] | None = None) -> int:
    """Run ``svb-spark`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    0 on success; 2 with one ``svb-spark: error: ...`` line for bad arguments or input; 1 for
    any other failure. ``--verbose`` re-raises instead, with the traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _show_progress()
    try:
        require_java()
        return args.run(args)
    except _user_errors() as error:
        if args.verbose:
            raise
        print(f"svb-spark: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if args.verbose:
            raise
        print(
            f"svb-spark: error: {type(error).__name__}: {_one_line(error)} "
            "(run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
