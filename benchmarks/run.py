"""One benchmark run: start the cluster, time the exchange and Spark's own costs, fit every peer
on every workload, record the measurements in ``benchmarks/results/NAME.json`` and print them
as tables (:mod:`benchmarks.report`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from benchmarks import machine, micro, peers, report, workloads
from svb_spark.core.cost import itemsize
from svb_spark.core.modes import predicted_step_seconds

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WORKERS = 2
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


def log(message: str) -> None:
    """Progress on stdout, with the wall clock, so a long run shows where it is."""
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


def start_cluster(
    worker_memory_mb: int = 2048, executor_memory: str = "1g", driver_memory: str = "4g"
):
    """A session on ``local-cluster[2,1,worker_memory_mb]``, both executors registered, and its
    worker directory. Every JVM gets one BLAS thread; the driver, which holds MLlib's L-BFGS
    state and every fitted model, more memory than an executor."""
    from svb_spark.spark.session import local_session

    worker_dir = tempfile.mkdtemp(prefix="svb-bench-worker-")
    os.environ["SPARK_WORKER_DIR"] = worker_dir
    # The JVMs read these at launch; this process's BLAS libraries keep their own settings
    # (numpy's is loaded already, scipy's may load later), so the variables are restored.
    with mock.patch.dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1"):
        spark = local_session(
            f"local-cluster[{WORKERS},1,{worker_memory_mb}]",
            app_name="svb-spark benchmarks",
            **{
                "spark.executor.memory": executor_memory,
                "spark.driver.memory": driver_memory,
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


def exchange_latencies(spark) -> dict:
    """The costs a step must stay clear of, in milliseconds: a Flight exchange between two
    threads (tiny and 4 MB payloads), a trivial Spark job and a barrier ``allGather``."""
    log("microbenchmarks: Flight p2p (tiny and 4 MB), Spark job, allGather")
    large_bytes = 4 << 20
    return {
        "p2p_tiny_ms": 1000 * micro.flight_exchange_seconds(2, 64, steps=400),
        "p2p_large_ms": 1000 * micro.flight_exchange_seconds(2, large_bytes, steps=30),
        "p2p_large_bytes": large_bytes,
        "spark_job_ms": 1000 * micro.spark_job_seconds(spark),
        "all_gather_ms": 1000 * micro.all_gather_seconds(spark, WORKERS),
    }


def speed_claims(mode: str, w1: Shape, w3: Shape | None) -> dict:
    """The microbenchmarks behind the README's speed claims, at the issue's shapes and this
    run's (``smoke``: small ones, to check the harness quickly)."""
    if mode == "smoke":
        return micro.speed_claims([(100, 256, 32)], [(50, 1 << 14, 16)], (64, 1 << 14))
    rebuild = [(1000, 2048, 32), (w1.num_classes, w1.num_features, w1.batch_size)]
    sparse = [(500, 1 << 18, 16)]
    if w3 is not None:
        sparse.append((w3.num_classes, w3.num_features, w3.batch_size))
    return micro.speed_claims(rebuild, sparse, (256, 1 << 18))


def cached_frame(spark, X, y):
    """Rows ``X``, labels ``y`` as a cached DataFrame of one partition per worker."""
    from svb_spark import datasets

    frame = datasets.to_dataframe(spark, X, y, num_partitions=WORKERS).cache()
    frame.count()
    return frame


