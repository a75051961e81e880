"""Batch scoring: the model's output columns, computed a whole Arrow batch at a time.

``mapInArrow`` passes every input column through untouched (vectors included) and appends the
outputs, so sparse feature vectors are scored with sparse products and never densified.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa

from svb_spark import solver
from svb_spark.data import (
    DENSE_VECTOR,
    is_vector_struct,
    vector_struct_array,
    vectors_to_csr,
    vectors_to_dense,
)


def _dense_vectors(matrix: np.ndarray) -> pa.StructArray:
    """Rows of ``matrix`` as Spark ML DenseVectors in their Arrow form."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    values = pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))
    return vector_struct_array(
        pa.array(np.full(n, DENSE_VECTOR, dtype=np.int8)),
        pa.nulls(n, pa.int32()),
        pa.nulls(n, pa.list_(pa.int32())),
        values,
    )


def _has_sparse_rows(column: pa.Array) -> bool:
    return is_vector_struct(column.type) and bool(
        (column.field("type").to_numpy(zero_copy_only=False) != DENSE_VECTOR).any()
    )


def add_prediction_columns(
    dataset,
    W: np.ndarray,
    b: np.ndarray,
    *,
    features: str,
    raw_col: str,
    probability_col: str,
    prediction_col: str,
    thresholds: list[float] | None,
):
    """Append rawPrediction / probability (vectors) and prediction (double) to ``dataset``.

    An empty column name skips that output, as in MLlib. ``W`` and ``b`` travel in the task
    closure.
    """
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    outputs = [
        (name, kind)
        for name, kind in (
            (raw_col, "raw"),
            (probability_col, "probability"),
            (prediction_col, "prediction"),
        )
        if name
    ]
    if not outputs:
        warnings.warn(
            "transform() was called with rawPredictionCol, probabilityCol and predictionCol all "
            "empty, so it adds no columns.",
            stacklevel=3,
        )
        return dataset
    for name, _ in outputs:
        if name in dataset.columns:
            raise ValueError(
                f"Output column '{name}' already exists in the DataFrame; drop it or set the "
                "model's output column params to other names."
            )

    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num_features = W.shape[1]
    kinds = [kind for _, kind in outputs]

    def score(batches):
        for batch in batches:
            column = batch.column(features)
            if _has_sparse_rows(column):
                raw = solver.sparse_raw_margins(W, b, vectors_to_csr(column, num_features))
            else:
                raw = solver.raw_margins(W, b, vectors_to_dense(column, num_features))
            probability = solver.probabilities_from_raw(raw)
            appended = []
            for kind in kinds:
                if kind == "prediction":
                    predicted = solver.predictions_from_probabilities(probability, thresholds)
                    appended.append(pa.array(predicted))
                else:
                    appended.append(_dense_vectors(raw if kind == "raw" else probability))
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, *appended],
                names=[*batch.schema.names, *(name for name, _ in outputs)],
            )

    types = {"raw": VectorUDT(), "probability": VectorUDT(), "prediction": DoubleType()}
    schema = StructType(
        [*dataset.schema.fields, *(StructField(name, types[kind]) for name, kind in outputs)]
    )
    return dataset.mapInArrow(score, schema)
