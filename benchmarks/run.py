"""One benchmark run: start the cluster, time the exchange and Spark's own costs, fit every peer
on every workload, record the measurements in ``benchmarks/results/NAME.json`` and print them
as tables (:mod:`benchmarks.report`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import tempfile
import time
from pathlib import Path

from benchmarks import machine, micro, peers, report, session, workloads
from benchmarks.session import RESULTS, WORKERS, cached_frame, log
from svb_spark.core.cost import itemsize
from svb_spark.core.modes import predicted_step_seconds

# broadcast mode runs one Spark job per step; beyond this many it is timed for one epoch only.
BROADCAST_ROUNDS = {"smoke": 40, "quick": 120, "full": 1000}
# The dense exchange runs for real when the library's cost model puts it under this many seconds;
# otherwise a few steps are timed and the rest extrapolated (W3's gradient is K x 2^18).
DENSE_SECONDS = {"smoke": 30.0, "quick": 90.0, "full": 300.0}
DENSE_PROBE_STEPS = 4
# MLlib's jobs are cancelled after this long; the row then says so.
MLLIB_SECONDS = {"smoke": 120.0, "quick": 240.0, "full": 3600.0}
# Per mode: MB per local-cluster worker, executor memory, driver memory. --full's W3 moves a
# 500 x 2^18 float32 replica (0.5 GB) from an executor to the driver and decodes it there.
CLUSTER_MEMORY = {"smoke": (2048, "1g", "2g"), "quick": (2048, "1g", "4g"),
                  "full": (4096, "3g", "8g")}  # fmt: skip


def start_cluster(
    worker_memory_mb: int = 2048, executor_memory: str = "1g", driver_memory: str = "4g"
):
    """A session on ``local-cluster[2,1,worker_memory_mb]``, both executors registered, and its
    worker directory. Every JVM gets one BLAS thread; the driver, which holds MLlib's L-BFGS
    state and every fitted model, more memory than an executor."""
    worker_dir = tempfile.mkdtemp(prefix="svb-bench-worker-")
    os.environ["SPARK_WORKER_DIR"] = worker_dir
    spark = session.local_spark(
        "benchmarks",
        driver_memory,
        master=f"local-cluster[{WORKERS},1,{worker_memory_mb}]",
        one_blas_thread=True,
        **{
            "spark.executor.memory": executor_memory,
            "spark.default.parallelism": str(WORKERS),
            "spark.sql.shuffle.partitions": str(WORKERS),
            "spark.task.maxFailures": "1",
            "spark.barrier.sync.timeout": "300",
            "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
            "spark.executorEnv.OMP_NUM_THREADS": "1",
        },
    )
    wait_for_executors(spark)
    return spark, worker_dir


def wait_for_executors(spark, seconds: float = 180.0) -> None:
    """Block until all WORKERS executors are registered: a barrier stage needs every one, and
    they take seconds to start or to replace one that died (MLlib out of memory)."""
    deadline = time.time() + seconds
    while spark.sparkContext._jsc.sc().getExecutorIds().size() < WORKERS:
        if time.time() > deadline:
            registered = f"only some of the {WORKERS} executors registered in {seconds:.0f} s"
            raise RuntimeError(registered)
        time.sleep(0.5)


@dataclasses.dataclass
class Bench:
    """One workload's fits: the cached training rows and what every peer's fit shares."""

    spark: object
    workload: workloads.Workload
    train_df: object
    mode: str
    batch_size: int
    out: dict = dataclasses.field(default_factory=lambda: {"methods": {}, "bytes": []})

    @property
    def name(self) -> str:
        return self.workload.name

    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.workload.y_train) // (WORKERS * self.batch_size)))

    def svb(self, max_iter: int, **params) -> peers.FitPoint:
        """A timed SVB fit on the cached rows, on every worker unless ``params`` says else."""
        params = {"numWorkers": WORKERS, **params}
        w = self.workload
        return peers.fit_svb(self.train_df, w.X_test, w.y_test, max_iter, **params)

    def mllib(self, max_iter: int) -> peers.FitPoint:
        w, limit = self.workload, MLLIB_SECONDS[self.mode]
        return peers.fit_mllib(self.train_df, w.X_test, w.y_test, max_iter, time_limit=limit)

    def ladder(self, key: str, fit, final: peers.FitPoint, target: float) -> dict:
        """Time to ``target`` by re-fitting (see :func:`peers.time_to_target`); records it."""
        log(f"{self.name}: {key} ladder")
        ladder = peers.doubling_ladder(final.iterations)
        reached = peers.time_to_target(fit, final, target, ladder)
        self.out["methods"][key] = {"final": final.to_dict(), "time_to_target": reached}
        return reached

    def at_p2p_epochs(self, key: str, point, epochs: int, target: float, note: str, ran_all=True):
        """Record a fit run for the ``epochs`` p2p needed (the same SGD): it reached the target
        in its own time if it ran them all and its accuracy is at the target."""
        reached = ran_all and point.accuracy >= target
        ttt = {"seconds": point.seconds if reached else None,
               "iterations": epochs if reached else None}  # fmt: skip
        self.out["methods"][key] = {"final": point.to_dict(), "time_to_target": ttt, "note": note}


def _target(mllib_final, sklearn_final, svb_final) -> tuple[float, str]:
    """Target accuracy and where it comes from: MLlib's final, else scikit-learn's, else SVB's."""
    for point, source in (
        (mllib_final, "MLlib's final"),
        (sklearn_final, "MLlib did not finish: scikit-learn's final"),
        (svb_final, "MLlib and scikit-learn did not run: SVB p2p's final"),
    ):
        if point is not None:
            return point.accuracy - peers.TARGET_MARGIN, f"{source} minus {peers.TARGET_MARGIN}"
    raise ValueError("no fit to take a target from")


