"""Facts about the Spark we run on: Java, a ready local session, its task slots, whether it
can run a barrier stage and how much memory a worker has."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

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


def spark_context(spark):
    """The session's SparkContext, or None on Spark Connect (which has none)."""
    try:
        return spark.sparkContext
    except Exception:
        return None


def dataframe_from_arrow(spark, table):
    """``spark.createDataFrame`` of a ``pyarrow.Table``, on every supported Spark.

    Spark 4 takes the table itself. Spark 3.5 takes pandas only, and converts it through Arrow
    only while ``spark.sql.execution.arrow.pyspark.enabled`` is on (its row-by-row path refuses
    the numpy values of list columns), so there that conf is on for this one call.
    """
    from pyspark.sql import DataFrame

    if hasattr(DataFrame, "toArrow"):  # came with Arrow-table input, in Spark 4.0
        return spark.createDataFrame(table)
    from pyspark.sql.pandas.types import from_arrow_schema

    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key)
    spark.conf.set(key, "true")
    try:
        return spark.createDataFrame(table.to_pandas(), from_arrow_schema(table.schema))
    finally:
        spark.conf.set(key, before)


_JOB_PROPERTIES = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")


@contextmanager
def job_group(spark, description: str) -> Iterator[str]:
    """Run the block's Spark jobs under a fresh job group labelled ``description``.

    The Spark UI then says what is running, and a KeyboardInterrupt in the block cancels
    exactly these jobs (interrupting their tasks) before it propagates. The caller's own job
    group, if any, is restored afterwards. On Spark Connect the jobs get an operation tag
    instead, which ``interruptTag`` cancels the same way. Yields the group id (or tag).
    """
    group = f"svb_spark-{secrets.token_hex(8)}"
    sc = spark_context(spark)
    if sc is None:
        try:
            spark.addTag(group)
        except Exception:  # a Connect client without tags: nothing to label or cancel
            yield group
            return
        try:
            yield group
        except KeyboardInterrupt:
            spark.interruptTag(group)
            raise
        finally:
            spark.removeTag(group)
        return
    previous = {key: sc.getLocalProperty(key) for key in _JOB_PROPERTIES}
    sc.setJobGroup(group, description, interruptOnCancel=True)
    interrupted = threading.Event()
    try:
        with _noting_sigint(interrupted):
            yield group
    except BaseException as error:
        if not (isinstance(error, KeyboardInterrupt) or interrupted.is_set()):
            raise
        sc.cancelJobGroup(group)
        if isinstance(error, KeyboardInterrupt):
            raise
        # Spark 3.5's SIGINT handler cancels every job through the py4j connection that the
        # interrupted call is still reading, fails there and raises that error instead.
        raise KeyboardInterrupt from error
    finally:
        for key, value in previous.items():
            sc.setLocalProperty(key, value)


@contextmanager
def _noting_sigint(seen: threading.Event) -> Iterator[None]:
    """Set ``seen`` when SIGINT (Ctrl-C) arrives in the block; the handler in place (PySpark's,
    which cancels all jobs and raises KeyboardInterrupt) still handles it. Only the main thread
    receives signals, so elsewhere nothing changes."""
    handler = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(handler):
        yield
        return

    def noting(signum, frame):
        seen.set()
        handler(signum, frame)

    signal.signal(signal.SIGINT, noting)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)


def default_parallelism(spark) -> int:
    """The session's default parallelism (what ``numWorkers=0`` means)."""
    sc = spark_context(spark)
    if sc is not None:
        return int(sc.defaultParallelism)
    # Spark Connect: the conf if set, else the core count of a local[N] master, else 2.
    configured = spark.conf.get("spark.default.parallelism", None)
    if configured:
        return int(configured)
    match = re.fullmatch(r"local\[(\d+)(?:,\d+)?\]", spark.conf.get("spark.master", "") or "")
    return int(match.group(1)) if match else 2


def available_task_slots(spark) -> int | None:
    """How many tasks can run at once right now, or None when Spark cannot tell us.

    A barrier stage needs one free slot per worker; asking Spark the same question its
    scheduler asks lets the fit fail at once instead of waiting for slots that never come.
    """
    sc = spark_context(spark)
    if sc is None:
        return None  # Spark Connect cannot tell; the barrier stage then waits for slots
    try:
        jsc = sc._jsc.sc()
        profile = jsc.resourceProfileManager().defaultResourceProfile()
        return int(jsc.maxNumConcurrentTasks(profile))
    except Exception:
        return None


