"""The benchmarks' data sets, all generated or shipped offline.

- W1: dense features, a planted linear teacher (``svb_spark.datasets.planted``).
- W2: scikit-learn's digits (real data, 1797 rows, 64 features, 10 classes), split 75/25.
- ``sparse_text``: the sparse text-like problem (``svb_spark.datasets.planted_sparse``, about
  50 non-zeros per row). Its rows stay CSR everywhere (SparseVectors in Spark, CSR for held-out
  accuracy): a dense copy of 2^15 or 2^18 columns would be a different, far larger problem.
- ``text_like``: hashed term counts of generated short documents, many classes, not separable
  (below).
- ``many_classes_dense``: a dense Gaussian mixture of 1,000 classes with few rows each.
- ``letter`` and ``satellite``: real data sets of Debian's r-cran-mlbench.
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

    def describe(self) -> dict:
        """Name, title, sizes and, for CSR rows, the average non-zeros per training row."""
        described = {"name": self.name, "title": self.title, "train_rows": len(self.y_train),
                     "test_rows": len(self.y_test), "num_classes": self.num_classes,
                     "num_features": self.num_features}  # fmt: skip
        if self.sparse:
            described["nonzeros_per_row"] = self.X_train.nnz / max(self.X_train.shape[0], 1)
        return described


def power_of_two(n: int) -> str:
    """``n`` as ``2^k`` when it is a power of two."""
    return f"2^{n.bit_length() - 1}" if n > 0 and n & (n - 1) == 0 else str(n)


def stratified(name: str, title: str, X: np.ndarray, y: np.ndarray) -> Workload:
    """A real data set split 75/25, stratified, with a fixed seed."""
    from sklearn.model_selection import train_test_split

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=0, stratify=y
    )
    return Workload(name, title, X_train, y_train, X_test, y_test)


def w1_planted() -> Workload:
    """W1: the dense planted-teacher problem at K=200, D=256, 10k train / 2k test rows (the
    first harness's quick size; the issue's ImageNet shape is K=1000, D=512)."""
    from svb_spark.datasets import planted

    K, D, train, test = 200, 256, 10_000, 2_000
    X, y = planted(train + test, num_features=D, num_classes=K, seed=5)
    title = f"dense planted teacher, K={K}, D={D}"
    return Workload("W1", title, X[:train], y[:train], X[train:], y[train:])


def planted_rows(rows: int, features: int, classes: int, sparse: bool, seed: int = 0):
    """``(X, y)`` of a planted teacher: text-like CSR rows of about 50 non-zeros
    (``svb_spark.datasets.planted_sparse``) or dense ones (``planted``)."""
    from svb_spark import datasets

    if sparse:
        return datasets.planted_sparse(rows, features, classes, seed=seed)
    return datasets.planted(rows, features, classes, seed=seed)


def w2_digits() -> Workload:
    from svb_spark.datasets import digits

    return stratified("W2", "digits (scikit-learn), K=10, D=64", *digits())


def sparse_text(
    num_classes: int, num_features: int, train: int, test: int, name: str = "sparse"
) -> Workload:
    """The sparse text-like problem at any size (CSR rows)."""
    from svb_spark.datasets import planted_sparse, train_test_split

    X, y = planted_sparse(train + test, num_features, num_classes, seed=11)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test / (train + test), seed=11)
    title = f"sparse text-like, K={num_classes}, D={power_of_two(num_features)}"
    return Workload(name, title, X_train, y_train, X_test, y_test)


def hashed_columns(keys: np.ndarray, num_features: int, salt=0) -> np.ndarray:
    """Columns in ``[0, num_features)`` (a power of two) of integer ``keys``, by a fixed hash:
    colliding keys share a column, as HashingTF's words do."""
    h = (np.asarray(salt, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
        keys.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    )
    h ^= h >> np.uint64(31)  # splitmix64's finalizer: the low bits of a product are poor
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h & np.uint64(num_features - 1)).astype(np.int64)


def _zipf_cdf(n: int, offset: float = 0.0) -> np.ndarray:
    """Cumulative probabilities of ranks 1..n with weights 1 / (rank + offset)."""
    cumulative = np.cumsum(1.0 / (np.arange(1, n + 1) + offset))
    return cumulative / cumulative[-1]


# The knobs of text_like_rows. At 1,000 classes x 50k rows and 2^14 features, scikit-learn's
# lbfgs (C = 1e4, standardized) converged in 35 iterations to 0.76 held out (1.0 on training
# rows); at 250 classes x 12.5k rows MLlib's default fit stopped after 29 iterations at 0.81.
TEXT_KNOBS = {
    "vocabulary": 50_000,  # words, Zipf (exponent 1) frequencies in the background
    "topics": 50,  # shared topics; each class draws from one or two of them
    "topic_words": 400,  # words of a topic, Zipf within it
    "class_words": 30,  # words of a class's own, Zipf within them
    "mix": (0.6, 0.3, 0.1),  # share of a document's tokens: background, topics, class words
    "class_offset": 50.0,  # class priors 1 / (rank + 50): 1,000 classes span 330 to 16 rows in 50k
    "label_noise": 0.03,  # share of labels replaced by a uniformly drawn class
    "lengths": (10, 100),  # tokens of a document, uniform
}