def fit_mllib_final(b: Bench) -> peers.FitPoint | None:
    """MLlib's full fit (maxIter 100), or None with the reason recorded if it did not finish."""
    log(f"{b.name}: MLlib, maxIter=100")
    try:
        final = b.mllib(100)
    except peers.PeerFailed as failure:
        b.out["methods"]["mllib"] = {"failed": failure.reason, "seconds": failure.seconds}
        log(f"{b.name}: MLlib did not finish after {failure.seconds:.1f} s: {failure.reason}")
        wait_for_executors(b.spark)
        return None
    log(f"{b.name}: MLlib accuracy {final.accuracy:.4f} in {final.seconds:.1f} s")
    return final


def fit_sklearn(b: Bench) -> peers.FitPoint | None:
    """scikit-learn's reference fit, or None with the reason recorded if it cannot fit here."""
    w = b.workload
    problem = peers.sklearn_memory_problem(w.num_classes, w.num_features)
    log(f"{b.name}: scikit-learn {problem or ''}")
    if problem:
        b.out["methods"]["sklearn"] = {"skipped": problem}
        return None
    final = peers.fit_sklearn(w.X_train, w.y_train, w.X_test, w.y_test)
    note = "accuracy reference, single process"
    b.out["methods"]["sklearn"] = {"final": final.to_dict(), "note": note}
    return final


def _dense_probe(spark, workload, batch_size: int):
    """A one-epoch dense-exchange fit on the first rows: ``DENSE_PROBE_STEPS`` steps."""
    rows = WORKERS * batch_size * DENSE_PROBE_STEPS
    probe_df = cached_frame(spark, workload.X_train[:rows], workload.y_train[:rows])
    try:
        point = peers.fit_svb(probe_df, workload.X_test, workload.y_test, 1,
                              numWorkers=WORKERS, exchange="dense",
                              batchSize=batch_size)  # fmt: skip
    finally:
        probe_df.unpersist()
    return point, rows


SAME_SGD = "timed at {} epoch(s), where p2p reached the target (same SGD)"


