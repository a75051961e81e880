"""The command line and the Java check."""

import os
import subprocess
import sys

import pytest

from svb_spark import cli


def test_demo_trains_and_reports(spark, capsys):
    assert cli.main(["demo", "--workers", "2", "--max-iter", "20"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("test accuracy")[1].split()[0])
    assert accuracy > 0.9
    for label in ("epochs", "bytes exchanged", "fit time"):
        assert label in out


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
