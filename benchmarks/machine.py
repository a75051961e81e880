"""What a benchmark ran on: CPU, cores, load, numpy's BLAS and the JVM's BLAS."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (noisy timings show up here), or None."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def python_machine() -> dict:
    """Facts about this process's machine, numpy's BLAS as threadpoolctl reports it."""
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "filepath")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numpy_blas": blas}  # fmt: skip


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0][:200]


def jvm_blas(spark) -> dict:
    """The BLAS MLlib's netlib layer picked (``JNIBLAS``: the native libblas.so.3), and the
    native instance or why it failed to load."""
    result: dict[str, str] = {}
    try:
        netlib = spark._jvm.dev.ludovic.netlib.blas
        result["blas"] = netlib.BLAS.getInstance().getClass().getName()
        try:
            result["native"] = netlib.NativeBLAS.getInstance().getClass().getName()
        except Exception as error:  # Py4J wraps the JVM's exception
            result["native"] = f"not loaded: {_first_line(error)}"
    except Exception as error:
        result["blas"] = f"unknown: {_first_line(error)}"
    libblas = Path("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    result["libblas.so.3"] = str(libblas.resolve()) if libblas.exists() else "missing"
    return result