def fit_svb_dense(b: Bench, epochs: int, target: float) -> tuple[peers.FitPoint, str]:
    """The dense exchange at the epochs p2p needed, or, when the cost model puts that past the
    mode's budget, a few steps of it with the rest extrapolated; returns the fit and how."""
    w, steps = b.workload, b.steps_per_epoch() * epochs
    nonzeros = w.describe().get("nonzeros_per_row")
    predicted = steps * predicted_step_seconds("dense", WORKERS, b.batch_size, w.num_classes,
                                               w.num_features, itemsize("float32"),
                                               nonzeros)  # fmt: skip
    if predicted <= DENSE_SECONDS[b.mode]:
        log(f"{b.name}: SVB dense, {epochs} epoch(s)")
        dense = b.svb(epochs, exchange="dense")
        b.at_p2p_epochs("svb-dense", dense, epochs, target, SAME_SGD.format(epochs))
        return dense, "cluster"
    log(f"{b.name}: SVB dense: the model predicts {predicted:.0f} s for {steps} steps; "
        f"timing {DENSE_PROBE_STEPS} steps")  # fmt: skip
    dense, rows = _dense_probe(b.spark, w, b.batch_size)
    per_step, probe = peers.loop_seconds_per_step(dense), dense.extra["steps"]
    b.out["methods"]["svb-dense"] = {
        "final": dense.to_dict(),
        "estimated": {"seconds": per_step * steps, "steps": steps, "per_step_s": per_step,
                      "probe_steps": probe, "probe_rows": rows, "predicted_s": predicted},
        "note": f"too slow to run: the cost model predicts {predicted:,.0f} s for the {steps} "
        f"steps p2p needed; measured {1000 * per_step:,.1f} ms per step over a {probe}-step "
        f"fit on {rows} rows, so about {per_step * steps:,.0f} s of training loop (setup not "
        "included)",
    }  # fmt: skip
    return dense, f"cluster, {probe}-step probe"


def fit_svb_broadcast(b: Bench, epochs: int, target: float) -> peers.FitPoint | None:
    """The broadcast exchange at the epochs p2p needed, or one epoch past the Spark-job budget,
    or none (the reason recorded) when one epoch exceeds it."""
    per_epoch, budget = b.steps_per_epoch(), BROADCAST_ROUNDS[b.mode]
    if per_epoch > budget:
        b.out["methods"]["svb-broadcast"] = {
            "skipped": f"{per_epoch} Spark jobs per epoch exceed the {b.mode} budget of "
            f"{budget}; run --full"
        }
        return None
    ran_all = per_epoch * epochs <= budget
    log(f"{b.name}: SVB broadcast, {epochs if ran_all else 1} epoch(s)")
    point = b.svb(epochs if ran_all else 1, exchange="broadcast")
    note = SAME_SGD.format(epochs)
    if not ran_all:
        note = f"1 epoch only: {per_epoch * epochs} rounds exceed the {b.mode} budget of {budget}"
    b.at_p2p_epochs("svb-broadcast", point, epochs, target, note, ran_all)
    return point


# The exchange modes side by side at batchSize 16 (W1), one epoch each: (label, params).
BATCH16_MODES = [
    ("p2p", {"exchange": "p2p"}),
    ("dense", {"exchange": "dense"}),
    ("auto", {"exchange": "auto"}),
    ("p2p, syncInterval 4", {"exchange": "p2p", "syncInterval": 4}),
]


def bytes_row(config: str, point: peers.FitPoint, accuracy: bool = True) -> dict:
    """Bytes per step of one fit, measured and predicted for the mode in force, with its
    training time per step (summary.timings["train"], any mode) and (unless a few-step probe)
    its held-out accuracy."""
    extra = point.extra
    return {
        "config": config,
        "exchange": extra["exchange"],
        "measured": extra["bytes_per_step"],
        "predicted": extra["predicted_bytes_per_step"][extra["exchange"]],
        "train_ms_per_step": 1000 * extra["timings"]["train"] / max(extra["steps"], 1),
        "accuracy": point.accuracy if accuracy else None,
    }


def record_bytes(b: Bench, fits: dict[str, peers.FitPoint | None], dense_how: str) -> None:
    """Bytes per step of the default-batch fits and, on W1, of every mode at batchSize 16."""
    probe = "" if dense_how == "cluster" else f" ({dense_how.split(', ')[1]})"
    for key, point in fits.items():
        if point is not None:
            how = probe if key == "dense" else ""
            config = f"{key}, batchSize {b.batch_size}{how}"
            b.out["bytes"].append(bytes_row(config, point, not how))
    if b.name == "W1":
        log(f"{b.name}: batchSize 16, {', '.join(label for label, _ in BATCH16_MODES)}, 1 epoch")
        for label, params in BATCH16_MODES:
            point = b.svb(1, batchSize=16, **params)
            b.out["bytes"].append(bytes_row(f"{label}, batchSize 16", point))


