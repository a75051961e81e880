"""The driver's one pass over the training data: statistics and input checks.

One ``mapInArrow`` job computes, per partition, row and weight counts, label range and
integrality, vector sizes, the first non-finite feature and weighted feature moments. The driver
merges them and raises, before any barrier stage starts, an error that names the column, the bad
value and the fix.
"""

from __future__ import annotations

import importlib
import pickle
import sys
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from svb_spark.spark.data import (
    dense_rows,
    is_label_sets,
    label_set_parts,
    numeric_column,
    vector_sizes,
    vectors_to_csr,
)
from svb_spark.spark.session import arrow_batch_bytes

_STATS_SCHEMA = "stats binary"


@dataclass
class DatasetSummary:
    """What the fit needs to know about the data before training."""

    num_rows: int
    weight_sum: float
    num_features: int
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    nonzeros: int = 0
    partition_rows: tuple[int, ...] = ()  # rows in each partition of the input, in order
    # The weight of each class's rows (MLlib's label histogram), or None past
    # HISTOGRAM_MAX_CLASSES classes, where no fit starts from it (solvers.lbfgs.mllib_intercepts).
    class_weights: np.ndarray | None = None
    label_sets: bool = False  # the label column holds a set of labels a row (multi-label)

    @property
    def nonzeros_per_row(self) -> float:
        return self.nonzeros / max(self.num_rows, 1)

    @property
    def density(self) -> float:
        """Fraction of non-zero features: below SPARSE_DENSITY the fit runs on CSR rows."""
        return self.nonzeros_per_row / max(self.num_features, 1)


# The label histogram is kept up to this many classes (512 KB): only L-BFGS starts from it,
# whose models auto keeps to 2^18 coefficients (solvers.lbfgs.AUTO_MAX_COEFFICIENTS); an L-BFGS
# fit of more classes starts its intercepts at zero.
HISTOGRAM_MAX_CLASSES = 1 << 16


class _PartitionStats:
    """Running statistics of one partition; plain attributes so it pickles cheaply."""

    def __init__(self) -> None:
        self.rows = 0
        self.null_labels = 0
        self.bad_label: float | None = None  # NaN, infinite, negative or fractional
        self.min_label = np.inf
        self.max_label = -np.inf
        self.null_features = 0
        self.sizes: set[int] = set()
        self.nonfinite: tuple[int, float] | None = None  # (feature index, value)
        self.null_weights = 0
        self.bad_weight: float | None = None
        self.weight_sum = 0.0
        self.weight_sq_sum = 0.0
        self.sum: np.ndarray | None = None
        self.sq_sum: np.ndarray | None = None
        self.nonzeros = 0
        self.class_weights: np.ndarray | None = np.zeros(0)
        self.label_sets = False

    def update(self, batch: pa.RecordBatch, features: str, label: str, weight: str | None) -> None:
        n = batch.num_rows
        self.rows += n
        labels_arrow = batch.column(label)
        self.null_labels += labels_arrow.null_count
        if is_label_sets(labels_arrow.type):  # every label of every row's set
            self.label_sets = True
            offsets, y = label_set_parts(labels_arrow)
            counts = np.diff(offsets)
        else:
            y = numeric_column(labels_arrow)
            y = y[~np.isnan(y)] if labels_arrow.null_count else y
        bad = ~np.isfinite(y) | (y < 0) | (y != np.floor(y))
        if bad.any() and self.bad_label is None:
            self.bad_label = float(y[bad][0])
        if len(y[~bad]):
            self.min_label = min(self.min_label, float(y[~bad].min()))
            self.max_label = max(self.max_label, float(y[~bad].max()))

        if weight is None:
            w = np.ones(n)
        else:
            # numeric_column turns nulls into NaN; count them so the message can say "null".
            self.null_weights += batch.column(weight).null_count
            w = numeric_column(batch.column(weight))
        bad_w = ~np.isfinite(w) | (w < 0)
        if bad_w.any():
            if self.bad_weight is None:
                self.bad_weight = float(w[bad_w][0])
            w = np.where(bad_w, 0.0, w)
        # With label sets a row's weight counts once for each of its labels.
        label_weights = np.repeat(w, counts) if self.label_sets else w
        self._count_classes(y, label_weights, labels_arrow.null_count or bad.any())

        sizes = vector_sizes(batch.column(features))
        self.null_features += int((sizes < 0).sum())
        self.sizes.update(int(s) for s in np.unique(sizes[sizes >= 0])[:2])
        if len(self.sizes) != 1:
            return
        valid = sizes >= 0
        size = next(iter(self.sizes))
        column = batch.column(features)
        column = column.filter(pa.array(valid)) if not valid.all() else column
        w = w[valid]
        if self.sum is None:
            self.sum, self.sq_sum = np.zeros(size), np.zeros(size)
        self.weight_sum += float(w.sum())
        self.weight_sq_sum += float((w * w).sum())
        X = dense_rows(column, size)
        if X is not None:
            self._add_dense(X.astype(np.float64, copy=False), w)  # array<float> rows: a copy
            return
        # CSR, never dense: hashed text has D = 2^18 and more.
        X = vectors_to_csr(column, size)
        finite = np.isfinite(X.data)
        if not finite.all():
            if self.nonfinite is None:
                first = np.flatnonzero(~finite)[0]
                self.nonfinite = (int(X.indices[first]), float(X.data[first]))
            X.data[~finite] = 0.0
        self.nonzeros += int(X.nnz)
        self.sum += X.T @ w
        self.sq_sum += X.multiply(X).T @ w

    def _count_classes(self, y: np.ndarray, w: np.ndarray, invalid: bool) -> None:
        """Add the rows' weights to the label histogram (bad labels fail the fit anyway)."""
        if invalid or self.class_weights is None or not len(y):
            return
        if y.max() >= HISTOGRAM_MAX_CLASSES:
            self.class_weights = None
            return
        counts = np.bincount(y.astype(np.int64), weights=w)
        if len(counts) > len(self.class_weights):
            counts[: len(self.class_weights)] += self.class_weights
            self.class_weights = counts
        else:
            self.class_weights[: len(counts)] += counts

    def _add_dense(self, X: np.ndarray, w: np.ndarray) -> None:
        """The moments of rows stored densely (``X``, read-only, a view of the batch): two
        matrix-vector products, no CSR."""
        self.nonzeros += int(np.count_nonzero(X))  # non-finite values count, as in CSR
        finite = np.isfinite(X)
        if not finite.all():
            if self.nonfinite is None:
                first = np.flatnonzero(~finite)[0]  # row-major, as CSR order
                self.nonfinite = (int(first % X.shape[1]), float(X.flat[first]))
            X = np.where(finite, X, 0.0)
        self.sum += w @ X
        self.sq_sum += w @ np.square(X)


