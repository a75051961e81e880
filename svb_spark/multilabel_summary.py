"""The summaries of a multi-label model: the metrics of pyspark's
``MultilabelClassificationEvaluator`` (MLlib's ``MultilabelMetrics``) on a DataFrame whose label
and prediction columns hold label sets, from one Spark job that aggregates per-label counts."""

from __future__ import annotations

import pickle
from functools import cached_property

import numpy as np

from svb_spark.core.multilabel import label_positions, label_sets_of_parts
from svb_spark.summary import SVBLogisticRegressionSummary, SVBLogisticRegressionTrainingSummary

# The ranked labels the metrics frame holds, best first, for precisionAtK.
RANKED_COLUMN, RANKED_LABELS = "_svb_ranked", 5


class SVBMultilabelSummary(SVBLogisticRegressionSummary):
    """Metrics of a multi-label model on a DataFrame whose label and prediction columns hold
    label sets, with the definitions of ``org.apache.spark.mllib.evaluation.MultilabelMetrics``
    (the metrics of pyspark's ``MultilabelClassificationEvaluator``), unweighted as MLlib's:
    ``subsetAccuracy``, ``accuracy``, ``hammingLoss``, ``precision``, ``recall`` and
    ``f1Measure`` (means over rows), ``microPrecision``, ``microRecall``, ``microF1Measure``,
    ``precisionByLabel``, ``recallByLabel``, ``f1MeasureByLabel`` and ``macroF1Measure``
    (their mean over the labels that occur), and ``precisionAtK(k)`` (``RankingEvaluator``'s,
    for k up to 5: the mean over rows of the labels among the k most probable, over k). A row
    whose label and predicted sets are both empty counts as right. One Spark job aggregates
    per-label counts, never a rows x K array.
    """

    @cached_property
    def _counts(self) -> dict:
        from pyspark.sql import functions as F

        ranked = self._metric_frame.columns.count(RANKED_COLUMN)  # (scored with the ranking)
        frame = self._metric_frame.select(
            F.col(self.labelCol).cast("array<double>").alias("label"),
            F.col(self.predictionCol).cast("array<double>").alias("prediction"),
            *[F.col(RANKED_COLUMN).alias("ranked")] * ranked,
        )
        stats = frame.mapInArrow(_label_set_counts, "stats binary").collect()
        parts = [pickle.loads(row.stats) for row in stats]
        size = max(len(p["tp"]) for p in parts)
        total = {key: sum(p[key] for p in parts) for key in (*_ROW_SUMS, "hits")}
        for key in ("tp", "labeled", "predicted"):
            total[key] = sum(np.pad(p[key], (0, size - len(p[key]))) for p in parts)
        return total

    def _mean(self, key: str) -> float:
        return float(self._counts[key] / max(self._counts["rows"], 1))

    def precisionAtK(self, k: int = 5) -> float:
        """The mean over rows of how many of a row's ``k`` most probable labels it carries,
        over ``k`` (``RankingEvaluator``'s precisionAtK), for ``k`` from 1 to 5."""
        if not 1 <= k <= RANKED_LABELS or np.ndim(self._counts["hits"]) == 0:
            raise ValueError(
                f"precisionAtK takes k from 1 to {RANKED_LABELS} (got {k}), on a summary of a "
                "multi-label model's rows; for other k, score with topKCol and use "
                "pyspark's RankingEvaluator."
            )
        return float(self._counts["hits"][:k].sum() / (k * max(self._counts["rows"], 1)))

    @property
    def labels(self) -> list[float]:
        """The labels that occur in the label column, ascending."""
        return np.flatnonzero(self._counts["labeled"]).astype(float).tolist()

    @property
    def subsetAccuracy(self) -> float:
        """Fraction of rows whose predicted set is their label set."""
        return self._mean("exact")

    @property
    def accuracy(self) -> float:
        """Mean over rows of |labels and predicted| / |labels or predicted|."""
        return self._mean("jaccard")

    @property
    def hammingLoss(self) -> float:
        """Labels wrongly predicted or missed, over rows x the labels that occur."""
        counts = self._counts
        return float(counts["symmetric"] / max(counts["rows"] * len(self.labels), 1))

    @property
    def precision(self) -> float:
        return self._mean("precision")

    @property
    def recall(self) -> float:
        return self._mean("recall")

    @property
    def f1Measure(self) -> float:
        return self._mean("f1")

    @property
    def microPrecision(self) -> float:
        counts = self._counts
        return float(counts["tp"].sum() / max(counts["predicted"].sum(), 1))

    @property
    def microRecall(self) -> float:
        counts = self._counts
        return float(counts["tp"].sum() / max(counts["labeled"].sum(), 1))

    @property
    def microF1Measure(self) -> float:
        counts = self._counts
        both = counts["predicted"].sum() + counts["labeled"].sum()
        return float(2 * counts["tp"].sum() / max(both, 1))

    def _by_label(self, denominator: np.ndarray) -> np.ndarray:
        present = self._counts["labeled"] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(denominator > 0, self._counts["tp"] / denominator, 0.0)
        return ratio[present]

    @property
    def precisionByLabel(self) -> list[float]:
        return self._by_label(self._counts["predicted"]).tolist()

    @property
    def recallByLabel(self) -> list[float]:
        return self._by_label(self._counts["labeled"]).tolist()

    @property
    def f1MeasureByLabel(self) -> list[float]:
        counts = self._counts
        return (2 * self._by_label(counts["predicted"] + counts["labeled"])).tolist()

    @property
    def macroF1Measure(self) -> float:
        """The mean of ``f1MeasureByLabel``."""
        return float(np.mean(self.f1MeasureByLabel))