# Arrow batches into a Python task: Spark 4 cuts them at 64 MB by default, and hands 30k rows of
# 784 doubles to a mapInArrow task in 0.93 s that way but in 0.40 s in 4 MB batches (local[2]).
ARROW_BATCH_BYTES = 4 << 20
_ARROW_BATCH_KEY = "spark.sql.execution.arrow.maxBytesPerBatch"
_BYTE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@contextmanager
def arrow_batch_bytes(spark, limit: int = ARROW_BATCH_BYTES) -> Iterator[None]:
    """Run the block's ``mapInArrow`` jobs on Arrow batches of at most ``limit`` bytes.

    Sets spark.sql.execution.arrow.maxBytesPerBatch, which Spark reads when a job starts, for
    the block only; a smaller value the session already has stays. Spark 3.5 has no such key
    and its batches keep their maxRecordsPerBatch rows.
    """
    try:
        before = spark.conf.get(_ARROW_BATCH_KEY, None)
    except Exception:  # a Connect server that hides the key: leave it
        before = "0"
    if before is not None and (_byte_count(before) or 0) <= limit:
        yield
        return
    spark.conf.set(_ARROW_BATCH_KEY, str(limit))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(_ARROW_BATCH_KEY)
        else:
            spark.conf.set(_ARROW_BATCH_KEY, before)


def _byte_count(value: str) -> int | None:
    """Bytes of a JVM size string ("67108864b", "32m", "1g"), or None if it is not one."""
    match = re.fullmatch(r"\s*(\d+)\s*([bkmgt]?)b?\s*", value.lower())
    return int(match.group(1)) * _BYTE_UNITS[match.group(2)] if match else None


# What adaptive execution turns a shuffle or a broadcast into once it has run it.
_STAGES_OF_SHUFFLES = ("ShuffleQueryStageExec", "BroadcastQueryStageExec")


def barrier_stage_keeps_partitions(dataset, num_partitions: int) -> bool:
    """Whether a barrier stage can run straight on ``dataset``'s own partitions, with no shuffle.

    Spark refuses a barrier stage in which an RDD has another number of partitions than the
    stage (what a union or a coalesce leaves): this asks the same of the dataset's RDD lineage,
    up to its shuffles. Only in classic mode, and only for a plan without exchanges: adaptive
    execution makes a plan's RDD by running its shuffles, and by building the cached tables
    it reads (which the fit's pre-pass has built already). False when it cannot tell.
    """
    try:
        plan = dataset._jdf.queryExecution().executedPlan()
        nodes = [plan]
        while nodes:
            node = nodes.pop()
            name = node.getClass().getSimpleName()
            if "Exchange" in name or name in _STAGES_OF_SHUFFLES:
                return False
            if name == "AdaptiveSparkPlanExec":  # a leaf: the plan it adapts, as it stands
                nodes.append(node.executedPlan())
                continue
            if name == "ResultQueryStageExec":  # a leaf holding the final stage's plan
                nodes.append(node.plan())
                continue
            children = node.children()
            nodes.extend(children.apply(i) for i in range(children.size()))
        waiting, seen = [plan.execute()], set()
        while waiting:
            rdd = waiting.pop()
            if rdd.id() in seen:
                continue
            seen.add(rdd.id())
            if rdd.getNumPartitions() != num_partitions:
                return False
            dependencies = rdd.dependencies()
            for i in range(dependencies.size()):
                dependency = dependencies.apply(i)
                if dependency.getClass().getSimpleName() != "ShuffleDependency":
                    waiting.append(dependency.rdd())
        return True
    except Exception:  # Spark Connect (no JVM handle) or an unfamiliar plan
        return False


def classic_conf(spark) -> Callable[[str], str | None] | None:
    """A reader of the SparkContext's conf keys (:func:`spark_conf`), or None on Spark
    Connect, which has no SparkContext: what the driver's control plane is handed."""
    if spark_context(spark) is None:
        return None
    return lambda key: spark_conf(spark, key)