def run_workload(spark, workload, mode: str, batch_size: int) -> dict:
    """Every peer on one workload: time to accuracy, bytes per step and the step breakdown.

    A peer that cannot run here (MLlib out of memory or past its time limit, scikit-learn's
    optimizer larger than the machine, the dense exchange too slow) gets a row saying why;
    the dense exchange is then timed on a few steps and its time extrapolated, labelled so.
    """
    train_df = cached_frame(spark, workload.X_train, workload.y_train)
    b = Bench(spark, workload, train_df, mode, batch_size)
    b.out["describe"] = workload.describe()
    mllib_final = fit_mllib_final(b)
    sklearn_final = fit_sklearn(b)
    log(f"{b.name}: SVB p2p, defaults")
    p2p = b.svb(100)
    log(f"{b.name}: SVB accuracy {p2p.accuracy:.4f} in {p2p.seconds:.1f} s")
    target, b.out["target_source"] = _target(mllib_final, sklearn_final, p2p)
    b.out["target_accuracy"] = target
    if mllib_final is not None:
        b.ladder("mllib", b.mllib, mllib_final, target)
    epochs = b.ladder("svb-p2p", b.svb, p2p, target)["iterations"] or p2p.iterations
    dense, dense_how = fit_svb_dense(b, epochs, target)
    broadcast = fit_svb_broadcast(b, epochs, target)
    record_bytes(b, {"p2p": p2p, "dense": dense, "broadcast": broadcast}, dense_how)
    # Seconds per step of each phase of the loop, as measured (rank 0's summary.timings).
    b.out["breakdown"] = {key: peers.per_step(p.extra["timings"], p.extra["steps"])
                          for key, p in (("svb-p2p", p2p), ("svb-dense", dense))}  # fmt: skip
    train_df.unpersist()
    return b.out


def run(mode: str, name: str | None = None, names: list[str] | None = None,
        results_dir: Path = RESULTS) -> dict:  # fmt: skip
    """Run the benchmark in ``mode`` (quick, full, smoke) on the workloads ``names``; write
    ``results_dir/<name>.json`` and print its tables."""
    started = time.perf_counter()
    result: dict = {
        "name": name or mode,
        "mode": mode,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {**machine.python_machine(), "load_start": machine.load_average()},
    }
    names = names or ["W1", "W2", "W3"]
    selected = workloads.selected(names, mode)
    batch = peers.default_batch_size()
    result["svb_defaults"] = {"batchSize": batch, "maxIter": 100, "tol": 1e-6}
    worker_mb, executor_memory, driver_memory = CLUSTER_MEMORY[mode]
    log(f"starting local-cluster[{WORKERS},1,{worker_mb}] (two executor JVMs)")
    spark, worker_dir = start_cluster(worker_mb, executor_memory, driver_memory)
    try:
        result["machine"]["spark"] = machine.spark_info(spark)
        log("microbenchmarks: Flight p2p (tiny and 4 MB), Spark job, allGather")
        result["micro"] = micro.exchange_latencies(spark, WORKERS)
        log("microbenchmarks of the speed claims: in-place rebuild, sparse layout, digest")
        result["claims"] = micro.speed_claims(*micro.claim_shapes(mode, batch, "W3" in names))
        result["workloads"] = {w.name: run_workload(spark, w, mode, batch) for w in selected}
        result["machine"]["executor_blas_failures"] = machine.executor_blas_failures(worker_dir)
        # After MLlib's fits: netlib picks its BLAS when first used.
        result["machine"]["spark"]["jvm_blas"] = machine.jvm_blas(spark)
    finally:
        spark.stop()
    result["machine"]["load_end"] = machine.load_average()
    result["duration_s"] = time.perf_counter() - started
    session.write(result, results_dir / f"{result['name']}.json")
    print(report.tables(result))
    return result
