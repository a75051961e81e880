"""Evaluation and training summaries with the metrics of MLlib's LogisticRegressionSummary.

Multiclass metrics come from the weighted counts of (label, prediction) pairs, aggregated by
Spark and finished on the driver into per-class sums (never a K x K matrix), with the
definitions of
``org.apache.spark.mllib.evaluation.MulticlassMetrics``. The binary summary's curves come from
the weighted label counts of each distinct score, aggregated by Spark and finished on the driver
with the definitions of ``org.apache.spark.mllib.evaluation.BinaryClassificationMetrics``; only
DataFrame operations are used, so both work on Spark Connect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from svb_spark.core.loop import TrainingResult


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
        metric_predictions=None,
    ) -> None:
        # A DataFrame, or a function making it: a training summary builds its predictions on
        # first use, so a fit does not ship a large model into a scoring plan nobody reads.
        self._predictions = predictions
        # The same rows scored with the prediction column alone (or None: the predictions),
        # which the metrics aggregate: a plan over the predictions would compute their
        # K-wide columns too, as mapInArrow's outputs are made whole.
        self._metric_predictions = metric_predictions
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
    def _metric_frame(self):
        """What the metrics aggregate: the rows' labels, weights and predictions."""
        frame = self._metric_predictions
        if frame is None:
            return self.predictions
        return frame() if callable(frame) else frame

    @cached_property
    def _per_label(self) -> dict[str, np.ndarray]:
        """Per class: the weight of its rows, of the rows predicted as it and of those
        predicted right, from one Spark aggregation of (label, prediction) pairs. Never a
        K x K confusion matrix: at 10^4 classes that alone would be 800 MB on the driver."""
        from pyspark.sql import functions as F

        weight = F.col(self.weightCol) if self.weightCol else F.lit(1.0)
        rows = (
            self._metric_frame.groupBy(
                F.col(self.labelCol).cast("double").alias("l"),
                F.col(self.predictionCol).cast("double").alias("p"),
            )
            .agg(F.sum(weight.cast("double")).alias("w"))
            .collect()
        )
        label = np.array([r.l for r in rows], dtype=np.float64)
        predicted_as = np.array([r.p for r in rows], dtype=np.float64)
        weights = np.array([r.w for r in rows], dtype=np.float64)
        classes = np.unique(np.concatenate([label, predicted_as]))
        row, column = np.searchsorted(classes, label), np.searchsorted(classes, predicted_as)
        label_count, predicted, tp = (np.zeros(len(classes)) for _ in range(3))
        np.add.at(label_count, row, weights)
        np.add.at(predicted, column, weights)
        right = row == column
        np.add.at(tp, row[right], weights[right])
        total = float(weights.sum())
        in_labels = label_count > 0  # MLlib reports the labels that occur as labels
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
      ``framingBytesReceived``, ``bytesSentPerExchange`` (its payload alone:
      ``payloadBytesPerExchange``) and ``bytesPerStep``;
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
        #: Why training stopped: "validation" (validationIndicatorCol), "holdout" (the rows
        #: validationFraction held out), "tol" or "maxIter".
        self.stopReason: str = result.stop_reason
        #: Held-out loss and accuracy after each epoch (validation or holdout rows), and the
        #: epoch (0-based) of the best model: by loss with a validation column (the model
        #: returned), by accuracy on the holdout rows (the model the last pass over them
        #: started from).
        self.validationHistory: list[float] = result.validation_history
        self.validationAccuracy: list[float] = result.validation_accuracy
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
        self.payloadBytesPerExchange: list[int] = result.payload_per_exchange
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


# The bins of MLlib's binary summary on Spark 4 (its BinaryClassificationMetrics' numBins):
# there 2,500 distinct scores give a ROC curve of 1,252 points and 450 give 452 (unbinned).
BINARY_SUMMARY_BINS = 1000