# What a barrier task imports: the training core and the Flight transport, about 0.5 s in a
# fresh Python worker. Spark reuses Python workers between jobs, so the pre-pass starts that
# import in the background of its workers, where it runs while the driver plans the fit,
# instead of at the start of the first fit's barrier stage.
_TRAINING_MODULE = "svb_spark.spark.task"


def _import_training_modules() -> None:
    try:
        importlib.import_module(_TRAINING_MODULE)
    except Exception:  # the barrier task imports it again and reports what fails
        pass


def _statistics_task(features: str, label: str, weight: str | None):
    def task(batches):
        if _TRAINING_MODULE not in sys.modules:
            threading.Thread(target=_import_training_modules, daemon=True).start()
        stats = _PartitionStats()
        for batch in batches:
            stats.update(batch, features, label, weight)
        yield pa.RecordBatch.from_pydict({"stats": [pickle.dumps(stats)]})

    return task


def quoted_column(name: str) -> str:
    """A SQL identifier for the top-level column ``name``, dots and backticks included: the
    column :func:`check_columns` found in the schema."""
    return "`" + name.replace("`", "``") + "`"


def _fail(message: str) -> None:
    raise ValueError(message)


def inspect_training_data(
    df, features: str, label: str, weight: str | None, num_classes: int
) -> DatasetSummary:
    """Run the pre-pass over ``df`` and check it; ``num_classes`` 0 means infer.

    Raises ValueError for bad values, naming the column, the value and the fix.
    """
    # The pre-pass reads its columns under plain names: mapInArrow converts every column of its
    # frame to Arrow (a Pipeline's frame carries many the fit does not read), and looks each
    # up by name, which pyspark parses (a dot would name a struct's field).
    named = {"features": features, "label": label, "weight": weight}
    frame = df.selectExpr(*(f"{quoted_column(c)} AS {n}" for n, c in named.items() if c))
    task = _statistics_task("features", "label", "weight" if weight else None)
    with arrow_batch_bytes(df.sparkSession):
        rows = frame.mapInArrow(task, _STATS_SCHEMA).collect()
    parts = [pickle.loads(r.stats) for r in rows]
    total_rows = sum(p.rows for p in parts)
    if total_rows == 0:
        _fail(
            "The training DataFrame is empty: it has no rows to fit. Check the filters or "
            "the input path that produced it."
        )
    label_sets = any(p.label_sets for p in parts)
    if any(p.null_labels for p in parts):
        count = sum(p.null_labels for p in parts)
        if label_sets:
            _fail(
                f"Column '{label}' has {count} null label set(s); a row without labels holds "
                "an empty array. Fill them (F.coalesce(F.col('"
                f"{label}'), F.array().cast('array<double>'))) or drop those rows."
            )
        _fail(
            f"Column '{label}' has {count} null value(s); labels must be class indices "
            "0, 1, ..., numClasses - 1. Drop those rows (df.dropna(subset=['"
            f"{label}'])) or fill them."
        )
    bad_label = next((p.bad_label for p in parts if p.bad_label is not None), None)
    if bad_label is not None:
        _fail(
            f"Column '{label}' must hold integer class indices 0, 1, ..., numClasses - 1"
            f"{' in every label set' if label_sets else ''}; found {bad_label!r}. Map "
            "arbitrary labels to indices with pyspark.ml.feature.StringIndexer."
        )
    if max(p.max_label for p in parts) < 0:  # label sets, every one empty
        _fail(
            f"Column '{label}' holds no label: every one of the {total_rows} row(s) has an "
            "empty label set, so there is nothing to learn. Check how the label sets were "
            "built."
        )
    max_label = int(max(p.max_label for p in parts))
    min_label = int(min(p.min_label for p in parts))
    if not num_classes and min_label == max_label and not label_sets:
        _fail(
            f"Column '{label}' holds a single class: every one of the {total_rows} row(s) has "
            f"the label {max_label}, so there is nothing to separate. Check the filters that "
            "produced the DataFrame, or set numClasses (>= 2) if the other classes are absent "
            "on purpose."
        )
    if num_classes and max_label >= num_classes:
        _fail(
            f"Column '{label}' has the label {max_label}, but numClasses is {num_classes} so "
            f"labels must be below {num_classes}. Set numClasses to at least {max_label + 1} "
            "or to 0 to infer it."
        )
    if any(p.null_features for p in parts):
        count = sum(p.null_features for p in parts)
        _fail(
            f"Column '{features}' has {count} null vector(s). Drop those rows "
            f"(df.dropna(subset=['{features}'])) or impute them before fitting."
        )
    sizes = set().union(*(p.sizes for p in parts))
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        _fail(
            f"Column '{features}' holds vectors of different sizes ({a} and {b}); every row "
            "must have the same number of features. Rebuild the column with one "
            "pyspark.ml.feature.VectorAssembler over the same input columns."
        )
    nonfinite = next((p.nonfinite for p in parts if p.nonfinite is not None), None)
    if nonfinite is not None:
        index, value = nonfinite
        _fail(
            f"Column '{features}' has the non-finite value {value} at feature index {index}. "
            "Remove those rows or replace the values, e.g. with pyspark.ml.feature.Imputer."
        )
    if any(p.null_weights for p in parts):
        count = sum(p.null_weights for p in parts)
        _fail(
            f"Column '{weight}' has {count} null weight(s); instance weights must be finite "
            f"and >= 0. Fill them (df.fillna({{'{weight}': 1.0}})) or drop those rows."
        )
    bad_weight = next((p.bad_weight for p in parts if p.bad_weight is not None), None)
    if bad_weight is not None:
        _fail(
            f"Column '{weight}' has the weight {bad_weight}; instance weights must be finite "
            "and >= 0. Fix or drop those rows."
        )
    weight_sum = sum(p.weight_sum for p in parts)
    if weight_sum <= 0:
        _fail(
            f"Column '{weight}' has no positive weight; found a sum of {weight_sum} over "
            f"{total_rows} row(s). At least one row needs a weight > 0: check how the weights "
            "were computed."
        )

    num_features = sizes.pop()
    moments = [p for p in parts if p.sum is not None]
    total = sum(p.sum for p in moments)
    sq_total = sum(p.sq_sum for p in moments)
    weight_sq_sum = sum(p.weight_sq_sum for p in parts)
    mean = total / weight_sum
    # Unbiased weighted variance, as MLlib's Summarizer computes it.
    denominator = weight_sum - weight_sq_sum / weight_sum
    variance = (sq_total - weight_sum * mean * mean) / denominator if denominator > 0 else 0 * mean
    std = np.sqrt(np.maximum(variance, 0.0))
    num_classes = num_classes or max_label + 1
    class_weights = None
    if all(p.class_weights is not None for p in parts) and num_classes <= HISTOGRAM_MAX_CLASSES:
        class_weights = np.zeros(num_classes)
        for p in parts:
            class_weights[: len(p.class_weights)] += p.class_weights
    return DatasetSummary(
        num_rows=total_rows,
        weight_sum=weight_sum,
        num_features=num_features,
        num_classes=num_classes,
        mean=mean,
        std=std,
        nonzeros=sum(p.nonzeros for p in parts),
        partition_rows=tuple(p.rows for p in parts),
        class_weights=class_weights,
        label_sets=label_sets,
    )


