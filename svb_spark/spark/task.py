"""The barrier-stage fit: the function every task of ``mapInArrow(..., barrier=True)`` runs
(load its rows, one rendezvous, the training core over the Flight mesh, the result rows), and
the driver's one call that plans and collects that stage.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from svb_spark.control.board import HelloBoard, swap_hellos
from svb_spark.control.delivery import ModelInbox, inbox_wanted, send_arrays
from svb_spark.core import wire
from svb_spark.core.config import Plan, TrainingConfig, make_plan
from svb_spark.core.exchange import Exchange
from svb_spark.core.loop import TrainingResult, train
from svb_spark.core.partition import LocalPartition, prepare_partition
from svb_spark.core.solvers import solver_for, solver_type
from svb_spark.core.solvers.sharded import class_blocks
from svb_spark.core.state import ReplicaState
from svb_spark.spark.checkpoint import CheckpointStore
from svb_spark.spark.contract import (
    FEATURES,
    HELD_OUT,
    LABEL,
    RESULT_DDL,
    ROW_ID,
    WEIGHT,
    block_suffix,
    decode_result,
    encode_result,
    result_rows,
    stored_arrays,
)
from svb_spark.spark.data import table_to_arrays
from svb_spark.spark.session import arrow_batch_bytes, classic_conf, spark_conf
from svb_spark.transport.config import TransportConfig

logger = logging.getLogger(__name__)


def executor_host(address: str) -> str:
    """The host part of a task address ``host:port`` (IPv6 hosts come in brackets)."""
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def load_partition(batches: Iterator[pa.RecordBatch], config: TrainingConfig) -> LocalPartition:
    """A task's input batches as a standardized :class:`LocalPartition`, in row-id order."""
    batches = list(batches)
    order = held_out = None
    if batches:
        ids = np.concatenate([b.column(ROW_ID).to_numpy() for b in batches])
        # Shuffle output arrives in no fixed order; sorting by row id makes fits repeatable.
        # Rows that kept their input partition come in id order already.
        if (ids[1:] <= ids[:-1]).any():
            order = np.argsort(ids, kind="stable")
        if config.validation_tol is not None:
            held_out = np.concatenate(
                [b.column(HELD_OUT).to_numpy(zero_copy_only=False) for b in batches]
            )
            held_out = held_out if order is None else held_out[order]
    elif config.validation_tol is not None:
        held_out = np.zeros(0, dtype=bool)
    X, y, w = table_to_arrays(
        batches, FEATURES, LABEL, WEIGHT, config.num_features, config.dtype, config.sparse, order,
        num_labels=config.num_classes if config.loss.label_sets else 0,
    )  # fmt: skip
    del batches  # free the Arrow copy of the rows before standardizing
    return prepare_partition(
        X, y, w, config, held_out, with_curvature=solver_type(config).steps_by_curvature
    )


def _memory_report(data: LocalPartition) -> dict:
    """This process's peak resident memory and the size of its training rows, in bytes, and
    the threads of each BLAS it has loaded (where threadpoolctl can tell)."""
    import resource

    # Linux reports ru_maxrss in KiB.
    return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "peak_address_space": _peak_address_space(),
            "data_bytes": int(_stored_bytes(data.X) + _stored_bytes(data.y) + data.w.nbytes),
            "blas_threads": _blas_threads()}  # fmt: skip


def _stored_bytes(array) -> int:
    """The bytes of rows or labels: an array, or a CSR matrix's values and column indices."""
    return (
        array.nbytes if isinstance(array, np.ndarray) else array.data.nbytes + array.indices.nbytes
    )


def _peak_address_space() -> int | None:
    """This process's peak virtual memory in bytes (what ``spark.executor.pyspark.memory``
    caps), where /proc tells it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _blas_threads() -> list[int]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def limit_blas_threads(threads: int) -> None:
    """Cap every loaded BLAS (numpy's and scipy's own) at ``threads`` threads in this process.

    PySpark sets OMP_NUM_THREADS to the executor's cores (and a cluster may export
    OPENBLAS_NUM_THREADS), so several barrier tasks on one executor would each run that many
    BLAS threads and busy-wait on each other's cores (4 workers on 2 cores measured 6x slower
    per step). Uses threadpoolctl where it is installed (it comes with scikit-learn); without
    it, BLAS keeps the environment's setting.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    import scipy.linalg.blas  # noqa: F401  (load scipy's BLAS now, so that the cap reaches it)

    threadpool_limits(limits=threads, user_api="blas")


