"""Shared fixtures: one SparkSession for the whole suite, and the digits data.

Also the one place that skips a test for a Spark feature this install lacks: a test marked
``spark_connect`` needs a local Spark Connect server.
"""

from __future__ import annotations

import glob
import os

import pytest

from svb_spark.spark.session import JavaNotFoundError, local_session, require_java
from tests.support.data import to_frame


def pytest_configure(config):
    try:
        require_java()
    except JavaNotFoundError as error:
        pytest.exit(str(error), returncode=3)


def spark_connect_missing() -> str | None:
    """Why ``SparkSession.builder.remote("local[2]")`` cannot run here, or None if it can.

    The local Connect server is a Spark jar: pip's pyspark bundles it from Spark 4.0 on, while
    pyspark 3.5 leaves it out and would fetch it from Maven with ``--packages``. The Python
    client side is pyspark's ``connect`` extra (grpcio and friends, in the test extra).
    """
    import pyspark
    from pyspark.find_spark_home import _find_spark_home

    jars = os.path.join(_find_spark_home(), "jars")
    if not glob.glob(os.path.join(jars, "spark-connect_*.jar")):
        return (
            f"Spark Connect server jar (spark-connect_*.jar) not in {jars}: pyspark "
            f"{pyspark.__version__} does not bundle it (pip's pyspark does from 4.0), and "
            "remote('local[2]') would download it from Maven"
        )
    try:  # importing the client checks its dependencies
        import pyspark.sql.connect.session  # noqa: F401
    except Exception as error:  # grpcio and friends: pip install ".[test]"
        return f"Spark Connect client dependencies missing: {error}"
    return None


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("spark_connect")]
    reason = spark_connect_missing() if marked else None
    for item in marked if reason else []:
        item.add_marker(pytest.mark.skip(reason=reason))


# A library name no system has: netlib then runs MLlib on its Java BLAS and LAPACK.
NO_NATIVE_LIBRARY = "libsvb-spark-tests-use-java-blas.so"


@pytest.fixture(scope="session")
def spark():
    # Starting Spark takes about 20 s here, so every test shares this one session.
    session = local_session(
        "local[2]",
        app_name="svb_spark-tests",
        **{
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.task.maxFailures": "1",
            "spark.barrier.sync.timeout": "120",
            # In local mode the driver's JVM is also the executor: it holds every frame the
            # suite caches, MLlib's reference fits and the models saved through it. Spark's
            # default 1g heap ran out late in the suite, and the JVM went down with every test
            # after it.
            "spark.driver.memory": "4g",
            # MLlib's reference fits run in this driver JVM on Java's BLAS and LAPACK: where
            # the system's libblas.so.3 and liblapack.so.3 are OpenBLAS's, the JVM loads them
            # natively, and it died without a word in MLlib's bounded fits (breeze's LBFGSB
            # calls LAPACK), failing every test after it. netlib opens the library these
            # properties name, and falls back to Java where it cannot; its allowNative switch
            # is not read by netlib 3.0, which Spark 3.5 ships.
            "spark.driver.extraJavaOptions": " ".join(
                f"-Ddev.ludovic.netlib.{lib}.nativeLib={NO_NATIVE_LIBRARY}"
                for lib in ("blas", "lapack")
            ),
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's digits, split 75/25 with a fixed seed: (X_train, X_test, y_train, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


@pytest.fixture(scope="session")
def digits_frames(spark, digits):
    X_train, X_test, y_train, y_test = digits
    train = to_frame(spark, X_train, y_train).cache()
    test = to_frame(spark, X_test, y_test).cache()
    return train, test


@pytest.fixture
def on_progress(monkeypatch):
    """``on_progress(callback)`` has the driver call ``callback(message)`` with every progress
    message it shows, so that a test can watch (or interrupt) a running fit."""
    from svb_spark.control.progress import ProgressDisplay

    callbacks = []
    show = ProgressDisplay.__call__

    def show_and_call_back(self, message):
        show(self, message)
        for callback in callbacks:
            callback(message)

    monkeypatch.setattr(ProgressDisplay, "__call__", show_and_call_back)
    return callbacks.append


@pytest.fixture
def job_groups(monkeypatch):
    """The (group, description, interruptOnCancel) of every job group set during the test."""
    from pyspark import SparkContext

    calls = []
    set_job_group = SparkContext.setJobGroup

    def recording(self, group, description, interruptOnCancel=False):
        calls.append((group, description, interruptOnCancel))
        return set_job_group(self, group, description, interruptOnCancel)

    monkeypatch.setattr(SparkContext, "setJobGroup", recording)
    return calls