def check_columns(schema, features: str, label: str | None, weight: str | None) -> None:
    """Fail on missing columns and wrong column types, naming the column and the fix."""
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, NumericType

    names = schema.fieldNames()
    for role, column in (("features", features), ("label", label), ("weight", weight)):
        if column and column not in names:
            raise ValueError(
                f"The {role} column '{column}' does not exist; the DataFrame has columns "
                f"{names}. Set {role}Col to one of them."
            )
    feature_type = schema[features].dataType
    is_array = isinstance(feature_type, ArrayType) and isinstance(
        feature_type.elementType, (DoubleType, FloatType)
    )
    if not isinstance(feature_type, VectorUDT) and not is_array:
        raise TypeError(
            f"Column '{features}' must be a vector (pyspark.ml.linalg.Vector) or "
            f"array<double>; got {feature_type.simpleString()}. Combine numeric columns into one "
            "vector with pyspark.ml.feature.VectorAssembler."
        )
    numeric = (
        (
            label,
            "class indices 0, 1, ..., numClasses - 1",
            "Index the labels with pyspark.ml.feature.StringIndexer",
        ),
        (weight, "instance weights", "Cast it to double"),
    )
    label_type = schema[label].dataType if label else None
    if isinstance(label_type, ArrayType) and isinstance(label_type.elementType, NumericType):
        numeric = numeric[1:]  # label sets: each an array of class indices (multi-label)
    for column, meaning, fix in numeric:
        if column and not isinstance(schema[column].dataType, NumericType):
            raise TypeError(
                f"Column '{column}' must hold numeric {meaning}; got "
                f"{schema[column].dataType.simpleString()}. {fix}."
            )


