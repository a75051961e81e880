"""Many small fits in one local[2] session, with every process of the session measured from /proc.

Argument: the number of fits (default 100). Prints one ``RESULT {json}`` line with snapshots
taken before the first fit, after fit 5 (the baseline), after the last fit, and once the JVM's
idle pool threads have expired. Each lists, for every process of the session (the driver's
Python, the driver JVM, the pyspark daemon and the workers it forked), resident memory, open
file descriptors, threads and listening TCP ports; for the JVM also its heap after a full
collection and its threads as Java sees them.

Run by test_soak.py in a process of its own, so that no other test's objects, threads, sockets
or jobs are counted, and so that the session's processes are exactly this process's tree.
"""

import gc
import json
import os
import sys
import threading
import time
from collections import Counter

from svb_spark import SVBLogisticRegression
from svb_spark.spark.session import local_session
from tests.support.data import planted

BASELINE_FIT = 5
MAX_ITER = 2

# Spark keeps a bounded history of finished jobs, stages, tasks and SQL executions in the
# driver JVM's status store (1000 of each by default, UI or not). 100 fits run 300 jobs, so
# with the defaults that history grows for the whole soak (the heap after fit 100 held 10%
# more than after fit 5) and would pass for a leak of ours; with these limits it is full
# after the first few fits.
RETENTION = {
    "spark.ui.retainedJobs": "20",
    "spark.ui.retainedStages": "20",
    "spark.ui.retainedTasks": "200",
    "spark.sql.ui.retainedExecutions": "20",
    "spark.ui.dagGraph.retainedRootRDDs": "20",
}


def _status(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                fields[key] = int(value.split()[0])
    return {"rss": fields["VmRSS"] * 1024, "threads": fields["Threads"]}


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) of every process."""
    processes = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                # The command name is in parentheses and may hold spaces: split after it.
                state, parent = stat.read().rsplit(")", 1)[1].split()[:2]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        processes[int(name)] = (int(parent), state)
    return processes


def _cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()


def _listening_ports() -> dict[int, int]:
    """Socket inode -> port of every listening TCP socket (IPv4 and IPv6) on this host.

    Other users' Spark jobs listen here too, so callers keep only the inodes their own
    processes hold open.
    """
    ports = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    cells = row.split()
                    if cells[3] == "0A":  # TCP_LISTEN
                        ports[int(cells[9])] = int(cells[1].rsplit(":", 1)[1], 16)
        except FileNotFoundError:
            pass
    return ports


def _descriptors(pid: int, listening: dict[int, int]) -> dict:
    """Open descriptors of ``pid`` by kind, and the ports of the listening sockets among them."""
    kinds, ports = Counter(), []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            inode = int(target[len("socket:[") : -1])
            if inode in listening:
                ports.append(listening[inode])
            target = "listening socket" if inode in listening else "socket"
        elif target.startswith(("pipe:", "anon_inode:")):
            target = target.split("[")[0].rstrip(":")
        kinds[target] += 1
    return {"fds": sum(kinds.values()), "fd_kinds": dict(kinds), "listening": sorted(ports)}


def _thread_names(pid: int) -> list[str]:
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as comm:
                names.append(comm.read().strip())
        except FileNotFoundError:
            pass  # exited while we looked
    return sorted(names)


def _process(pid: int, listening: dict[int, int]) -> dict:
    return {"pid": pid, **_status(pid), **_descriptors(pid, listening)}


def _jvm_heap(sc) -> dict[str, int]:
    """The driver JVM's heap after full collections: what it holds, not what it reserved."""
    jvm = sc._jvm
    # Python first: py4j releases the JVM objects of collected Python wrappers, and Spark's
    # ContextCleaner then drops the shuffles and broadcasts nothing refers to any more.
    gc.collect()
    for _ in range(2):
        jvm.java.lang.System.gc()
        time.sleep(0.5)
    management = jvm.java.lang.management.ManagementFactory
    memory = management.getMemoryMXBean()
    return {
        "heap_used": int(memory.getHeapMemoryUsage().getUsed()),
        "heap_committed": int(memory.getHeapMemoryUsage().getCommitted()),
        # Metaspace and the JIT's code cache.
        "nonheap_used": int(memory.getNonHeapMemoryUsage().getUsed()),
        "classes": int(management.getClassLoadingMXBean().getLoadedClassCount()),
        # Off-heap Arrow buffers the JVM side of mapInArrow allocated and has not released.
        "arrow_allocated": _arrow_allocated(jvm),
    }


def _arrow_allocated(jvm) -> int | None:
    try:
        return int(jvm.org.apache.spark.sql.util.ArrowUtils.rootAllocator().getAllocatedMemory())
    except Exception:  # another Spark that keeps its allocator elsewhere: not measured
        return None


def _jvm_threads(sc) -> dict:
    """The driver JVM's Java threads: those that stay, and idle pool threads that expire.

    Spark runs much of its bookkeeping (block manager messages, shuffle exchanges, adaptive
    query stages) on cached pools whose core threads time out: each task starts a new thread
    until the pool's cap, and a thread exits after 60 s without work. While jobs keep coming,
    how many exist depends on the job rate, not on how many fits ran. Such a thread waits for
    work in ``poll`` (a timed wait) under ``ThreadPoolExecutor.getTask``; every other thread
    (including pool threads waiting in ``take``) stays until something stops it.
    """
    bean = sc._jvm.java.lang.management.ManagementFactory.getThreadMXBean()
    lasting, expiring = [], Counter()
    # ThreadInfo's text has the thread's top 8 frames: enough to see getTask and what it calls.
    for info in bean.dumpAllThreads(False, False):
        name = info.getThreadName()
        calls = [
            line.strip()[3:].split("(")[0]
            for line in info.toString().splitlines()
            if line.strip().startswith("at ")
        ]
        task = next((i for i, c in enumerate(calls) if c.endswith("ThreadPoolExecutor.getTask")), 0)
        if task > 0 and calls[task - 1].endswith(".poll"):
            expiring[name.rstrip("0123456789").rstrip("-#")] += 1
        else:
            lasting.append(name)
    return {
        "java_threads": len(lasting) + sum(expiring.values()),
        "lasting_threads": len(lasting),
        "lasting": sorted(lasting),
        "expiring_threads": dict(expiring),
    }


