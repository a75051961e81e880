"""Example data for the demo, the examples and the benchmarks, as numpy arrays or DataFrames.

Nothing is downloaded, but nothing is embedded either: ``digits`` loads scikit-learn's bundled
8x8 handwritten digits (1797 rows, 64 features, 10 classes), so it needs scikit-learn (the
``demo`` and ``test`` extras; ``svb-spark demo`` falls back to ``planted`` without it).
``planted`` (dense) and ``planted_sparse`` (CSR) generate labels from a random linear teacher,
so their achievable accuracy is known to be high. ``to_dataframe`` turns any of them into a
Spark DataFrame of (features, label).
"""

from __future__ import annotations

import numpy as np


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (X, y); needs scikit-learn (the ``demo`` or ``test`` extra)."""
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


def planted_sparse(
    rows: int = 20000,
    num_features: int = 2**18,
    num_classes: int = 500,
    nonzeros: int = 56,
    signal: float = 0.5,
    vocabulary: int = 20000,
    seed: int = 0,
):
    """Text-like data from a planted sparse linear teacher, as (X CSR, y).

    Every class owns 40 signature features among the hashed ``num_features``. A row of class
    k draws ``signal * nonzeros`` of its non-zeros from k's signatures and the rest from a
    shared ``vocabulary`` of common features, with counts as values (like term frequencies),
    so the teacher "sum of own signatures" is a linear classifier that gets almost every row
    right, while the common features, like common words, carry no class information.
    """
    from scipy import sparse

    rng = np.random.default_rng(seed)
    vocabulary = min(vocabulary, num_features)
    signatures = rng.choice(num_features, size=(num_classes, 40), replace=False)
    y = rng.integers(0, num_classes, size=rows)
    own = int(round(signal * nonzeros))
    columns = np.concatenate(
        [
            signatures[y[:, None], rng.integers(0, 40, size=(rows, own))],
            rng.choice(num_features, size=vocabulary, replace=False)[
                rng.integers(0, vocabulary, size=(rows, nonzeros - own))
            ],
        ],
        axis=1,
    )
    values = rng.integers(1, 4, size=columns.shape).astype(np.float64)
    X = sparse.csr_matrix(
        (values.ravel(), columns.ravel(), np.arange(0, rows * nonzeros + 1, nonzeros)),
        shape=(rows, num_features),
    )
    X.sum_duplicates()
    return X, y.astype(np.int64)


def tagged_text(classes: int, rng, skew: float = 0.7, num_features: int = 1 << 14):
    """A drawer of text-like CSR rows and labels, ``draw(rows)``, for many classes: class
    frequencies fall as rank^-``skew`` (0: all alike; 0.7: a long tail); each class owns 4 of
    the hashed features, and a row holds 6 draws from its class's and 24 from a common
    vocabulary of 4,000, with counts as values. Training and test rows come from one drawer."""
    from scipy import sparse

    signatures = rng.integers(0, num_features, size=(classes, 4))
    vocabulary = rng.choice(num_features, 4000, replace=False)
    p = 1.0 / np.arange(1, classes + 1) ** skew
    p /= p.sum()

    def draw(rows: int):
        y = rng.choice(classes, size=rows, p=p)
        columns = np.concatenate(
            [signatures[y[:, None], rng.integers(0, 4, (rows, 6))],
             vocabulary[rng.integers(0, 4000, (rows, 24))]], axis=1,
        )  # fmt: skip
        X = sparse.csr_matrix(
            (np.ones(columns.size), columns.ravel(), np.arange(0, columns.size + 1, 30)),
            shape=(rows, num_features),
        )
        X.sum_duplicates()
        return X, y

    return draw


def tagged_labels(labels: int, rng, skew: float = 0.7, num_features: int = 1 << 16):
    """A drawer of multi-label text-like CSR rows and their label sets, ``draw(rows)`` ->
    ``(X, sets)``: label frequencies fall as rank^-``skew``; a row carries 1 to 10 labels
    (Zipfian: most carry one or two), drawn without repeats; each label owns 4 of the hashed
    features, and a row holds 4 draws from each of its labels' and 20 from a common
    vocabulary of 4,000, with counts as values."""
    from scipy import sparse

    signatures = rng.integers(0, num_features, size=(labels, 4))
    vocabulary = rng.choice(num_features, 4000, replace=False)
    p = 1.0 / np.arange(1, labels + 1) ** skew
    p /= p.sum()
    counts_p = 1.0 / np.arange(1, 11) ** 1.5
    counts_p /= counts_p.sum()

    def draw(rows: int):
        counts = rng.choice(np.arange(1, 11), size=rows, p=counts_p)
        sets = [np.sort(rng.choice(labels, size=c, replace=False, p=p)) for c in counts]
        columns = [
            np.concatenate(
                [
                    signatures[s][:, rng.integers(0, 4, 4)].ravel(),
                    vocabulary[rng.integers(0, 4000, 20)],
                ]
            )  # fmt: skip
            for s in sets
        ]
        lengths = np.array([len(c) for c in columns])
        X = sparse.csr_matrix(
            (np.ones(lengths.sum()), np.concatenate(columns), np.r_[0, np.cumsum(lengths)]),
            shape=(rows, num_features),
        )
        X.sum_duplicates()
        return X, [s.tolist() for s in sets]

    return draw


def train_test_split(X, y, test_fraction: float = 0.25, seed: int = 0):
    """Shuffle and split into (X_train, X_test, y_train, y_test)."""
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(round(len(y) * (1.0 - test_fraction)))
    train, test = order[:cut], order[cut:]
    return X[train], X[test], y[train], y[test]


def to_dataframe(spark, X, y: np.ndarray, num_partitions: int | None = None):
    """A DataFrame of (features: vector, label: double), built through Arrow.

    ``X`` is a dense array (DenseVectors) or a scipy CSR matrix (SparseVectors).
    """
    import pandas as pd
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    if hasattr(X, "indptr"):
        df = _sparse_dataframe(spark, X, y)
    else:
        frame = pd.DataFrame(
            {"features": list(np.asarray(X, dtype=np.float64)), "label": y.astype(float)}
        )
        df = spark.createDataFrame(frame, "features array<double>, label double")
        df = df.withColumn("features", array_to_vector(F.col("features")))
    return df.repartition(num_partitions) if num_partitions else df


def _sparse_dataframe(spark, X, y):
    """CSR rows as SparseVectors: index/value lists through Arrow, assembled by mapInArrow."""
    import pyarrow as pa
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StructField, StructType

    from svb_spark.spark.session import dataframe_from_arrow

    offsets = pa.array(X.indptr.astype(np.int32))
    table = pa.table(
        {
            "indices": pa.ListArray.from_arrays(offsets, pa.array(X.indices.astype(np.int32))),
            "values": pa.ListArray.from_arrays(offsets, pa.array(X.data.astype(np.float64))),
            "label": pa.array(y.astype(np.float64)),
        }
    )
    from svb_spark.spark.data import SPARSE_VECTOR, vector_struct_array

    size = X.shape[1]

    def assemble(batches):
        for batch in batches:
            n = batch.num_rows
            vectors = vector_struct_array(
                pa.array(np.full(n, SPARSE_VECTOR, np.int8)), pa.array(np.full(n, size, np.int32)),
                batch.column("indices"), batch.column("values"),
            )  # fmt: skip
            yield pa.RecordBatch.from_arrays(
                [vectors, batch.column("label")], ["features", "label"]
            )

    schema = StructType([StructField("features", VectorUDT()), StructField("label", DoubleType())])
    return dataframe_from_arrow(spark, table).mapInArrow(assemble, schema)
