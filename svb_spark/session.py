"""Facts about the Spark we run on: Java, a ready local session, and its task slots."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

MIN_JAVA = 17

# What a local run needs; conf/spark-defaults.conf carries the same for spark-submit.
LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


class JavaNotFoundError(RuntimeError):
    """Spark needs a Java runtime this machine does not have."""


def java_major_version(java: str) -> int:
    """Major version printed by ``java -version`` (8 for "1.8.0", 17 for "17.0.15")."""
    completed = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', completed.stderr + completed.stdout)
    if not match:
        raise JavaNotFoundError(f"could not read the version printed by {java} -version")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> str:
    """Return the java executable Spark will use, or raise saying Java 17+ is required."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    hint = (
        f"svb_spark runs on Apache Spark, which requires Java {MIN_JAVA}+ "
        "(install e.g. Debian's openjdk-17-jre-headless and put java on PATH or set JAVA_HOME)."
    )
    if not java or not os.path.exists(java):
        raise JavaNotFoundError(f"Java was not found. {hint}")
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise JavaNotFoundError(f"{java} is Java {major}. {hint}")
    return java


def local_session(master: str = "local[2]", app_name: str = "svb_spark", **conf: str):
    """A SparkSession for local runs: the running interpreter on executors, quiet, loopback.

    An already active session is returned as is, so notebooks and ``spark-submit`` keep theirs.
    """
    require_java()
    # Executors must run this interpreter: another one may lack numpy and pyarrow.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master.startswith("local"):
        # Keep a local run on loopback rather than whatever address the hostname resolves to.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in {**LOCAL_CONF, "spark.pyspark.python": sys.executable, **conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def default_parallelism(spark) -> int:
    """The session's default parallelism (what ``numWorkers=0`` means)."""
    try:
        return int(spark.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext
        return int(spark.conf.get("spark.default.parallelism", "2"))


def available_task_slots(spark) -> int | None:
    """How many tasks can run at once right now, or None when Spark cannot tell us.

    A barrier stage needs one free slot per worker; asking Spark the same question its
    scheduler asks lets the fit fail at once instead of waiting for slots that never come.
    """
    try:
        jsc = spark.sparkContext._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(profile))
    except Exception:
        return None