class SVBMultilabelTrainingSummary(SVBMultilabelSummary, SVBLogisticRegressionTrainingSummary):
    """The summary of a multi-label fit: the training record of
    :class:`SVBLogisticRegressionTrainingSummary` and the metrics of
    :class:`SVBMultilabelSummary` on the training rows."""


_ROW_SUMS = ("rows", "exact", "jaccard", "symmetric", "precision", "recall", "f1")


def _label_set_counts(batches):
    """A mapInArrow function: one partition's per-label counts (right, labeled, predicted)
    and its sums over rows of the example-based metrics, pickled."""
    import pyarrow as pa

    sums = dict.fromkeys(_ROW_SUMS, 0.0)
    sums["hits"] = 0.0  # per rank: the rows whose label it is (when the frame has the ranking)
    counts = {key: np.zeros(0) for key in ("tp", "labeled", "predicted")}
    for batch in batches:
        n = batch.num_rows
        (rows, labels), (guess_rows, guesses) = (
            _set_entries(batch.column(name)) for name in ("label", "prediction")
        )
        width = max(labels.max(initial=-1), guesses.max(initial=-1)) + 1
        # A (row, label) pair as one key: the labels both sets hold are the common keys.
        hits = np.intersect1d(rows * width + labels, guess_rows * width + guesses)
        hit = np.bincount(hits // max(width, 1), minlength=n).astype(np.float64)
        size = np.bincount(rows, minlength=n).astype(np.float64)
        guessed = np.bincount(guess_rows, minlength=n).astype(np.float64)
        union = size + guessed - hit
        with np.errstate(divide="ignore", invalid="ignore"):
            sums["exact"] += float(((hit == size) & (hit == guessed)).sum())
            sums["jaccard"] += float(np.where(union > 0, hit / union, 1.0).sum())
            sums["precision"] += float(np.where(guessed > 0, hit / guessed, 0.0).sum())
            sums["recall"] += float(np.where(size > 0, hit / size, 0.0).sum())
            sums["f1"] += float(np.where(union > 0, 2 * hit / (size + guessed), 1.0).sum())
        sums["symmetric"] += float((union - hit).sum())
        if "ranked" in batch.schema.names:
            sums["hits"] = sums["hits"] + _ranked_hits(batch.column("ranked"), rows, labels, n)
        sums["rows"] += n
        for key, found in (
            ("tp", hits % max(width, 1)),
            ("labeled", labels),
            ("predicted", guesses),
        ):
            grown = np.bincount(found, minlength=max(width, len(counts[key]))).astype(np.float64)
            grown[: len(counts[key])] += counts[key]
            counts[key] = grown
    yield pa.RecordBatch.from_arrays([pa.array([pickle.dumps({**sums, **counts})])], ["stats"])


def _ranked_hits(column, rows: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Per rank of a column of ranked labels (best first, as many a row): how many rows
    carry the label ranked there."""
    from svb_spark.spark.data import label_set_parts

    offsets, ranked = label_set_parts(column)
    width = max(labels.max(initial=-1), ranked.max(initial=-1)) + 1
    row = np.repeat(np.arange(n), np.diff(offsets))
    rank = np.arange(len(ranked)) - np.repeat(offsets[:-1], np.diff(offsets))
    carried = np.isin(row * width + ranked.astype(np.int64), rows * width + labels)
    return np.bincount(rank[carried], minlength=RANKED_LABELS).astype(np.float64)


def _set_entries(column) -> tuple[np.ndarray, np.ndarray]:
    """The (row, label) of every label of a label-sets column, each pair once."""
    from svb_spark.spark.data import label_set_parts

    offsets, labels = label_set_parts(column)
    width = int(labels.max(initial=-1)) + 1
    return label_positions(label_sets_of_parts(offsets, labels, width, np.float32))