@dataclasses.dataclass(frozen=True)
class Shape:
    """A problem and the per-worker batch size; ``nonzeros`` per CSR row (None: dense rows)."""

    rows: int
    num_classes: int
    num_features: int
    batch_size: int = 32
    nonzeros: float | None = None

    def steps_per_epoch(self, workers: int) -> int:
        return max(1, -(-self.rows // (workers * self.batch_size)))

    def predicted_step_s(self, mode: str, workers: int) -> float:
        """The library's cost model of one float32 step in ``mode`` (auto consults it)."""
        return predicted_step_seconds(mode, workers, self.batch_size, self.num_classes,
                                      self.num_features, itemsize("float32"),
                                      self.nonzeros)  # fmt: skip


def workload_shape(describe: dict, batch_size: int) -> Shape:
    """The shape of a workload (its ``describe()``) at a per-worker batch size."""
    d = describe
    return Shape(d["train_rows"], d["num_classes"], d["num_features"], batch_size,
                 d.get("nonzeros_per_row"))  # fmt: skip


@dataclasses.dataclass
class Bench:
    """One workload's fits: the cached training rows and what every peer's fit shares."""

    spark: object
    workload: workloads.Workload
    train_df: object
    mode: str
    shape: Shape
    out: dict = dataclasses.field(default_factory=lambda: {"methods": {}, "bytes": []})

    @property
    def name(self) -> str:
        return self.workload.name

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


def _target(mllib_final, sklearn_final, svb_final) -> tuple[float, str]:
    """Target accuracy and where it comes from: MLlib's final, else scikit-learn's, else SVB's."""
    for point, source in (
        (mllib_final, "MLlib's final"),
        (sklearn_final, "MLlib did not finish: scikit-learn's final"),
        (svb_final, "MLlib and scikit-learn did not run: SVB p2p's final"),
    ):
        if point is not None:
            return point.accuracy - 0.005, f"{source} minus 0.005"
    raise ValueError("no fit to take a target from")


def _at_epochs(point: peers.FitPoint, epochs: int, target: float, ran_all=True) -> dict:
    """Time to target of a fit run for the ``epochs`` p2p needed (the same SGD)."""
    reached = ran_all and point.accuracy >= target
    return {"seconds": point.seconds if reached else None,
            "iterations": epochs if reached else None}  # fmt: skip


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


def fit_svb_dense(b: Bench, epochs: int, target: float) -> tuple[peers.FitPoint, str]:
    """The dense exchange at the epochs p2p needed, or, when the cost model puts that past the
    mode's budget, a few steps of it with the rest extrapolated; returns the fit and how."""
    steps = b.shape.steps_per_epoch(WORKERS) * epochs
    predicted = b.shape.predicted_step_s("dense", WORKERS) * steps
    if predicted <= DENSE_SECONDS[b.mode]:
        log(f"{b.name}: SVB dense, {epochs} epoch(s)")
        dense = b.svb(epochs, exchange="dense")
        b.out["methods"]["svb-dense"] = {
            "final": dense.to_dict(), "time_to_target": _at_epochs(dense, epochs, target),
            "note": f"timed at {epochs} epoch(s), where p2p reached the target (same SGD)",
        }  # fmt: skip
        return dense, "cluster"
    log(f"{b.name}: SVB dense: the model predicts {predicted:.0f} s for {steps} steps; "
        f"timing {DENSE_PROBE_STEPS} steps")  # fmt: skip
    dense, rows = _dense_probe(b.spark, b.workload, b.shape.batch_size)
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
    per_epoch, budget = b.shape.steps_per_epoch(WORKERS), BROADCAST_ROUNDS[b.mode]
    if per_epoch > budget:
        b.out["methods"]["svb-broadcast"] = {
            "skipped": f"{per_epoch} Spark jobs per epoch exceed the {b.mode} budget of "
            f"{budget}; run --full"
        }
        return None
    run_epochs = epochs if per_epoch * epochs <= budget else 1
    log(f"{b.name}: SVB broadcast, {run_epochs} epoch(s)")
    point = b.svb(run_epochs, exchange="broadcast")
    b.out["methods"]["svb-broadcast"] = {
        "final": point.to_dict(),
        "time_to_target": _at_epochs(point, epochs, target, run_epochs == epochs),
        "note": f"timed at {epochs} epoch(s), where p2p reached the target (same SGD)"
        if run_epochs == epochs
        else f"1 epoch only: {per_epoch * epochs} rounds exceed the {b.mode} budget of {budget}",
    }
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
    batch = b.shape.batch_size
    probe = "" if dense_how == "cluster" else f" ({dense_how.split(', ')[1]})"
    for key, point in fits.items():
        if point is not None:
            how = probe if key == "dense" else ""
            b.out["bytes"].append(bytes_row(f"{key}, batchSize {batch}{how}", point, not how))
    if b.name != "W1":
        return
    log(f"{b.name}: batchSize 16, {', '.join(label for label, _ in BATCH16_MODES)}, 1 epoch")
    small = {}
    for label, params in BATCH16_MODES:
        row = bytes_row(f"{label}, batchSize 16", b.svb(1, batchSize=16, **params))
        b.out["bytes"].append(row)
        small[label] = row["measured"]
    b.out["batch16_bytes"] = {mode: small[mode] for mode in ("p2p", "dense")}


def record_breakdown(b: Bench, p2p: peers.FitPoint, dense: peers.FitPoint) -> None:
    """Seconds per step of each phase of the loop, as measured (rank 0's summary.timings)."""
    b.out["breakdown"] = {key: peers.per_step(p.extra["timings"], p.extra["steps"])
                          for key, p in (("svb-p2p", p2p), ("svb-dense", dense))}  # fmt: skip


def run_workload(spark, workload, mode: str) -> dict:
    """Every peer on one workload: time to accuracy, bytes per step and the step breakdown.

    A peer that cannot run here (MLlib out of memory or past its time limit, scikit-learn's
    optimizer larger than the machine, the dense exchange too slow) gets a row saying why;
    the dense exchange is then timed on a few steps and its time extrapolated, labelled so.
    """
    train_df = cached_frame(spark, workload.X_train, workload.y_train)
    describe = workload.describe()
    shape = workload_shape(describe, peers.default_batch_size())
    b = Bench(spark, workload, train_df, mode, shape)
    b.out["describe"] = describe
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
    record_breakdown(b, p2p, dense)
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
    selected = workloads.selected(names or ["W1", "W2", "W3"], mode)
    batch = peers.default_batch_size()
    result["svb_defaults"] = {"batchSize": batch, "maxIter": 100, "tol": 1e-6}
    worker_mb, executor_memory, driver_memory = CLUSTER_MEMORY[mode]
    log(f"starting local-cluster[{WORKERS},1,{worker_mb}] (two executor JVMs)")
    spark, worker_dir = start_cluster(worker_mb, executor_memory, driver_memory)
    try:
        result["machine"]["spark"] = machine.spark_info(spark)
        w1 = next((w for w in selected if w.name == "W1"), None) or workloads.w1_planted(mode)
        w3 = next((w for w in selected if w.name == "W3"), None)
        shapes = {w.name: workload_shape(w.describe(), batch) for w in (w1, w3) if w}
        result["micro"] = exchange_latencies(spark)
        log("microbenchmarks of the speed claims: in-place rebuild, sparse layout, digest")
        result["claims"] = speed_claims(mode, shapes["W1"], shapes.get("W3"))
        result["workloads"] = {w.name: run_workload(spark, w, mode) for w in selected}
        result["machine"]["executor_blas_failures"] = machine.executor_blas_failures(worker_dir)
        # After MLlib's fits: netlib picks its BLAS when first used.
        result["machine"]["spark"]["jvm_blas"] = machine.jvm_blas(spark)
    finally:
        spark.stop()
    result["machine"]["load_end"] = machine.load_average()
    result["duration_s"] = time.perf_counter() - started
    write(result, results_dir)
    print(report.tables(result))
    return result


def write(result: dict, results_dir: Path = RESULTS) -> Path:
    """Write ``result`` to ``results_dir/<name>.json``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result['name']}.json"
    path.write_text(json.dumps(result, indent=1, default=_json_default))
    log(f"wrote {path}")
    return path


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