def spark_conf(spark, key: str, default: str | None = None) -> str | None:
    """The value of a Spark (not SQL) conf key as the SparkContext sees it, or ``default``.

    ``spark.conf`` only mirrors core keys as they were at start-up, so read the SparkContext's
    own conf where there is one (classic mode) and fall back to ``spark.conf`` on Spark Connect.
    """
    sc = spark_context(spark)
    if sc is not None:
        # The context's own SparkConf wraps the JVM's live conf: one key costs one or two
        # py4j calls, where ``sc.getConf()`` copies every entry, one call each (a fit read
        # a dozen keys that way in about 0.3 s).
        conf = getattr(sc, "_conf", None) or sc.getConf()
        return conf.get(key, default)
    try:
        return spark.conf.get(key, default)
    except Exception:  # a Connect server that hides the key
        return default


def spark_or_session_conf(spark, key: str) -> str | None:
    """A key from the Spark conf, or else from the session's runtime conf (``spark.conf.set``,
    as a notebook sets it)."""
    value = spark_conf(spark, key)
    if value is None:
        try:
            value = spark.conf.get(key, None)
        except Exception:  # a Connect server that hides the key
            value = None
    return value


def _is_local_master(master: str) -> bool:
    # Spark's Utils.isLocalMaster: "local-cluster[...]" runs real executors, so it is not local.
    return master == "local" or master.startswith("local[")


def check_barrier_mode_supported(spark) -> None:
    """Raise ValueError if Spark would refuse the barrier stage because of dynamic allocation.

    Spark's DAGScheduler rejects every barrier stage while dynamic allocation is in effect
    (``BarrierJobRunWithDynamicAllocationException``, SPARK-24942), but only after the fit's
    pre-pass has run; this applies the same rule up front. As in Spark, dynamic allocation is
    ignored in local mode unless ``spark.dynamicAllocation.testing`` is true.
    """
    enabled = (spark_conf(spark, "spark.dynamicAllocation.enabled") or "false").strip().lower()
    if enabled != "true":
        return
    testing = (spark_conf(spark, "spark.dynamicAllocation.testing") or "false").strip().lower()
    if _is_local_master(spark_conf(spark, "spark.master") or "") and testing != "true":
        return
    raise ValueError(
        "The Spark conf 'spark.dynamicAllocation.enabled' is true; SVBLogisticRegression trains "
        "in one barrier stage, whose tasks must all start together on a fixed set of executors, "
        "and Spark rejects barrier stages while dynamic allocation may add or remove executors "
        "(SPARK-24942). Start the application with --conf spark.dynamicAllocation.enabled=false "
        "and a fixed number of executors (spark.executor.instances)."
    )


_MEMORY_UNITS = {"": 1 << 20, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_MEMORY_UNITS.update({"p": 1 << 50, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30})
_MEMORY_UNITS.update({"tb": 1 << 40, "pb": 1 << 50})


def memory_bytes(text: str) -> int:
    """Bytes of a Spark memory setting such as "512m", "4g" or "2048" (a bare number is MiB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if unit not in _MEMORY_UNITS:
        raise ValueError(f"could not read the Spark memory setting {text!r}")
    return int(match.group(1)) * _MEMORY_UNITS[unit]


def worker_memory(spark) -> tuple[str, int | None]:
    """The conf key that bounds one worker's memory and its value in bytes (None if unreadable).

    With ``spark.executor.pyspark.memory`` set, Spark caps each Python worker at that memory
    divided by ``spark.executor.cores``. Otherwise executors get ``spark.executor.memory``
    (default 1g); in local mode the driver's JVM is the only executor, so
    ``spark.driver.memory`` is what the workers share.
    """
    python = spark_conf(spark, "spark.executor.pyspark.memory")
    if python:
        try:
            cores = int(spark_conf(spark, "spark.executor.cores") or 1)
            return "spark.executor.pyspark.memory", memory_bytes(python) // max(cores, 1)
        except ValueError:
            return "spark.executor.pyspark.memory", None
    local = _is_local_master(spark_conf(spark, "spark.master") or "")
    key = "spark.driver.memory" if local else "spark.executor.memory"
    try:
        return key, memory_bytes(spark_conf(spark, key) or "1g")
    except ValueError:
        return key, None


def driver_memory(spark) -> int | None:
    """The driver's memory in bytes (``spark.driver.memory``, 1g unset), None if unreadable."""
    try:
        return memory_bytes(spark_conf(spark, "spark.driver.memory") or "1g")
    except ValueError:
        return None
