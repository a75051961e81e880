"""Embedded data for the demo and examples: no download needed.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1797 rows, 64 features, 10
classes) when scikit-learn is installed; ``planted`` is a generated problem whose labels come
from a random linear teacher plus Gumbel noise, so its achievable accuracy is known to be high.
"""

from __future__ import annotations

import numpy as np


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (X, y); needs scikit-learn (the ``test`` extra)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float64), y.astype(np.int64)


def planted(
    rows: int = 4000, num_features: int = 32, num_classes: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A planted linear-teacher problem as (X, y)."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(num_classes, num_features)) * 3.0 / np.sqrt(num_features)
    X = rng.normal(size=(rows, num_features))
    y = (X @ teacher.T + rng.gumbel(size=(rows, num_classes)) * 0.3).argmax(axis=1)
    return X, y.astype(np.int64)


def train_test_split(X, y, test_fraction: float = 0.25, seed: int = 0):
    """Shuffle and split into (X_train, X_test, y_train, y_test)."""
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1.0 - test_fraction)))
    train, test = order[:cut], order[cut:]
    return X[train], X[test], y[train], y[test]


def to_dataframe(spark, X: np.ndarray, y: np.ndarray, num_partitions: int | None = None):
    """A DataFrame of (features: vector, label: double), built through Arrow."""
    import pandas as pd
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    frame = pd.DataFrame(
        {"features": list(np.asarray(X, dtype=np.float64)), "label": y.astype(float)}
    )
    df = spark.createDataFrame(frame, "features array<double>, label double")
    df = df.withColumn("features", array_to_vector(F.col("features")))
    return df.repartition(num_partitions) if num_partitions else df
