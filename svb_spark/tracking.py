"""MLflow tracking of a fit: the driver logs the training curve and the outcome to the active run.

When an MLflow run is active on the thread that calls ``fit`` (one the user started, or the one
``mlflow.pyspark.ml.autolog()`` starts around the fit), the driver logs to it:

- per epoch (per iteration for L-BFGS), with ``step`` = the 0-based index into the summary's
  histories: ``objective``, ``validationLoss`` and ``validationAccuracy`` (with held-out rows) and
  ``rowsPerSecond`` (from the live progress messages, so only where the driver has a progress
  listener: classic mode, every exchange but ``broadcast``);
- at the end: the metrics ``totalIterations`` and ``bytesPerStep``, and the tags
  ``svb.stopReason``, ``svb.exchange`` and ``svb.solver`` (the mode and optimizer in force,
  ``auto`` resolved; tags rather than params, since autologging logs the params ``exchange`` and
  ``solver`` as set, and MLflow refuses to change a logged param).

Epochs that the live messages did not deliver (Spark Connect and the broadcast mode have no
listener; a retried stage repeats epochs) are taken from the training summary after the fit,
so each history holds exactly one value per epoch.

mlflow is imported by the user, never by this module: if ``mlflow`` is not in ``sys.modules``, no
run can be active and nothing is done. The Spark conf ``spark.svb.mlflow.enabled=false`` turns
the logging off. Logging never fails or slows the fit: the calls to the tracking store run in a
thread of their own, the driver waits for them at most ``FINISH_TIMEOUT`` seconds at the end,
and the first error is reported as one warning of the ``svb_spark`` logger.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Iterable

logger = logging.getLogger("svb_spark")

#: Spark conf key (or session conf, ``spark.conf.set``) that turns the logging off when "false".
ENABLED_CONF = "spark.svb.mlflow.enabled"
#: Seconds the end of a fit waits for the tracking store; a slower store gets the rest later.
FINISH_TIMEOUT = 10.0
# MLflow's log_batch takes at most 1000 metrics and 100 tags per call.
_BATCH = 1000
# The logging thread stops after this many idle seconds and restarts on the next message, so a
# fit that fails leaves no thread behind.
_IDLE = 5.0


def fit_tracker(spark) -> FitTracker | None:
    """The tracker of the fit about to run, or None when nothing is to be logged.

    Cheap when MLflow is unused: it looks ``mlflow`` up in ``sys.modules`` and imports nothing.

    Examples
    --------
    >>> fit_tracker(spark) is None  # no MLflow run is active
    True
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return None  # mlflow not imported: no run can be active
    try:
        run = mlflow.active_run()
        if run is None or not _enabled(spark):
            return None
        from mlflow.tracking import MlflowClient

        # The run is active on this thread only, and the progress listener calls back from
        # its own: keep the run id and the tracking URI, not the fluent API's thread state.
        client = MlflowClient(tracking_uri=mlflow.get_tracking_uri())
        return FitTracker(client, run.info.run_id)
    except Exception as error:
        _warn(error)
        return None


def _enabled(spark) -> bool:
    from svb_spark.spark.session import spark_or_session_conf

    value = spark_or_session_conf(spark, ENABLED_CONF)
    return value is None or value.strip().lower() != "false"


def _warn(error: BaseException) -> None:
    logger.warning(
        "MLflow logging of this fit stopped: %s: %s (the fit goes on; set %s=false to skip it)",
        type(error).__name__,
        error,
        ENABLED_CONF,
    )


class FitTracker:
    """Logs one fit's curve and outcome to one MLflow run, from a background thread.

    Parameters
    ----------
    client : mlflow.tracking.MlflowClient
        A client of the run's tracking store.
    run_id : str
        The run to log to.
    """

    def __init__(self, client, run_id: str) -> None:
        self._client = client
        self.run_id = run_id
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._logged: dict[str, set[int]] = {}  # steps already queued, per metric
        self._finished = False
        self._failed = False

    def on_progress(self, message: dict) -> None:
        """Queue the metrics of one progress message (rank 0's epoch ``message["epoch"]``,
        1-based). Called in the progress listener's thread; never blocks on the store."""
        try:
            step = int(message["epoch"]) - 1
            values = {
                "objective": message.get("objective"),
                "validationLoss": message.get("validation_loss"),
                "rowsPerSecond": message.get("rows_per_second"),
            }
            with self._lock:
                if self._finished:
                    return
                metrics = self._new_metrics(step, values)
            self._put(metrics, [])
        except Exception as error:
            self._fail(error)

    def finish(self, summary, timeout: float = FINISH_TIMEOUT) -> None:
        """Log what the live messages missed and the fit's outcome, from ``summary`` (the
        training summary), and wait at most ``timeout`` seconds for the store."""
        try:
            with self._lock:
                self._finished = True
                metrics = []
                histories = (
                    ("objective", summary.objectiveHistory),
                    ("validationLoss", summary.validationHistory),
                    ("validationAccuracy", summary.validationAccuracy),
                )
                for key, history in histories:
                    for step, value in enumerate(history or []):
                        metrics += self._new_metrics(step, {key: value})
                metrics += self._new_metrics(
                    0,
                    {
                        "totalIterations": summary.totalIterations,
                        "bytesPerStep": summary.bytesPerStep,
                    },
                )
            tags = {
                "svb.stopReason": summary.stopReason,
                "svb.exchange": summary.exchange,
                "svb.solver": summary.solver,
            }
            done = threading.Event()
            self._put(metrics, [(key, str(value)) for key, value in tags.items()], done)
            if not done.wait(timeout):
                logger.warning(
                    "MLflow: the tracking store has not taken this fit's metrics within %.0f s; "
                    "they are logged in the background",
                    timeout,
                )
        except Exception as error:
            self._fail(error)

    def _new_metrics(self, step: int, values: dict) -> list[tuple[str, float, int]]:
        """(key, value, step) of the values not None whose step is not yet logged."""
        fresh = []
        for key, value in values.items():
            if value is None:
                continue
            steps = self._logged.setdefault(key, set())
            if step not in steps:
                steps.add(step)
                fresh.append((key, float(value), step))
        return fresh

    def _put(self, metrics: list, tags: list, done: threading.Event | None = None) -> None:
        with self._lock:
            self._queue.put((metrics, tags, done))
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name="svb-mlflow", daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                items = [self._queue.get(timeout=_IDLE)]
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            while not self._queue.empty():  # a slow store gets one batch, not a call per epoch
                items.append(self._queue.get_nowait())
            metrics = [metric for item in items for metric in item[0]]
            tags = [tag for item in items for tag in item[1]]
            if not self._failed:
                try:
                    self._log(metrics, tags)
                except Exception as error:
                    self._fail(error)
            for _, _, done in items:
                if done is not None:
                    done.set()

    def _log(self, metrics: list[tuple[str, float, int]], tags: list[tuple[str, str]]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        entities = [Metric(key, value, now, step) for key, value, step in metrics]
        for chunk in _chunks(entities, _BATCH):
            self._client.log_batch(self.run_id, metrics=chunk)
        if tags:
            self._client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in tags])

    def _fail(self, error: BaseException) -> None:
        if not self._failed:
            self._failed = True
            _warn(error)


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
