"""Evaluation and training summaries with the metrics of MLlib's LogisticRegressionSummary.

Metrics come from one weighted confusion matrix, aggregated by Spark (label, prediction) and
finished on the driver, with the definitions of ``org.apache.spark.mllib.evaluation
.MulticlassMetrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from svb_spark.core.training import TrainingResult


@dataclass
class FitRecord:
    """What a fit reports: the training result plus what the driver decided and measured."""

    result: TrainingResult
    num_workers: int
    exchange: str  # the mode in force ("auto" resolved)
    exchange_reason: str  # why: the param, or what auto weighed
    predicted_bytes_per_step: dict[str, float]
    predicted_seconds_per_step: dict[str, float]
    sync_interval: int
    solver: str  # the optimizer in force ("auto" resolved)
    timings: dict[str, float]  # driver phases; the loop's phases come from the result


class SVBLogisticRegressionSummary:
    """Metrics of a model on a DataFrame, like ``LogisticRegressionSummary``.

    Attributes mirror MLlib's: ``predictions``, ``labels``, ``accuracy``,
    ``weightedPrecision`` ... computed lazily with one Spark aggregation.
    """

    def __init__(
        self,
        predictions,
        predictionCol: str,
        labelCol: str,
        weightCol: str,
        probabilityCol: str,
        featuresCol: str,
    ) -> None:
        # A DataFrame, or a function making it: a training summary builds its predictions on
        # first use, so a fit does not ship a large model into a scoring plan nobody reads.
        self._predictions = predictions
        self.predictionCol = predictionCol
        self.labelCol = labelCol
        self.weightCol = weightCol
        self.probabilityCol = probabilityCol
        self.featuresCol = featuresCol

    @cached_property
    def predictions(self):
        """The scored DataFrame the metrics are computed on."""
        return self._predictions() if callable(self._predictions) else self._predictions

    @cached_property
    def _confusion(self) -> tuple[np.ndarray, np.ndarray]:
        """(class values, weighted confusion matrix [label, prediction])."""
        from pyspark.sql import functions as F

        weight = F.col(self.weightCol) if self.weightCol else F.lit(1.0)
        rows = (
            self.predictions.groupBy(
                F.col(self.labelCol).cast("double").alias("l"),
                F.col(self.predictionCol).cast("double").alias("p"),
            )
            .agg(F.sum(weight.cast("double")).alias("w"))
            .collect()
        )
        classes = np.array(sorted({r.l for r in rows} | {r.p for r in rows}), dtype=np.float64)
        index = {c: i for i, c in enumerate(classes)}
        matrix = np.zeros((len(classes), len(classes)))
        for r in rows:
            matrix[index[r.l], index[r.p]] += r.w
        return classes, matrix

    @cached_property
    def _per_label(self) -> dict[str, np.ndarray]:
        classes, matrix = self._confusion
        in_labels = matrix.sum(axis=1) > 0  # MLlib reports the labels that occur as labels
        tp = np.diag(matrix)
        label_count = matrix.sum(axis=1)
        predicted = matrix.sum(axis=0)
        total = matrix.sum()
        fp = predicted - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(label_count > 0, tp / label_count, 0.0)
            fpr = np.where(total - label_count > 0, fp / (total - label_count), 0.0)
        return {
            "labels": classes[in_labels],
            "tp": tp[in_labels],
            "count": label_count[in_labels],
            "precision": precision[in_labels],
            "recall": recall[in_labels],
            "fpr": fpr[in_labels],
            "total": np.array(total),
        }

    def _weighted(self, values: np.ndarray) -> float:
        stats = self._per_label
        return float((values * stats["count"]).sum() / stats["total"])

    @property
    def labels(self) -> list[float]:
        """The labels present in the label column, ascending."""
        return self._per_label["labels"].tolist()

    @property
    def accuracy(self) -> float:
        """Weighted fraction of correctly predicted rows."""
        stats = self._per_label
        return float(stats["tp"].sum() / stats["total"])

    @property
    def precisionByLabel(self) -> list[float]:
        return self._per_label["precision"].tolist()

    @property
    def recallByLabel(self) -> list[float]:
        return self._per_label["recall"].tolist()

    @property
    def truePositiveRateByLabel(self) -> list[float]:
        return self.recallByLabel

    @property
    def falsePositiveRateByLabel(self) -> list[float]:
        return self._per_label["fpr"].tolist()

    def fMeasureByLabel(self, beta: float = 1.0) -> list[float]:
        return self._f_measure(beta).tolist()

    def _f_measure(self, beta: float) -> np.ndarray:
        p, r = self._per_label["precision"], self._per_label["recall"]
        b2 = beta * beta
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p + r > 0, (1 + b2) * p * r / (b2 * p + r), 0.0)

    @property
    def weightedPrecision(self) -> float:
        return self._weighted(self._per_label["precision"])

    @property
    def weightedRecall(self) -> float:
        return self._weighted(self._per_label["recall"])

    @property
    def weightedTruePositiveRate(self) -> float:
        return self.weightedRecall

    @property
    def weightedFalsePositiveRate(self) -> float:
        return self._weighted(self._per_label["fpr"])

    def weightedFMeasure(self, beta: float = 1.0) -> float:
        return self._weighted(self._f_measure(beta))


class SVBLogisticRegressionTrainingSummary(SVBLogisticRegressionSummary):
    """The summary of a fit: training-set metrics plus the record of the optimization.

    Besides MLlib's ``objectiveHistory`` and ``totalIterations`` (epochs run), it reports:

    - ``steps`` (SGD steps), ``exchanges``, ``syncInterval``, ``numWorkers``, ``exchange``,
      the mode in force (what ``auto`` chose) with ``exchangeReason``, and ``solver``, the
      optimizer in force;
    - bytes as rank 0 saw them: ``bytesSent``/``bytesReceived`` (payload plus framing),
      ``payloadBytesSent``, ``framingBytesSent``, ``payloadBytesReceived``,
      ``framingBytesReceived``, ``bytesSentPerExchange`` and ``bytesPerStep``;
    - ``predictedBytesPerStep`` and ``predictedSecondsPerStep``: the cost model's payload bytes
      and seconds per step for each mode;
    - ``timings`` (seconds per phase) and ``workers`` (per rank: Spark's task address, the
      Flight location served, row count and process id, where the mode has them).
    """

    def __init__(self, predictions, record: FitRecord, **columns) -> None:
        super().__init__(predictions, **columns)
        result = record.result
        self.objectiveHistory: list[float] = result.objective_history
        self.totalIterations: int = len(self.objectiveHistory)
        self.converged: bool = result.converged
        #: Why training stopped: "validation", "tol" or "maxIter".
        self.stopReason: str = result.stop_reason
        #: Held-out loss after each epoch (with validationIndicatorCol), and the epoch (0-based)
        #: of the model returned, the best one.
        self.validationHistory: list[float] = result.validation_history
        self.bestEpoch: int | None = result.best_epoch
        self.steps: int = result.steps
        self.exchanges: int = result.exchanges
        self.syncInterval: int = record.sync_interval
        self.numWorkers: int = record.num_workers
        self.exchange: str = record.exchange
        #: Why that mode: "set by the exchange param", or the reason ``auto`` chose it.
        self.exchangeReason: str = record.exchange_reason
        self.solver: str = record.solver
        self.payloadBytesSent: int = result.payload_sent
        self.framingBytesSent: int = result.framing_sent
        self.payloadBytesReceived: int = result.payload_received
        self.framingBytesReceived: int = result.framing_received
        self.bytesSent: int = self.payloadBytesSent + self.framingBytesSent
        self.bytesReceived: int = self.payloadBytesReceived + self.framingBytesReceived
        self.bytesSentPerExchange: list[int] = result.sent_per_exchange
        self.bytesPerStep: float = self.bytesSent / max(self.steps, 1)
        self.predictedBytesPerStep: dict[str, float] = record.predicted_bytes_per_step
        #: The cost model's seconds per step of each mode, which ``auto`` compares.
        self.predictedSecondsPerStep: dict[str, float] = record.predicted_seconds_per_step
        self.timings: dict[str, float] = {**record.timings, **result.seconds}
        self.workers: list[dict] = result.workers
        #: Replica checksum comparisons made, and mismatches repaired from rank 0 (see
        #: verifyInterval).
        self.replicaChecks: int = result.replica_checks
        self.replicaResyncs: int = result.resyncs
        #: Replicas the broadcast mode rebuilt from its checkpoint and log (a lost worker).
        self.replicaRebuilds: int = result.rebuilds
        #: The step the final attempt resumed from (0 unless a retried stage found a
        #: checkpoint; the byte counters and ``workers`` are then those of that attempt).
        self.resumedFromStep: int = result.resumed_from_step
        #: Checkpoints the final attempt wrote (see checkpointDir).
        self.checkpointsWritten: int = result.checkpoints