def binary_confusions(
    scores: np.ndarray, positives: np.ndarray, negatives: np.ndarray, num_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thresholds and the cumulative weights of true and false positives at each, descending,
    as ``BinaryClassificationMetrics`` computes them.

    Parameters
    ----------
    scores : numpy.ndarray
        Distinct scores (the probability of class 1), in any order.
    positives, negatives : numpy.ndarray
        Weight of the rows with each score whose label is above 0.5 (positives), or not.
    num_bins : int
        With more than ``2 * num_bins`` distinct scores, runs of ``len(scores) // num_bins``
        consecutive scores (in descending order) merge into one point named by their highest
        score. MLlib forms these runs within each partition of its sorted scores; here they run
        over all of them, which is what MLlib does on one partition.

    Returns
    -------
    tuple of numpy.ndarray
        (thresholds, true positive weights, false positive weights), one entry per point.

    Examples
    --------
    >>> import numpy as np
    >>> t, tp, fp = binary_confusions(np.array([0.2, 0.9, 0.6]), np.array([0.0, 1.0, 1.0]),
    ...                               np.array([1.0, 0.0, 1.0]), num_bins=1000)
    >>> t.tolist(), tp.tolist(), fp.tolist()
    ([0.9, 0.6, 0.2], [1.0, 2.0, 2.0], [0.0, 1.0, 2.0])
    """
    order = np.argsort(-scores, kind="stable")
    scores, positives, negatives = scores[order], positives[order], negatives[order]
    grouping = len(scores) // num_bins if num_bins > 0 else 0
    if grouping >= 2:
        starts = np.arange(0, len(scores), grouping)
        scores = scores[starts]
        positives = np.add.reduceat(positives, starts)
        negatives = np.add.reduceat(negatives, starts)
    return scores, np.cumsum(positives), np.cumsum(negatives)


def _area_under(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoidal area under the curve through the points (x, y), in their order (MLlib's
    ``AreaUnderCurve``)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _score_rows(probability: str, label: str, weight: str):
    """A mapInArrow function: each row's probability of class 1 and its weight as a positive
    or a negative (MLlib counts a label above 0.5 as positive)."""

    def rows(batches):
        import pyarrow as pa

        from svb_spark.spark.data import numeric_column, vectors_to_dense

        for batch in batches:
            score = vectors_to_dense(batch.column(probability), 2)[:, 1]
            labels = numeric_column(batch.column(label))
            weights = numeric_column(batch.column(weight)) if weight else np.ones(len(labels))
            positive = labels > 0.5
            yield pa.RecordBatch.from_arrays(
                [
                    pa.array(score),
                    pa.array(np.where(positive, weights, 0.0)),
                    pa.array(np.where(positive, 0.0, weights)),
                ],
                names=["score", "positive", "negative"],
            )

    return rows


class SVBBinaryLogisticRegressionSummary(SVBLogisticRegressionSummary):
    """Metrics of a binary model on a DataFrame, like MLlib's
    ``BinaryLogisticRegressionSummary``: the multiclass metrics plus ``roc``, ``pr``,
    ``areaUnderROC``, ``fMeasureByThreshold``, ``precisionByThreshold`` and
    ``recallByThreshold``.

    The curves are those of ``BinaryClassificationMetrics`` with MLlib's bins (see
    :func:`binary_confusions` and :data:`BINARY_SUMMARY_BINS`) on the probability of class 1.
    Spark aggregates the label weights of each distinct score, and the driver receives one
    (score, positives, negatives) triple per distinct score, so one Spark job computes them all.
    """

    num_bins: int = BINARY_SUMMARY_BINS

    @property
    def scoreCol(self) -> str:
        """The column of ``predictions`` whose second entry is the score: the probability."""
        return self.probabilityCol

    @cached_property
    def _confusions(self) -> dict[str, np.ndarray]:
        from pyspark.sql import functions as F
        from pyspark.sql.types import DoubleType, StructField, StructType

        columns = [self.probabilityCol, self.labelCol]
        weight = self.weightCol if self.weightCol in self.predictions.columns else ""
        columns += [weight] if weight else []
        schema = StructType(
            [StructField(name, DoubleType()) for name in ("score", "positive", "negative")]
        )
        counts = (
            self.predictions.select(*columns)
            .mapInArrow(_score_rows(self.probabilityCol, self.labelCol, weight), schema)
            .groupBy("score")
            .agg(F.sum("positive").alias("positive"), F.sum("negative").alias("negative"))
        )
        table = _collect_arrow(counts)
        thresholds, tp, fp = binary_confusions(
            *(table.column(name).to_numpy() for name in ("score", "positive", "negative")),
            self.num_bins,
        )
        positives = tp[-1] if len(tp) else 0.0
        negatives = fp[-1] if len(fp) else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = tp / positives if positives > 0 else np.zeros_like(tp)
            fpr = fp / negatives if negatives > 0 else np.zeros_like(fp)
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        return {"threshold": thresholds, "recall": recall, "fpr": fpr, "precision": precision}

    def _frame(self, **columns: np.ndarray):
        import pyarrow as pa

        from svb_spark.spark.session import dataframe_from_arrow

        table = pa.table({name: pa.array(values, pa.float64()) for name, values in columns.items()})
        return dataframe_from_arrow(self.predictions.sparkSession, table)

    def _roc_points(self) -> tuple[np.ndarray, np.ndarray]:
        c = self._confusions
        return np.concatenate([[0.0], c["fpr"], [1.0]]), np.concatenate([[0.0], c["recall"], [1.0]])

    @cached_property
    def roc(self):
        """The ROC curve: a DataFrame of (FPR, TPR) with (0, 0) prepended and (1, 1) appended."""
        fpr, tpr = self._roc_points()
        return self._frame(FPR=fpr, TPR=tpr)

    @cached_property
    def areaUnderROC(self) -> float:
        """Area under the ROC curve (trapezoidal, through the points of ``roc``)."""
        return _area_under(*self._roc_points())

    @cached_property
    def pr(self):
        """The precision-recall curve: a DataFrame of (recall, precision), starting at recall 0
        with the precision of the highest threshold."""
        c = self._confusions
        first = c["precision"][:1] if len(c["precision"]) else np.array([1.0])
        return self._frame(
            recall=np.concatenate([[0.0], c["recall"]]),
            precision=np.concatenate([first, c["precision"]]),
        )

    def _f_measure_curve(self, beta: float) -> np.ndarray:
        c = self._confusions
        p, r, b2 = c["precision"], c["recall"], beta * beta
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p + r == 0, 0.0, (1 + b2) * p * r / (b2 * p + r))

    @cached_property
    def fMeasureByThreshold(self):
        """A DataFrame of (threshold, F-Measure) with beta = 1, one row per threshold."""
        return self._frame(
            **{"threshold": self._confusions["threshold"], "F-Measure": self._f_measure_curve(1.0)}
        )

    @cached_property
    def precisionByThreshold(self):
        """A DataFrame of (threshold, precision): every distinct probability of class 1 (or
        bin) is a threshold."""
        c = self._confusions
        return self._frame(threshold=c["threshold"], precision=c["precision"])

    @cached_property
    def recallByThreshold(self):
        """A DataFrame of (threshold, recall): every distinct probability of class 1 (or bin)
        is a threshold."""
        c = self._confusions
        return self._frame(threshold=c["threshold"], recall=c["recall"])


class SVBBinaryLogisticRegressionTrainingSummary(
    SVBBinaryLogisticRegressionSummary, SVBLogisticRegressionTrainingSummary
):
    """The summary of a fit on two classes: the training record of
    :class:`SVBLogisticRegressionTrainingSummary` and the curves of
    :class:`SVBBinaryLogisticRegressionSummary`, like MLlib's
    ``BinaryLogisticRegressionTrainingSummary``."""


def _collect_arrow(frame):
    """``frame`` on the driver as a pyarrow Table (``toArrow`` came in Spark 4.0)."""
    import pyarrow as pa

    if hasattr(frame, "toArrow"):
        return frame.toArrow()
    return pa.Table.from_pandas(frame.toPandas(), preserve_index=False)
