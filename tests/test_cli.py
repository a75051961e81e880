"""The command line and the Java check."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svb_spark import SVBLogisticRegression, cli
from tests.support.data import planted


def test_demo_trains_and_reports_beside_mllib(spark, capsys):
    assert cli.main(["demo", "--workers", "2", "--max-iter", "20"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"(?m)^ +SVB +MLlib$", out)
    svb_accuracy, mllib_accuracy = map(
        float, re.search(r"test accuracy +(\S+) +(\S+)", out).groups()
    )
    assert svb_accuracy > 0.9 and mllib_accuracy > 0.9
    assert re.search(r"(?m)^fit time +[\d.]+ s +[\d.]+ s$", out)
    assert re.search(r"(?m)^speed +(SVB|MLlib) fit [\d.]+x faster than (MLlib|SVB)$", out)
    assert "bytes exchanged" in out and "rank 0" not in out
    # digits' default solver is L-BFGS, whose unit is the iteration, not the epoch
    assert re.search(r"(?m)^iterations +\d+ \(lbfgs, ", out) and "\nepochs " not in out


@pytest.mark.parametrize(
    "solver, stop_reason, expected",
    [
        ("lbfgs", "tol", "iterations           7 (lbfgs, objective converged (tol))"),
        ("sgd", "maxIter", "epochs               7 (sgd: 300 steps, stopped at maxIter)"),
        ("saga", "validation", "epochs               7 (saga: 300 steps, held-out loss"),
    ],
)
def test_report_counts_lbfgs_in_iterations_and_the_minibatch_solvers_in_epochs(
    solver, stop_reason, expected
):
    from types import SimpleNamespace

    summary = SimpleNamespace(solver=solver, stopReason=stop_reason, totalIterations=7, steps=300)
    assert cli._epochs_line(summary).startswith(expected)


@pytest.mark.parametrize(
    "svb_seconds, mllib_seconds, expected",
    [
        (2.0, 7.0, "SVB fit 3.5x faster than MLlib"),
        (3.0, 3.0, "SVB fit 1.0x faster than MLlib"),
        (6.0, 2.0, "MLlib fit 3.0x faster than SVB"),
    ],
)
def test_demo_speed_line_names_the_faster_fit(svb_seconds, mllib_seconds, expected):
    assert cli._speed_ratio(svb_seconds, mllib_seconds) == expected


def _without_java():
    path = os.pathsep.join(
        p
        for p in os.environ["PATH"].split(os.pathsep)
        if not os.path.exists(os.path.join(p, "java"))
    )
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), path])
    return env


def test_cli_without_java_fails_at_once_saying_java_17_is_required():
    completed = subprocess.run(
        [sys.executable, "-m", "svb_spark.cli", "demo"],
        capture_output=True,
        text=True,
        env=_without_java(),
        timeout=60,
    )
    assert completed.returncode == 2
    assert "Java 17+" in completed.stderr and "Traceback" not in completed.stderr


def test_test_suite_without_java_stops_at_once_saying_java_17_is_required(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            os.path.join(os.path.dirname(__file__), "test_solver.py"),
        ],
        capture_output=True,
        text=True,
        env=_without_java(),
        timeout=120,
    )
    assert completed.returncode != 0
    assert "Java 17+" in completed.stdout + completed.stderr


def test_bad_arguments_exit_non_zero(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["demo", "--workers", "two"])
    assert exit.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


# --- train / predict / evaluate ----------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def write_libsvm(path: Path, X: np.ndarray, y: np.ndarray) -> Path:
    """Write (X, y) as LIBSVM text: "label index:value ..." with 1-based indices."""
    lines = []
    for row, label in zip(X, y):
        pairs = " ".join(f"{j + 1}:{v:.17g}" for j, v in enumerate(row) if v != 0)
        lines.append(f"{float(label):g} {pairs}".rstrip())
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def libsvm_file(tmp_path_factory):
    X, y, _ = planted(seed=1, n=300, K=3, D=5)
    X[np.abs(X) < 0.5] = 0.0  # some sparsity, as LIBSVM files have
    return write_libsvm(tmp_path_factory.mktemp("libsvm") / "train.libsvm", X, y)


def _train_args(libsvm_file, model_dir, *extra):
    return [
        "train",
        "--input",
        str(libsvm_file),
        "--format",
        "libsvm",
        "--output",
        str(model_dir),
        "--param",
        "numWorkers=2",
        *extra,
    ]


def test_train_predict_evaluate_on_libsvm(spark, libsvm_file, tmp_path, capsys):
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator

    from svb_spark import SVBLogisticRegressionModel

    model_dir = tmp_path / "model"
    args = _train_args(libsvm_file, model_dir, "--param", "maxIter=8", "--param", "dtype=float64")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "iterations           8 (lbfgs, " in out and "training accuracy" in out
    model = SVBLogisticRegressionModel.load(str(model_dir))
    assert (model.numClasses, model.numFeatures, model.getDtype()) == (3, 5, "float64")

    predictions_dir = tmp_path / "predictions"
    predict = ["predict", "--model", str(model_dir), "--input", str(libsvm_file)]
    assert cli.main([*predict, "--format", "libsvm", "--output", str(predictions_dir)]) == 0
    predictions = spark.read.parquet(str(predictions_dir))
    assert {"label", "features", "rawPrediction", "probability", "prediction"} <= set(
        predictions.columns
    )
    assert predictions.count() == 300

    evaluate = ["evaluate", "--model", str(model_dir), "--input", str(libsvm_file)]
    assert cli.main([*evaluate, "--format", "libsvm"]) == 0
    table = capsys.readouterr().out
    for label in ("accuracy", "weighted F1", "log loss"):
        assert label in table

    assert cli.main([*evaluate, "--format", "libsvm", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["rows"] == 300
    # The same numbers as MLlib's own evaluator on the written predictions.
    for name in ("accuracy", "weightedFMeasure", "logLoss"):
        expected = MulticlassClassificationEvaluator(metricName=name).evaluate(predictions)
        assert metrics[name] == pytest.approx(expected, rel=1e-9, abs=1e-12), name
    assert float(table.split("accuracy")[1].split()[0]) == pytest.approx(metrics["accuracy"], 1e-3)

    # Parquet input (the default format) gives the same numbers.
    parquet_dir = tmp_path / "test.parquet"
    spark.read.format("libsvm").load(str(libsvm_file)).write.parquet(str(parquet_dir))
    assert (
        cli.main(["evaluate", "--model", str(model_dir), "--input", str(parquet_dir), "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == pytest.approx(metrics, rel=1e-12)

    # An existing output is refused unless --overwrite is given.
    assert cli.main([*predict, "--format", "libsvm", "--output", str(predictions_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_train_and_evaluate_a_multilabel_model_on_parquet(spark, tmp_path, capsys):
    from pyspark.ml.evaluation import MultilabelClassificationEvaluator

    from svb_spark import SVBLogisticRegressionModel
    from tests.support.data import tagged_frame

    data, model_dir = tmp_path / "tagged.parquet", tmp_path / "model"
    tagged_frame(spark, rows=300)[0].write.parquet(str(data))
    train = ["train", "--input", str(data), "--output", str(model_dir), "--param", "numWorkers=2"]
    assert cli.main(train) == 0
    assert "training accuracy" in capsys.readouterr().out
    model = SVBLogisticRegressionModel.load(str(model_dir))
    assert model.getFamily() == "multilabel"

    # Rows that carry labels: MLlib's metrics are NaN on a row whose label and predicted sets
    # are both empty, where the summary counts it as right.
    labeled = tmp_path / "labeled.parquet"
    spark.read.parquet(str(data)).where("size(label) > 0").write.parquet(str(labeled))
    rows = spark.read.parquet(str(labeled)).count()
    evaluate = ["evaluate", "--model", str(model_dir), "--input", str(labeled)]
    assert cli.main(evaluate) == 0
    assert "microF1Measure" in capsys.readouterr().out
    assert cli.main([*evaluate, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0 < rows < 300 and metrics["rows"] == rows
    # The same numbers as pyspark's own evaluator on the model's predictions.
    predictions = model.transform(spark.read.parquet(str(labeled)))
    for name in cli.MULTILABEL_METRICS:
        expected = MultilabelClassificationEvaluator(metricName=name).evaluate(predictions)
        assert metrics[name] == pytest.approx(expected, rel=1e-9, abs=1e-12), name


def test_config_file_is_overridden_by_flags(spark, libsvm_file, tmp_path, capsys):
    from svb_spark import SVBLogisticRegressionModel

    config = tmp_path / "train.toml"
    config.write_text(
        '[input]\nformat = "libsvm"\n\n'
        '[params]\nmaxIter = 4\nbatchSize = 16\nregParam = 0.01\nfeaturesCol = "nope"\n'
    )
    model_dir = tmp_path / "model"
    args = [
        "train",
        "--input",
        str(libsvm_file),
        "--output",
        str(model_dir),
        "--config",
        str(config),
        "--param",
        "maxIter=2",
        "--param",
        "numWorkers=2",
        "--features-col",
        "features",
    ]
    assert cli.main(args) == 0, capsys.readouterr().err
    model = SVBLogisticRegressionModel.load(str(model_dir))
    assert model.getMaxIter() == 2  # flag over config
    assert model.getBatchSize() == 16 and model.getRegParam() == 0.01  # config over default
    assert model.getFeaturesCol() == "features"  # column flag over config
    assert model.getTol() == SVBLogisticRegression().getTol()  # neither says anything


def test_train_on_parquet_with_other_column_names(spark, libsvm_file, tmp_path, capsys):
    from svb_spark import SVBLogisticRegressionModel

    data = tmp_path / "train.parquet"
    libsvm = spark.read.format("libsvm").load(str(libsvm_file))
    libsvm.selectExpr("features AS x", "CAST(label AS INT) AS y").write.parquet(str(data))
    model_dir = tmp_path / "model"
    args = ["train", "--input", str(data), "--output", str(model_dir)]
    args += ["--features-col", "x", "--label-col", "y", "--param", "maxIter=2"]
    assert cli.main([*args, "--param", "numWorkers=2"]) == 0, capsys.readouterr().err
    model = SVBLogisticRegressionModel.load(str(model_dir))
    assert (model.getFeaturesCol(), model.getLabelCol(), model.numFeatures) == ("x", "y", 5)

    assert cli.main(["evaluate", "--model", str(model_dir), "--input", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["rows"] == 300 and 0 < metrics["logLoss"] < np.log(3)


def test_param_precedence_without_spark(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[params]\nmaxIter = 7\nstepSize = 0.5\ndtype = 'float64'\n")
    estimator = cli.build_estimator(
        cli.read_config(str(config))["params"],
        ["stepSize=2", "fitIntercept=false", "weightCol=w", "thresholds=[0.2, 0.8]"],
        {"featuresCol": None, "labelCol": "y"},
        str(config),
    )
    assert estimator.getMaxIter() == 7 and estimator.getDtype() == "float64"
    assert estimator.getStepSize() == 2.0 and estimator.getFitIntercept() is False
    assert estimator.getWeightCol() == "w" and estimator.getThresholds() == [0.2, 0.8]
    assert estimator.getLabelCol() == "y" and estimator.getFeaturesCol() == "features"
    assert estimator.getBatchSize() == 32


def _uncommented_train_toml() -> str:
    # Every "# name = value" line in conf/train.toml is a documented default; uncomment them all.
    text = (ROOT / "conf" / "train.toml").read_text()
    return re.sub(r"(?m)^# (\w+ = .+)$", r"\1", text)


def test_conf_train_toml_documents_every_param_with_a_valid_value(tmp_path):
    from svb_spark import SVBLogisticRegression

    uncommented = tmp_path / "train.toml"
    uncommented.write_text(_uncommented_train_toml())
    config = cli.read_config(str(uncommented))
    names = {p.name for p in SVBLogisticRegression().params}
    missing = names - set(config["params"])
    assert not missing, f"add these params to conf/train.toml: {sorted(missing)}"
    estimator = cli.build_estimator(config["params"], [], {}, str(uncommented))
    assert estimator.getMaxIter() == SVBLogisticRegression().getMaxIter()
    # As shipped, the file changes nothing.
    assert cli.read_config(str(ROOT / "conf" / "train.toml")) == {
        "input": {},
        "params": {},
    }


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--param", "maxIters=5"], "unknown param 'maxIters' (did you mean maxIter?)"),
        (["--param", "maxIter=abc"], "bad value 'abc' for param 'maxIter'"),
        (["--param", "maxIter=-1"], "The 'maxIter' parameter of SVBLogisticRegression"),
        (["--param", "maxIter"], "--param expects NAME=VALUE"),
        (["--config", "/nonexistent/train.toml"], "config file not found"),
    ],
)
def test_train_bad_arguments_fail_in_one_line(tmp_path, capsys, flags, message):
    args = ["train", "--input", str(tmp_path), "--output", str(tmp_path / "m"), *flags]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("svb-spark: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    if "unknown param" in message:
        assert "valid params of SVBLogisticRegression: " in err and " batchSize, " in err


def test_train_missing_input_fails_before_spark_work(tmp_path, capsys):
    args = ["train", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "m")]
    assert cli.main(args) == 2
    assert "input path does not exist" in capsys.readouterr().err
    with pytest.raises(cli.UsageError):
        cli.main(["--verbose", *args])


def test_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    for text, message in [
        ("maxIter = ", "is not valid TOML"),
        ("[param]\nmaxIter = 3\n", "unknown section(s) param"),
        ("[input]\nformat = 3\n", "[input] format must be a str"),
        ("[params]\nregParam = 'high'\n", "bad value 'high' for param 'regParam'"),
    ]:
        bad.write_text(text)
        args = ["train", "--input", str(tmp_path), "--output", str(tmp_path / "m")]
        assert cli.main([*args, "--config", str(bad)]) == 2
        assert message in capsys.readouterr().err


def test_predict_missing_model_fails_in_one_line(tmp_path, capsys):
    args = ["predict", "--model", str(tmp_path / "nope"), "--input", str(tmp_path)]
    assert cli.main([*args, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"svb-spark: error: model path does not exist: {tmp_path / 'nope'}\n"


def test_evaluate_without_input_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["evaluate", "--model", "m"])
    assert exit.value.code == 2
    assert "the following arguments are required: --input" in capsys.readouterr().err


def test_evaluate_labels_outside_the_model_classes(spark, libsvm_file, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert cli.main(_train_args(libsvm_file, model_dir, "--param", "maxIter=1")) == 0
    X, _, _ = planted(seed=2, n=20, K=3, D=5)
    other = write_libsvm(tmp_path / "other.libsvm", X, np.full(20, 7))
    capsys.readouterr()
    args = ["evaluate", "--model", str(model_dir), "--input", str(other), "--format", "libsvm"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "20 row(s) of column 'label' are not a class index" in err and "7.0" in err


@pytest.mark.slow
def test_spark_submit_runs_train(libsvm_file, tmp_path):
    import pyspark

    spark_submit = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit")
    model_dir = tmp_path / "model"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    completed = subprocess.run(
        [
            spark_submit,
            # A master other than the CLI's own default shows that the submitted one is used.
            "--master",
            "local[1]",
            "--properties-file",
            "conf/spark-defaults.conf",
            cli.__file__,
            *_train_args(libsvm_file, model_dir),
            # Later --param flags win: one worker fits local[1]'s single task slot.
            "--param",
            "numWorkers=1",
            "--param",
            "maxIter=3",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "spark master         local[1]" in completed.stdout
    assert "iterations           3 (lbfgs, " in completed.stdout
    assert (model_dir / "metadata").is_dir() and (model_dir / "data").is_dir()