def _tree(processes: dict[int, tuple[int, str]]) -> tuple[int, list[int], list[int]]:
    """(driver JVM, pyspark daemons, their workers) among the live processes."""
    parents = {pid: parent for pid, (parent, state) in processes.items() if state != "Z"}
    me = os.getpid()
    # spark-submit execs java, so the JVM is a child of this process.
    jvms = [pid for pid, parent in parents.items() if parent == me and "java" in _cmdline(pid)]
    assert len(jvms) == 1, jvms
    daemons = sorted(pid for pid, parent in parents.items() if parent == jvms[0])
    workers = sorted(pid for pid, parent in parents.items() if parent in daemons)
    return jvms[0], daemons, workers


def snapshot(sc) -> dict:
    """Every process of this session, after collecting garbage in the driver's Python and JVM."""
    heap = _jvm_heap(sc)
    java = _jvm_threads(sc)
    # The last task's worker went back to its idle loop before the job ended; give the threads
    # its Flight server and progress reporter stopped a moment to be gone from /proc.
    time.sleep(1.0)
    listening = _listening_ports()
    processes = _processes()
    jvm, daemons, workers = _tree(processes)
    tree = {os.getpid(), jvm, *daemons, *workers}
    driver = _process(os.getpid(), listening)
    driver["python_threads"] = threading.active_count()
    driver["python_thread_names"] = sorted(t.name for t in threading.enumerate())
    jvm_process = {**_process(jvm, listening), **heap, **java}
    # GC, JIT compiler and other VM threads, which Java does not list.
    jvm_process["vm_threads"] = jvm_process["threads"] - java["java_threads"]
    return {
        "driver": driver,
        "jvm": jvm_process,
        "daemons": [{**_process(pid, listening), "cmd": _cmdline(pid)} for pid in daemons],
        "workers": [
            {**_process(pid, listening), "thread_names": _thread_names(pid)} for pid in workers
        ],
        # Zombies hold no memory or descriptors; counted because unreaped ones would pile up.
        "zombies": sum(state == "Z" and parent in tree for parent, state in processes.values()),
    }


def trace_point(sc) -> dict:
    """Resident memory of every process and the JVM's heap, for the record of the trend."""
    heap = _jvm_heap(sc)
    jvm, _, workers = _tree(_processes())
    return {
        "driver_rss": _status(os.getpid())["rss"],
        "jvm_rss": _status(jvm)["rss"],
        "jvm_threads": _status(jvm)["threads"],
        "worker_rss": [_status(pid)["rss"] for pid in workers],
        **heap,
    }


def soak_frame(spark):
    """The planted data, cached, built without any Python worker.

    A DataFrame made from Python rows starts a pyspark daemon and workers of its own (another
    worker pool than the fits' Arrow UDFs use), which Spark stops after a minute idle, in the
    middle of the soak. Arrow's pandas conversion runs on the driver and ``array_to_vector``
    in the JVM, so every Python worker of this session belongs to the fits.
    """
    import pandas as pd
    from pyspark.ml.functions import array_to_vector

    X, y, w = planted()
    frame = spark.createDataFrame(pd.DataFrame({"x": list(X), "label": y * 1.0, "weight": w}))
    frame = frame.select(array_to_vector("x").alias("features"), "label", "weight").cache()
    frame.count()
    return frame


def wait_for_idle_pools(sc, timeout: float = 120.0) -> float:
    """Wait until the JVM's idle pool threads have expired; return the seconds waited."""
    start = time.monotonic()
    time.sleep(60.0)  # Spark's keep-alive: none can have expired sooner
    while _jvm_threads(sc)["expiring_threads"] and time.monotonic() - start < timeout:
        time.sleep(2.0)
    return time.monotonic() - start


def main() -> None:
    fits = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    spark = local_session(
        "local[2]",
        app_name="svb_spark-soak",
        **{
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.task.maxFailures": "1",
            "spark.barrier.sync.timeout": "120",
            **RETENTION,
        },
    )
    sc = spark.sparkContext
    df = soak_frame(spark)
    estimator = SVBLogisticRegression(weightCol="weight", numWorkers=2, maxIter=MAX_ITER, seed=1)
    snapshots = {"before": snapshot(sc)}
    seconds, trace = [], []
    for fit in range(1, fits + 1):
        start = time.perf_counter()
        model = estimator.fit(df)
        seconds.append(time.perf_counter() - start)
        assert model.summary.totalIterations == MAX_ITER
        del model
        if fit == BASELINE_FIT:
            snapshots["baseline"] = snapshot(sc)
        if fit % 10 == 0:
            trace.append({"fit": fit, **trace_point(sc)})
    snapshots["end"] = snapshot(sc)
    # After the Python workers are measured: Spark closes idle workers after a minute, too.
    idle_seconds = wait_for_idle_pools(sc)
    snapshots["idle"] = snapshot(sc)
    result = {
        "fits": fits,
        "baseline_fit": BASELINE_FIT,
        "fit_seconds": seconds,
        "idle_seconds": idle_seconds,
        "trace": trace,
        **snapshots,
    }
    print("RESULT " + json.dumps(result), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
