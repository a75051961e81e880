"""What the benchmark ran on: CPU, cores, load, numpy's BLAS, Spark and the JVM's BLAS."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (noisy timings show up here), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def numpy_blas() -> list[dict]:
    """numpy's BLAS libraries as threadpoolctl reports them (library, version, threads)."""
    try:
        from threadpoolctl import threadpool_info

        return [
            {k: info.get(k) for k in ("internal_api", "version", "num_threads", "filepath")}
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ]
    except ImportError:  # fall back to what numpy was built against
        import numpy as np

        return [{"internal_api": str(np.show_config(mode="dicts")["Build Dependencies"]["blas"])}]


def python_machine() -> dict:
    """Facts about this process's machine, before Spark starts."""
    import numpy as np

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": numpy_blas(),
    }


def jvm_blas(spark) -> dict:
    """Which BLAS MLlib's JVM code uses, as dev.ludovic.netlib (MLlib's BLAS layer) loads it.

    ``blas`` is what ``BLAS.getInstance()`` picked (``JNIBLAS`` means the native library, i.e.
    libblas.so.3); ``native`` is the native instance or the reason it failed to load.
    """
    result: dict[str, str] = {}
    try:
        netlib = spark._jvm.dev.ludovic.netlib.blas
        result["blas"] = netlib.BLAS.getInstance().getClass().getName()
        try:
            result["native"] = netlib.NativeBLAS.getInstance().getClass().getName()
        except Exception as error:  # Py4J wraps the JVM's exception
            result["native"] = f"not loaded: {str(error).splitlines()[0][:200]}"
    except Exception as error:
        result["blas"] = f"unknown: {str(error).splitlines()[0][:200]}"
    libblas = Path("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    result["libblas.so.3"] = str(libblas.resolve()) if libblas.exists() else "missing"
    return result


def executor_blas_failures(worker_dir: str) -> list[str]:
    """Lines of the executors' logs where netlib failed to load a native BLAS.

    Executors are separate JVMs; netlib logs a warning when ``JNIBLAS`` cannot be loaded, so
    no such line (after MLlib has run) means they used the same native BLAS as the driver.
    """
    lines = []
    for log in Path(worker_dir).glob("*/*/stderr"):
        for line in log.read_text(errors="replace").splitlines():
            if "netlib" in line.lower() and ("failed" in line.lower() or "warn" in line.lower()):
                lines.append(line.strip()[:300])
    return lines


def spark_info(spark) -> dict:
    """Spark version, master, executors and the JVM BLAS of a running session."""
    sc = spark.sparkContext
    return {
        "spark": spark.version,
        "master": sc.master,
        "executor_memory": sc.getConf().get("spark.executor.memory", "1g"),
        "driver_memory": sc.getConf().get("spark.driver.memory", "1g"),
        "executors": int(sc._jsc.sc().getExecutorIds().size()),
        "java": sc._jvm.System.getProperty("java.version"),
        "jvm_blas": jvm_blas(spark),
    }