def check_validation_column(dataset, column: str) -> None:
    """The validation indicator must be a boolean column with both values and no nulls:
    true rows are held out, false rows train (MLlib's validationIndicatorCol)."""
    from pyspark.sql.types import BooleanType

    names = dataset.schema.fieldNames()
    if column not in names:
        raise ValueError(
            f"The validation column '{column}' does not exist; the DataFrame has columns "
            f"{names}. Set validationIndicatorCol to one of them, or unset it."
        )
    column_type = dataset.schema[column].dataType
    if not isinstance(column_type, BooleanType):
        raise TypeError(
            f"Column '{column}' (validation indicator) must be boolean; got "
            f"{column_type.simpleString()}. Derive one, e.g. F.rand(seed) < 0.1 for a 10% "
            "hold-out."
        )
    name = quoted_column(column)
    counts = dataset.selectExpr(
        f"count_if({name}) AS held_out",
        f"count_if(NOT {name}) AS training",
        f"count_if({name} IS NULL) AS nulls",
    ).first()
    for problem, fix in (
        (counts.nulls > 0, f"has {counts.nulls} null value(s); fill them with true or false"),
        (counts.held_out == 0, "is false on every row, so nothing is held out"),
        (counts.training == 0, "is true on every row, so nothing is left to train on"),
    ):
        if problem:
            raise ValueError(
                f"The validation column '{column}' {fix}. Mark the held-out rows true and "
                "the training rows false."
            )


def class_labels(field, num_classes: int) -> list[str] | None:
    """The class labels that ``StringIndexer`` wrote into the label column's metadata (its
    ``ml_attr`` nominal values, in index order), one per class of the model, or None.

    There may be more values than classes: ``handleInvalid="keep"`` adds its unknown label
    last, and a label whose index is past the largest in the data is no class of the model.
    """
    attribute = (field.metadata or {}).get("ml_attr", {})
    values = attribute.get("vals") if attribute.get("type") == "nominal" else None
    if not values or len(values) < num_classes:
        return None
    return [str(value) for value in values[:num_classes]]
