"""Batch scoring: the model's output columns, computed by a vectorized Arrow UDF."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from svb_spark import solver

_SCORES = "_svb_scores"


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

    An empty column name skips that output, as in MLlib. ``W`` and ``b`` travel in the UDF's
    closure; the features are scored a whole Arrow batch at a time.
    """
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    if not (raw_col or probability_col or prediction_col):
        warnings.warn(
            "transform() was called with rawPredictionCol, probabilityCol and predictionCol all "
            "empty, so it adds no columns.",
            stacklevel=3,
        )
        return dataset

    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)

    @pandas_udf("raw array<double>, probability array<double>, prediction double")
    def score(rows: pd.Series) -> pd.DataFrame:
        X = np.stack(rows.to_numpy()) if len(rows) else np.zeros((0, W.shape[1]))
        raw = solver.raw_margins(W, b, X)
        probability = solver.probabilities_from_raw(raw)
        prediction = solver.predictions_from_probabilities(probability, thresholds)
        return pd.DataFrame(
            {"raw": list(raw), "probability": list(probability), "prediction": prediction}
        )

    if isinstance(dataset.schema[features].dataType, VectorUDT):
        feature_array = vector_to_array(F.col(features), "float64")
    else:
        feature_array = F.col(features).cast("array<double>")
    scored = dataset.withColumn(_SCORES, score(feature_array))
    if raw_col:
        scored = scored.withColumn(raw_col, array_to_vector(F.col(f"{_SCORES}.raw")))
    if probability_col:
        scored = scored.withColumn(
            probability_col, array_to_vector(F.col(f"{_SCORES}.probability"))
        )
    if prediction_col:
        scored = scored.withColumn(prediction_col, F.col(f"{_SCORES}.prediction"))
    return scored.drop(_SCORES)
