"""The benchmark's workloads, all generated or shipped offline.

- W1: ImageNet-shaped dense features, a planted linear teacher (``svb_spark.datasets.planted``);
  K=1000, D=512, 20k train / 5k test (``--quick``: K=200, D=256, 10k / 2k; ``--smoke``: tiny).
- W2: scikit-learn's digits (real data, 1797 rows, 64 features, 10 classes), split 75/25.
- W3: the sparse text-like problem of the sparse issue (``svb_spark.datasets.planted_sparse``,
  about 50 non-zeros per row held as CSR end to end): K=500, D=2^18, 20k train / 5k test
  (``--quick``: K=100, D=2^15, 2,000 / 500; ``--smoke``: tiny).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Workload:
    """A train/test split and what it is; ``X_train`` and ``X_test`` are dense or scipy CSR."""

    name: str
    title: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def num_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def sparse(self) -> bool:
        return hasattr(self.X_train, "indptr")

    @property
    def nonzeros_per_row(self) -> float | None:
        """Average stored non-zeros per training row (CSR), None for dense data."""
        if not self.sparse:
            return None
        return float(self.X_train.nnz) / max(self.X_train.shape[0], 1)

    def describe(self) -> dict:
        described = {
            "name": self.name,
            "title": self.title,
            "train_rows": int(len(self.y_train)),
            "test_rows": int(len(self.y_test)),
            "num_classes": self.num_classes,
            "num_features": self.num_features,
        }
        if self.sparse:
            described["nonzeros_per_row"] = self.nonzeros_per_row
        return described


W1_SIZES = {  # K, D, train rows, test rows
    "full": (1000, 512, 20_000, 5_000),
    "quick": (200, 256, 10_000, 2_000),
    "smoke": (20, 32, 2_000, 500),  # checks the harness end to end; no figures worth reading
}


def w1_planted(mode: str) -> Workload:
    """W1: dense planted-teacher problem, ImageNet-shaped (K=1000, D=512) or a smaller size."""
    from svb_spark.datasets import planted

    K, D, train, test = W1_SIZES[mode]
    X, y = planted(train + test, num_features=D, num_classes=K, seed=5)
    return Workload(
        "W1",
        f"dense planted teacher, K={K}, D={D}",
        X[:train],
        y[:train],
        X[train:],
        y[train:],
    )


def w2_digits() -> Workload:
    """W2: scikit-learn's digits, stratified 75/25 split with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X.astype(np.float64), y, test_size=0.25, random_state=0, stratify=y
    )
    return Workload("W2", "digits (scikit-learn), K=10, D=64", X_train, y_train, X_test, y_test)


W3_SIZES = {  # K, D, train rows, test rows
    "full": (500, 2**18, 20_000, 5_000),
    "quick": (100, 2**15, 2_000, 500),
    "smoke": (10, 2**12, 800, 200),
}


def power_of_two(n: int) -> str:
    """``n`` as ``2^k`` when it is a power of two."""
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


def w3_sparse_text(mode: str) -> Workload:
    """W3: the sparse text-like problem, CSR rows (K=500, D=2^18 or a smaller size).

    The rows stay sparse everywhere: the Spark DataFrame holds SparseVectors, scikit-learn
    gets the CSR matrix and held-out accuracy is a sparse product, since a dense 2^18-column
    copy would be a different (and far larger) problem.
    """
    from svb_spark.datasets import planted_sparse, train_test_split

    K, D, train, test = W3_SIZES[mode]
    X, y = planted_sparse(rows=train + test, num_features=D, num_classes=K, seed=11)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_fraction=test / (train + test), seed=11
    )
    return Workload(
        "W3",
        f"sparse text-like, K={K}, D={power_of_two(D)}",
        X_train,
        y_train,
        X_test,
        y_test,
    )


def mlbench(name: str, label: str, title: str) -> Workload:
    """A real data set of Debian's r-cran-mlbench (``benchmarks/setup.sh`` installs it), read
    with the PyPI package ``rdata``, split 75/25 with a fixed seed."""
    import warnings

    import rdata
    from sklearn.model_selection import train_test_split

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns about R attributes it does not map
        frame = rdata.read_rda(f"/usr/lib/R/site-library/mlbench/data/{name}.rda")[name]
    X = frame.drop(columns=[label]).to_numpy(dtype=np.float64)
    y = frame[label].cat.codes.to_numpy().astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    return Workload(name, title, X_train, y_train, X_test, y_test)


def letter() -> Workload:
    """LetterRecognition: 20,000 rows, 16 dense features, 26 classes (real data)."""
    return mlbench("LetterRecognition", "lettr", "letter recognition (mlbench), K=26, D=16")


def satellite() -> Workload:
    """Satellite: 6,435 rows, 36 dense features, 6 classes (real data)."""
    return mlbench("Satellite", "classes", "satellite (mlbench), K=6, D=36")


def sparse_text(num_classes: int, num_features: int, train: int, test: int) -> Workload:
    """The sparse text-like generator at any size (CSR rows)."""
    from svb_spark.datasets import planted_sparse, train_test_split

    X, y = planted_sparse(
        rows=train + test, num_features=num_features, num_classes=num_classes, seed=11
    )
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_fraction=test / (train + test), seed=11
    )
    title = f"sparse text-like, K={num_classes}, D={power_of_two(num_features)}"
    return Workload("sparse", title, X_train, y_train, X_test, y_test)


def selected(names: list[str], mode: str) -> tuple[list[Workload], dict[str, str]]:
    """The workloads to run, and the reasons for those skipped (none at present; the report
    still shows a skipped workload's reason)."""
    workloads, skipped = [], {}
    for name in names:
        if name == "W1":
            workloads.append(w1_planted(mode))
        elif name == "W2":
            workloads.append(w2_digits())
        elif name == "W3":
            workloads.append(w3_sparse_text(mode))
        else:
            raise ValueError(f"unknown workload {name!r}; choose from W1, W2, W3")
    return workloads, skipped