def limit_malloc_arenas() -> None:
    """Under ``spark.executor.pyspark.memory``, keep glibc to 2 malloc arenas in this process.

    Spark enforces that cap as an address-space limit (RLIMIT_AS), and glibc reserves 64 MB of
    address space for each thread's arena: the Flight server's threads alone took about 450
    MB of a worker's cap, memory a block of the model needs. Without the cap, or off glibc,
    nothing changes.
    """
    if int(os.environ.get("PYSPARK_EXECUTOR_MEMORY_MB", "-1")) <= 0:
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(_M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


_M_ARENA_MAX = -8  # glibc's malloc.h


# Test-only: when set in the executors' environment, each barrier task writes its rank, task
# id, process id and Flight location to a file in this directory, so that fault tests can kill
# or stop a given worker and check afterwards that its port is closed.
_RECORD_WORKERS_ENV = "SVB_SPARK_RECORD_WORKERS_TO"


def _record_worker_for_tests(rank: int, task_id: int, location: str) -> None:
    directory = os.environ.get(_RECORD_WORKERS_ENV)
    if not directory:
        return
    record = {"rank": rank, "task": task_id, "pid": os.getpid(), "location": location}
    path = os.path.join(directory, f"rank{rank}-task{task_id}.json")
    with open(path + ".tmp", "w") as out:
        json.dump(record, out)
    os.replace(path + ".tmp", path)  # the test never reads half a file


class PhaseClock:
    """Seconds per phase of a barrier task, lap by lap, and the wall-clock time it started
    (``time.time()``, comparable with the driver's on one machine or NTP-synced hosts)."""

    def __init__(self) -> None:
        self.started_at = time.time()
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        """Charge the time since the previous lap to ``phase``."""
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now

    def timed(self, phase: str, items: Iterator) -> Iterator:
        """``items``, charging to ``phase`` only the time spent making them (not the time the
        consumer holds each one)."""
        self.phases.setdefault(phase, 0.0)
        iterator = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                self.phases[phase] += time.perf_counter() - start
                break
            self.phases[phase] += time.perf_counter() - start
            yield item
        self._last = time.perf_counter()


def initial_weights(initial) -> tuple[np.ndarray, np.ndarray] | None:
    """The (W, b) a fit starts from: None, a tuple, or a Spark Broadcast of a tuple."""
    if initial is None or isinstance(initial, tuple):
        return initial
    return initial.value  # a Broadcast: fetched once per Python worker, peer to peer


@dataclass
class Rendezvous:
    """What every worker knows after the rendezvous: its own rows, each rank's hello (with the
    facts of its rows), the common plan, and the checkpoint to resume from (None for a fresh
    start)."""

    data: LocalPartition
    peers: list[dict]
    plan: Plan
    resume: ReplicaState | None


# The exchange index of the rendezvous's facts over the mesh; replica checks use -2 and below.
_FACTS_ROUND = -1


def rendezvous(
    all_gather: Callable[[str], list[str]],
    exchange: Exchange,
    load: Callable[[], LocalPartition],
    config: TrainingConfig,
    on_loaded: Callable[[], None] | None = None,
) -> Rendezvous:
    """Load this worker's rows while swapping hellos with every peer, connect the mesh, and
    agree on the plan.

    ``all_gather(message)`` returns every rank's message in rank order (the driver's hello
    board, milliseconds, or ``BarrierTaskContext.allGather``, about a second). It runs in a
    background thread while ``load()`` decodes the rows, so the hello carries only what is
    known before: the worker's Flight location, pid and the checkpoint steps it sees, from
    which every worker picks the same one to resume from (a retried stage). The facts of the
    loaded rows (count, weight, curvature) then go over the connected mesh, in milliseconds.
    """
    kind = solver_type(config)
    store = None if config.checkpoint_dir is None else CheckpointStore(config.checkpoint_dir)
    hello = {
        "location": exchange.location,
        "pid": os.getpid(),
        "checkpoints": [] if store is None else kind.steps_seen(store, exchange.rank),
    }
    gathered: dict = {}

    def swap_hellos() -> None:
        try:
            gathered["hellos"] = all_gather(json.dumps(hello))
        except BaseException as error:  # raised in the task's own thread below
            gathered["error"] = error

    # A daemon thread: a task whose rows fail to load must not wait for its peers' hellos.
    swapper = threading.Thread(target=swap_hellos, name="svb-rendezvous", daemon=True)
    swapper.start()
    data = load()
    if on_loaded is not None:
        on_loaded()
    swapper.join()
    if "error" in gathered:
        raise gathered["error"]
    peers = [json.loads(message) for message in gathered["hellos"]]
    exchange.connect([p["location"] for p in peers])
    mine = {"rows": data.rows, "weight": data.weight, "curvature": data.curvature}
    facts = exchange.all_gather(_FACTS_ROUND, wire.encode_checksum(json.dumps(mine)))
    exchange.reset_counts()  # the rendezvous's bytes are not the training's
    for peer, message in zip(peers, facts):
        peer.update(json.loads(wire.decode_checksum(message)))
    plan = make_plan(
        [p["rows"] for p in peers], [p["curvature"] for p in peers], config,
        [p["weight"] for p in peers],
    )  # fmt: skip
    step = kind.common_step([p["checkpoints"] for p in peers])
    resume = None
    if step is not None:
        resume = kind.load(store, data, exchange.rank, step)
        logger.info("resuming from the checkpoint at step %d", step)
    return Rendezvous(data, peers, plan, resume)


def _epoch_logger(config: TrainingConfig, exchange, epoch_rows: int, reporter):
    """``on_epoch`` for rank 0: a log line and a progress message per epoch (L-BFGS: per
    iteration; the message's ``unit`` says which)."""
    clock = [time.perf_counter()]
    unit = solver_type(config).unit

    def log_epoch(epoch: int, objective: float) -> None:
        now = time.perf_counter()
        elapsed, clock[0] = now - clock[0], now
        message = {
            "epoch": epoch + 1,
            "epochs": config.max_iter,
            "objective": objective,
            "rows_per_second": epoch_rows / max(elapsed, 1e-9),
            "bytes_sent": exchange.payload_sent + exchange.framing_sent,
            "bytes_received": exchange.payload_received + exchange.framing_received,
            "unit": unit,
        }
        logger.info(
            "%s %d/%d objective %.6f %.0f rows/s %d bytes sent",
            unit[:-1], message["epoch"], config.max_iter, objective,
            message["rows_per_second"], message["bytes_sent"],
        )  # fmt: skip
        if reporter is not None:
            reporter.send(message)

    return log_epoch


def barrier_training_task(
    config: TrainingConfig,
    transport: TransportConfig,
    secret: str,
    initial=None,
    progress: tuple[str, int] | None = None,
    inbox: tuple[str, int] | None = None,
    board: tuple[str, int] | None = None,
):
    """The function ``mapInArrow(..., barrier=True)`` runs in every task (the mesh modes).

    It captures only ``config``, ``transport``, ``secret``, the warm start ``initial`` (None,
    a (W, b) tuple or a Broadcast of one) and the driver's progress listener address (None on
    Spark Connect).
    Each task loads its partition, starts a Flight server on its executor's own host, meets its
    peers at the :func:`rendezvous`, then trains over the mesh. Rank 0 logs every epoch,
    reports it to the driver and yields the result (in the class-sharded mode every rank
    yields its block of classes); every rank yields its memory report. With the driver's
    ``inbox`` address, the weights go there and the rows carry only the record. With the
    driver's hello ``board``, the tasks swap hellos there (milliseconds) rather than with
    ``allGather`` (about a second); see :mod:`svb_spark.control.board`.
    """

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import BarrierTaskContext

        from svb_spark.control.progress import ProgressReporter
        from svb_spark.transport.flight import FlightMeshExchange

        clock = PhaseClock()
        # Without a common replica (the class-sharded mode) every rank holds a block of the model.
        blocks = not solver_type(config).replicated
        context = BarrierTaskContext.get()
        rank = context.partitionId()
        limit_blas_threads(context.cpus())
        limit_malloc_arenas()
        # Spark's address for each barrier task: its executor's host as the driver reaches it.
        addresses = [info.address for info in context.getTaskInfos()]
        clock.lap("setup")
        exchange = FlightMeshExchange(
            rank, len(addresses), executor_host(addresses[rank]), secret,
            transport.timeout, transport.max_message_bytes, tls=transport.tls,
        )  # fmt: skip
        clock.lap("flight_start")
        reporter = None
        try:
            _record_worker_for_tests(rank, context.taskAttemptId(), exchange.location)
            via = ["allGather"]  # how the hellos went: through the driver's board, or not

            def all_gather(hello: str) -> list[str]:
                if board is not None:
                    hellos = swap_hellos(
                        board, secret, rank, len(addresses), hello, transport.timeout
                    )
                    if hellos is not None:
                        via[0] = "driver"
                        return hellos
                return context.allGather(hello)

            met = rendezvous(
                all_gather, exchange, lambda: load_partition(batches, config), config,
                on_loaded=lambda: clock.lap("load"),
            )  # fmt: skip
            data = met.data
            clock.lap("rendezvous")  # what the hellos took beyond the load, and the facts
            on_epoch = None
            if rank == 0:
                if progress is not None:
                    reporter = ProgressReporter(progress, secret)
                epoch_rows = sum(p["rows"] for p in met.peers)
                on_epoch = _epoch_logger(config, exchange, epoch_rows, reporter)
            solver = solver_for(config, met.plan, rank, initial_weights(initial))
            if met.resume is not None:
                solver.restore(met.resume)
            store = None
            if config.checkpoint_dir is not None:
                store = CheckpointStore(config.checkpoint_dir)
            result = train(data, exchange, solver, on_epoch=on_epoch, store=store)
            clock.lap("loop")
            result.workers = [
                {"rank": r, "address": address, **{k: p[k] for k in ("location", "rows", "pid")}}
                for r, (address, p) in enumerate(zip(addresses, met.peers))
            ]
        finally:
            exchange.close()
            if reporter is not None:
                reporter.close()
        clock.lap("close")
        if rank == 0 or blocks:  # the model: rank 0's replica, or every rank's block
            block = rank if blocks else None
            delivered = None
            if inbox is not None:
                token = secrets.token_hex(8)  # this attempt's delivery
                stored, layout = stored_arrays(result, "" if block is None else block_suffix(block))
                transposed = tuple(name for name, (*_, flipped) in layout.items() if flipped)
                first_rows = {}  # a block is built in place, in its rows of the driver's model
                if block is not None:
                    first, _ = class_blocks(config.num_classes, met.plan.num_workers)[block]
                    first_rows[f"W{block_suffix(block)}"] = first
                # The stage attempt's identity, the same for its every task: rank 0's address.
                attempt = met.peers[0]["location"]
                if send_arrays(inbox, secret, token, stored, transport.timeout, transposed,
                               first_rows, attempt):  # fmt: skip
                    delivered = token
                clock.lap("send_model")
            yield from clock.timed("encode", encode_result(result, delivered, block))
        report = {**_memory_report(data), "started_at": clock.started_at, "phases": clock.phases,
                  "hellos_via": via[0]}  # fmt: skip
        yield from result_rows(f"worker{rank}", json.dumps(report).encode())

    return task


def fit_by_barrier_stage(
    training,
    config: TrainingConfig,
    transport: TransportConfig,
    secret: str,
    initial=None,
    progress=None,
    build=None,
) -> TrainingResult:
    """Train over ``training`` (one partition per worker) in one barrier stage (the modes
    whose :attr:`~svb_spark.core.modes.ExchangeMode.runner` is "barrier").
    A delivered model is built into ``build`` (a :class:`~svb_spark.control.delivery.ModelBuild`) as
    it arrives.

    The shuffle after the barrier stage makes it a map stage, which Spark retries as a whole
    when a task fails (a failed barrier result stage is never retried); the retry resumes
    from the newest checkpoint.
    """
    inbox = board = None
    if inbox_wanted(classic_conf(training.sparkSession), transport.tls):
        host = spark_conf(training.sparkSession, "spark.driver.host") or "127.0.0.1"
        try:
            inbox = ModelInbox(host, secret, transport.timeout, build)
            board = HelloBoard(host, secret, transport.timeout)
        except OSError as error:
            logger.warning(
                "the model comes back as result rows and the tasks meet by allGather: cannot "
                "listen on %s (%s)", host, error,
            )  # fmt: skip
    task = barrier_training_task(
        config, transport, secret, initial, progress, None if inbox is None else inbox.address,
        None if board is None else board.address,
    )  # fmt: skip
    stage = training.mapInArrow(task, RESULT_DDL, barrier=True)
    submitted = time.time()
    started = time.perf_counter()
    try:
        # Rows, not toArrow(): its collect turns a Ctrl-C into a Py4J error. In classic mode
        # the rows are only the record; the weights came through the inbox.
        with arrow_batch_bytes(training.sparkSession):
            rows = [(r.part, r.seq, r.data) for r in stage.repartition(1).collect()]
        collected = time.perf_counter()
        result = decode_result(rows, inbox)
    finally:
        for server in (inbox, board):
            if server is not None:
                server.close()
    del rows  # W and b are views of the one buffer they were copied into
    # The driver's side of the stage; "decode" and the other loop phases are the task's.
    result.seconds["result_decode"] = time.perf_counter() - collected
    result.seconds["stage"] = collected - started
    starts = [w["started_at"] for w in result.workers if "started_at" in w]
    if starts:  # from the job's submission to the last task's first line
        result.seconds["task_start"] = max(starts) - submitted
    return result
