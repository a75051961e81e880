"""Generated data shared by the test modules and the cluster job."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np


def planted(seed=0, n=400, K=4, D=6):
    """A planted linear teacher with Gumbel noise: (X, y, weights)."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(K, D))
    X = rng.normal(1.0, 2.0, size=(n, D))
    y = (X @ teacher.T + rng.gumbel(size=(n, K))).argmax(axis=1)
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, w


def tagged_frame(spark, rows=400, seed=3, labels=3):
    """A DataFrame of (features, label sets as array<double>) with ``labels`` labels, a label
    where a planted teacher's noisy margin is positive; and its features X."""
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, StructField, StructType

    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(labels, 4))
    X = rng.normal(1.0, 2.0, size=(rows, 4))
    on = X @ teacher.T + rng.logistic(size=(rows, labels)) - 1.0 > 0
    sets = [[float(k) for k in np.flatnonzero(r)] for r in on]
    schema = StructType([StructField("features", VectorUDT()),
                         StructField("label", ArrayType(DoubleType()))])  # fmt: skip
    return spark.createDataFrame([(Vectors.dense(x), s) for x, s in zip(X, sets)], schema), X


def to_frame(spark, X: np.ndarray, y: np.ndarray, sparse: bool = False, extra: dict | None = None):
    """A DataFrame of (features, label[, extra columns...]) from numpy arrays."""
    from pyspark.ml.linalg import Vectors

    def vector(row):
        if sparse:
            nz = np.flatnonzero(row)
            return Vectors.sparse(len(row), nz.tolist(), row[nz].tolist())
        return Vectors.dense(row.tolist())

    extra = extra or {}
    rows = [
        (vector(X[i]), float(y[i]), *[float(v[i]) for v in extra.values()]) for i in range(len(y))
    ]
    return spark.createDataFrame(rows, ["features", "label", *extra])


def planted_frame(spark):
    X, y, w = planted()
    return to_frame(spark, X, y, extra={"weight": w})


def blobs(seed=0, rows=(130, 101, 77), K=4, D=6):
    """Uneven partitions of a planted-teacher problem with weights: [(X, y, weights), ...]."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(K, D))
    parts = []
    for n in rows:
        X = rng.normal(2.0, 3.0, size=(n, D))
        y = (X @ teacher.T + rng.gumbel(size=(n, K))).argmax(axis=1)
        w = rng.uniform(0.2, 3.0, size=n)
        parts.append((X, y, w))
    return parts


def training_config(parts, **overrides):
    """The in-process tests' config for :func:`blobs` partitions: float64, 8 epochs, a little
    L2; ``overrides`` replace any field, and ``num_classes=1`` means the binomial loss."""
    from svb_spark.core.config import TrainingConfig
    from svb_spark.core.loss import BINOMIAL

    if overrides.get("num_classes") == 1:
        overrides.setdefault("loss", BINOMIAL)

    X = np.concatenate([p[0] for p in parts])
    config = TrainingConfig.from_statistics(
        4, X.shape[1], X.mean(axis=0), X.std(axis=0, ddof=1),
        batch_size=16, max_iter=8, tol=0.0, reg_param=0.01, step_size=1.0, seed=11,
        dtype="float64",
    )  # fmt: skip
    return dataclasses.replace(config, **overrides)


@contextlib.contextmanager
def live_spark_conf(spark, settings):
    """Change the running SparkContext's own conf (``spark.conf.set`` refuses core keys)."""
    conf = spark.sparkContext._jsc.sc().conf()
    before = {key: conf.get(key) if conf.contains(key) else None for key in settings}
    try:
        for key, value in settings.items():
            conf.set(key, value)
        yield
    finally:
        for key, value in before.items():
            if value is None:
                conf.remove(key)
            else:
                conf.set(key, value)