def text_like_rows(rows: int, num_classes: int, num_features: int, seed: int, **knobs):
    """Term counts (CSR, ``num_features`` hashed columns) of ``rows`` generated documents and
    their labels; ``knobs`` override :data:`TEXT_KNOBS`. Every class mixes the same Zipf
    background, one or two of the shared topics and its own few words, so most of a class's
    mass is shared; the classes' sizes have a long tail and some labels are noise."""
    import scipy.sparse as sp

    k = {**TEXT_KNOBS, **knobs}
    rng = np.random.default_rng(seed)
    vocabulary, (background, topical, _) = k["vocabulary"], k["mix"]
    # Topic and class words skip the commonest ranks, which every class uses anyway.
    topic_vocab = rng.integers(100, vocabulary, (k["topics"], k["topic_words"]))
    class_topics = rng.integers(0, k["topics"], (num_classes, 2))
    single = rng.random(num_classes) < 0.5
    class_topics[single, 1] = class_topics[single, 0]
    class_vocab = rng.integers(1000, vocabulary, (num_classes, k["class_words"]))
    # Shuffled so that a class's id does not give its size away.
    classes = rng.permutation(num_classes)
    y = classes[np.searchsorted(_zipf_cdf(num_classes, k["class_offset"]), rng.random(rows))]
    lengths = rng.integers(k["lengths"][0], k["lengths"][1] + 1, rows)
    document = np.repeat(np.arange(rows), lengths)
    tokens, labels, source = len(document), y[document], rng.random(len(document))

    def zipf_ranks(n: int, offset: float = 0.0) -> np.ndarray:  # one rank in [0, n) a token
        return np.searchsorted(_zipf_cdf(n, offset), rng.random(tokens))

    background_word = zipf_ranks(vocabulary)
    topic = class_topics[labels, rng.integers(0, 2, tokens)]
    topic_word = topic_vocab[topic, zipf_ranks(k["topic_words"], 5.0)]
    class_word = class_vocab[labels, zipf_ranks(k["class_words"], 2.0)]
    shares = [source < background, source < background + topical]
    words = np.select(shares, [background_word, topic_word], class_word)
    X = sp.csr_matrix(
        (np.ones(tokens), (document, hashed_columns(words, num_features))),
        shape=(rows, num_features),
    )
    noisy = rng.random(rows) < k["label_noise"]
    return X, np.where(noisy, rng.integers(0, num_classes, rows), y)


def text_like(
    num_features: int = 2**14, num_classes: int = 1000, train: int = 50_000, test: int = 10_000
) -> Workload:
    """Generated short texts, hashed term counts (:func:`text_like_rows`); held-out rows are
    the last ``test`` of one draw."""
    X, y = text_like_rows(train + test, num_classes, num_features, seed=24)
    title = f"text-like, K={num_classes}, D={power_of_two(num_features)}, {train // 1000}k rows"
    return Workload("text", title, X[:train], y[:train], X[train:], y[train:])


def many_classes_dense(
    num_classes: int = 1000,
    num_features: int = 1024,
    train: int = 30_000,
    test: int = 6_000,
    seed: int = 0,
) -> Workload:
    """Dense rows of a Gaussian mixture: each class a random mean (norm about 4.5), unit
    noise, class priors 1 / sqrt(rank), so that about 30 rows a class are too few for a
    1000 x 1024 model and held-out accuracy peaks early (nearest class mean: 0.34)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes, num_features)) * 4.5 / np.sqrt(num_features)
    prior = 1.0 / np.sqrt(np.arange(1, num_classes + 1))
    y = rng.choice(num_classes, size=train + test, p=prior / prior.sum())
    X = means[y] + rng.normal(size=(train + test, num_features))
    title = f"dense many-class mixture, K={num_classes}, D={num_features}, {train // 1000}k rows"
    title += f", seed {seed}" if seed else ""
    return Workload("dense1000", title, X[:train], y[:train], X[train:], y[train:])


def mlbench(name: str, label: str, title: str) -> Workload:
    """A real data set of Debian's r-cran-mlbench (``benchmarks/setup.sh`` installs it), read
    with the PyPI package ``rdata``."""
    import warnings

    import rdata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns about R attributes it does not map
        frame = rdata.read_rda(f"/usr/lib/R/site-library/mlbench/data/{name}.rda")[name]
    X = frame.drop(columns=[label]).to_numpy(dtype=np.float64)
    return stratified(name, title, X, frame[label].cat.codes.to_numpy().astype(np.int64))


def letter() -> Workload:
    """LetterRecognition: 20,000 rows, 16 dense features, 26 classes (real data)."""
    return mlbench("LetterRecognition", "lettr", "letter recognition (mlbench), K=26, D=16")


def satellite() -> Workload:
    """Satellite: 6,435 rows, 36 dense features, 6 classes (real data)."""
    return mlbench("Satellite", "classes", "satellite (mlbench), K=6, D=36")
