"""Batch scoring: the model's output columns, computed a whole Arrow batch at a time.

``mapInArrow`` passes every input column through untouched (vectors included) and appends the
outputs, so sparse feature vectors are scored with sparse products and never densified.

A model travels to the tasks in one of two ways. A small one rides in the task closure, so every
task unpickles all of it. One larger than :data:`SCORE_IN_BLOCKS_ABOVE` (or than a share of
``spark.executor.pyspark.memory``) is broadcast in class blocks of at most
:data:`CLASS_BLOCK_BYTES`, and a task scores each batch block by block, keeping per row only a
running max, sum of exponentials and best class
(:class:`svb_spark.core.loss.RunningSoftmax`), so its Python worker holds one block of the
model at a time. Without K-wide output columns, it scores consecutive batches together (as
many input bytes as a block holds), so that it reads each block once per group of batches, not
once per batch.
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
import pyarrow as pa

from svb_spark.core import loss, numerics
from svb_spark.spark.data import (
    DENSE_VECTOR,
    is_vector_struct,
    vector_struct_array,
    vectors_to_csr,
    vectors_to_dense,
)
from svb_spark.spark.inspection import check_columns
from svb_spark.spark.session import memory_bytes, spark_conf, spark_context

# Models of more float64 bytes than this are broadcast in class blocks rather than pickled into
# every task's closure.
SCORE_IN_BLOCKS_ABOVE = 256 << 20
# The most bytes of one broadcast class block (its rows of W and its intercepts).
CLASS_BLOCK_BYTES = 64 << 20
# With spark.executor.pyspark.memory set, a model above this share of it is scored in blocks of
# at most BLOCK_SHARE_OF_PYTHON_MEMORY of it: unpickling a value briefly holds both its pickled
# bytes and the array, and a batch's inputs and outputs need room too.
MODEL_SHARE_OF_PYTHON_MEMORY = 1 / 4
BLOCK_SHARE_OF_PYTHON_MEMORY = 1 / 8
# The most bytes of one row chunk's K-wide outputs: an Arrow batch (10,000 rows by default) of
# a 20,000-class model's margins alone would be 1.6 GB, and its probabilities as much again.
# A model scored in broadcast class blocks reads every block once per chunk, so chunks are
# not made smaller than they need to be.
WIDE_CHUNK_BYTES = 256 << 20


def wide_chunk_rows(num_classes: int) -> int:
    """The rows whose K-wide outputs take at most :data:`WIDE_CHUNK_BYTES` of float64 each."""
    return max(1, WIDE_CHUNK_BYTES // (8 * num_classes))


def _row_chunks(batches, rows: int):
    """The rows of ``batches`` in zero-copy slices of at most ``rows``."""
    for batch in batches:
        for offset in range(0, batch.num_rows, rows):
            yield batch.slice(offset, rows)


def _batch_groups(batches, limit: int):
    """Consecutive ``batches`` in groups of at most ``limit`` bytes (at least one batch each).

    Without K-wide columns a task scores a group against each broadcast class block in turn,
    so it reads (unpickles) every block once per group. Read once per 10,000-row batch, loading
    the blocks took 47% of a 4,000-class top-k scoring at 2^16 features. A group holds its rows
    and, per row, a running top-k; its input is bounded by a block's bytes, which the memory
    rules of :func:`scoring_block_bytes` already bound."""
    group, size = [], 0
    for batch in batches:
        if group and size + batch.nbytes > limit:
            yield group
            group, size = [], 0
        group.append(batch)
        size += batch.nbytes
    if group:
        yield group


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


def scoring_block_bytes(model_bytes: int, python_memory: int | None = None) -> int | None:
    """Bytes per class block for scoring a model of ``model_bytes``, or None to ship it whole.

    Parameters
    ----------
    model_bytes : int
        Bytes of the float64 coefficients and intercepts.
    python_memory : int, optional
        ``spark.executor.pyspark.memory`` in bytes, when it is set.

    Returns
    -------
    int or None
        :data:`CLASS_BLOCK_BYTES` (at most :data:`BLOCK_SHARE_OF_PYTHON_MEMORY` of
        ``python_memory``) when the model exceeds :data:`SCORE_IN_BLOCKS_ABOVE` or
        :data:`MODEL_SHARE_OF_PYTHON_MEMORY` of ``python_memory``; None when it is small enough
        to travel in the task closure.
    """
    limit, block = SCORE_IN_BLOCKS_ABOVE, CLASS_BLOCK_BYTES
    if python_memory:
        limit = min(limit, int(python_memory * MODEL_SHARE_OF_PYTHON_MEMORY))
        block = min(block, int(python_memory * BLOCK_SHARE_OF_PYTHON_MEMORY))
    return block if model_bytes > limit else None


def _python_memory(spark) -> int | None:
    setting = spark_conf(spark, "spark.executor.pyspark.memory")
    try:
        return memory_bytes(setting) if setting else None
    except ValueError:  # Spark itself refuses such a setting at start-up
        return None


class ClassBlockBroadcasts:
    """A model's class blocks as broadcast variables, made once and reused by every ``transform``.

    Each broadcast holds ``(W[start:stop], b[start:stop])``, the block's coefficients in
    feature-major order (what :func:`svb_spark.core.numerics.sparse_raw_margins` reads fastest).

    The broadcasts cannot be destroyed when ``transform`` returns: the DataFrame it returns is
    lazy and may be collected any number of times later. So they live as long as their holder
    (the model) and the plans that use them; Spark's ContextCleaner removes a broadcast once
    neither refers to it. Broadcasting afresh on every call would instead pile up one copy of
    the model per call on the driver, and pyspark deletes a broadcast's driver-side file only on
    ``destroy`` or when the SparkContext stops. Copies of the model share the blocks (they share
    its arrays); a pickled or deep-copied holder starts empty.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._made: tuple | None = None

    def broadcasts(self, sc, W: np.ndarray, b: np.ndarray, classes_per_block: int) -> list:
        """The broadcast blocks of ``(W, b)`` on ``sc``, ``classes_per_block`` classes each."""
        with self._lock:
            made = self._made
            if (
                made is None
                or made[0] is not sc
                or made[1] is not W
                or made[2] is not b
                or made[3] != classes_per_block
            ):
                blocks = [
                    sc.broadcast(
                        (
                            np.asfortranarray(W[start : start + classes_per_block]),
                            np.array(b[start : start + classes_per_block]),
                        )
                    )
                    for start in range(0, W.shape[0], classes_per_block)
                ]
                self._made = made = (sc, W, b, classes_per_block, blocks)
            return made[4]

    def __reduce__(self):
        return ClassBlockBroadcasts, ()

    def __deepcopy__(self, memo):
        return ClassBlockBroadcasts()


def _release_block(broadcast) -> None:
    # A worker's Broadcast keeps the unpickled value for every later task of that (reused)
    # worker. Where the value can be reloaded from the executor's local file, drop it so the
    # worker holds one block at a time. With spark.io.encryption.enabled the worker is sent
    # every value at task start instead, and there is no file to reload from.
    if getattr(broadcast, "_path", None) is not None:
        broadcast.__dict__.pop("_value", None)


def _appended(batch: pa.RecordBatch, columns: list, names: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *columns], names=[*batch.schema.names, *names]
    )


def binary_raw_threshold(threshold: float) -> float:
    """The margin of class 1 above which a row is predicted 1 under MLlib's binary
    ``threshold``: ``log(t / (1 - t))``, -inf at 0 (every row is 1) and +inf at 1 (none is)."""
    if threshold <= 0.0:
        return -math.inf
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold / (1.0 - threshold))


def outputs_from_margins(
    margins: np.ndarray,
    thresholds: list[float] | None = None,
    threshold: float | None = None,
    model_loss: loss.Loss | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rawPrediction, probability and prediction of rows from their margins ``X W^T + b``.

    Parameters
    ----------
    margins : numpy.ndarray
        Rows x K margins. One column is MLlib's binomial model, margin m: its rawPrediction
        is [-m, m] and its probability [1 - sigmoid(m), sigmoid(m)] (computed as MLlib does).
        Otherwise the probability is the softmax of the margins.
    thresholds : list of float, optional
        MLlib's per-class thresholds: the class maximizing ``p_k / t_k``.
    threshold : float, optional
        MLlib's binary threshold, for models of two classes: a row is 1 when its probability
        of class 1 exceeds it, decided on the margin of class 1 against class 0 as MLlib's
        binomial model does. It takes the place of ``thresholds``. A multi-label model
        predicts each label whose probability exceeds it.
    model_loss : Loss, optional
        The model's family; by default read from its rows as MLlib does (one is binomial).

    Returns
    -------
    tuple of numpy.ndarray
        (rows x 2-or-K raw margins, the same shape of probabilities, rows predictions: a
        multi-label model's are label sets, a rows x K CSR matrix).

    Examples
    --------
    >>> import numpy as np
    >>> raw, probability, prediction = outputs_from_margins(np.array([[2.0], [-1.0]]),
    ...                                                     threshold=0.9)
    >>> raw[0].tolist(), prediction.tolist()
    ([-2.0, 2.0], [0.0, 0.0])
    >>> outputs_from_margins(np.array([[2.0], [-1.0]]), threshold=0.0)[2].tolist()
    [1.0, 1.0]
    """
    model_loss = model_loss or loss.of_model(margins.shape[1])
    raw, probability, class_one = model_loss.outputs(margins)
    if threshold is not None and class_one is not None:
        with np.errstate(invalid="ignore"):
            prediction = (class_one > binary_raw_threshold(threshold)).astype(np.float64)
    else:
        prediction = model_loss.predictions(probability, thresholds, threshold)
    return raw, probability, prediction


# The ranking outputs: the top-k classes, their probabilities, their labels.
RANKING_KINDS = ("top_k", "top_k_probability", "top_k_labels")
# Classes scored at a time when no K-wide column is wanted (see _closure_scorer).
RANKING_CLASSES_PER_BLOCK = 4096


def _lists(matrix: np.ndarray) -> pa.ListArray:
    """Rows of ``matrix`` as Arrow lists (Spark's ``array<...>``)."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))


def _label_set_lists(sets) -> pa.ListArray:
    """Label sets (a rows x K CSR matrix) as Arrow lists of label indices (``array<double>``)."""
    return pa.ListArray.from_arrays(
        pa.array(sets.indptr.astype(np.int32)), pa.array(sets.indices.astype(np.float64))
    )


def _output_columns(kinds, raw, probability, prediction, top=None, labels=None) -> list:
    """The Arrow columns of ``kinds``; ``top`` is the rows' (top-k classes, probabilities)."""
    columns = []
    for kind in kinds:
        if kind == "prediction":
            single = isinstance(prediction, np.ndarray)  # else label sets
            columns.append(pa.array(prediction) if single else _label_set_lists(prediction))
        elif kind == "top_k":
            columns.append(_lists(top[0]))
        elif kind == "top_k_probability":
            columns.append(_lists(top[1]))
        elif kind == "top_k_labels":
            columns.append(_lists(np.asarray(labels, dtype=object)[top[0].astype(np.int64)]))
        else:
            columns.append(_dense_vectors(raw if kind == "raw" else probability))
    return columns


class _InMemoryBlock:
    """A class block held by the task itself, read as a broadcast block is."""

    def __init__(self, value):
        self.value = value


def _closure_scorer(
    W, b, *, features, kinds, names, thresholds, threshold, top_k=0, labels=None, model_loss=None
):
    num_features = W.shape[1]
    ranking = any(kind in RANKING_KINDS for kind in kinds)
    if "raw" not in kinds and "probability" not in kinds and W.shape[0] > 2:
        # No K-wide column wanted: score in class blocks, so that no row's K margins are ever
        # held at once (a many-class model's batch would hold rows x K of them).
        starts = list(range(0, W.shape[0], RANKING_CLASSES_PER_BLOCK))
        blocks = [
            _InMemoryBlock(
                (W[s : s + RANKING_CLASSES_PER_BLOCK], b[s : s + RANKING_CLASSES_PER_BLOCK])
            )
            for s in starts
        ]
        return _block_scorer(
            blocks, starts, W.shape, features=features, kinds=kinds, names=names,
            thresholds=thresholds, threshold=threshold, top_k=top_k, labels=labels,
            model_loss=model_loss,
        )  # fmt: skip

    chunk = wide_chunk_rows(W.shape[0])  # (the driver's value, in the closure)

    def score(batches):
        for batch in _row_chunks(batches, chunk):
            column = batch.column(features)
            if _has_sparse_rows(column):
                margins = numerics.sparse_raw_margins(W, b, vectors_to_csr(column, num_features))
            else:
                margins = numerics.raw_margins(W, b, vectors_to_dense(column, num_features))
            outputs = outputs_from_margins(margins, thresholds, threshold, model_loss)
            top = loss.top_k(outputs[0], outputs[1], top_k) if ranking else None
            yield _appended(batch, _output_columns(kinds, *outputs, top, labels), names)

    return score


def _block_scorer(
    blocks, starts, shape, *, features, kinds, names, thresholds, threshold, top_k=0, labels=None,
    model_loss=None, group_bytes=0,
):  # fmt: skip
    num_classes, num_features = shape
    model_loss = model_loss or loss.of_model(num_classes)
    # A model of one or two rows is finished from its whole margins, which are only as wide.
    few = num_classes <= 2
    wide = "raw" in kinds or "probability" in kinds or few
    ranking = any(kind in RANKING_KINDS for kind in kinds)
    chunk = wide_chunk_rows(num_classes) if wide else None  # (the driver's, in the closure)

    def score(batches):
        if wide:
            groups = ([piece] for piece in _row_chunks(batches, chunk))
        else:
            groups = _batch_groups(batches, group_bytes)
        for group in groups:
            yield from score_group(group)

    def score_group(group):
        """Score a group of batches, reading each class block once for all of them."""
        scored = []  # per batch: (rows, how to score them, running statistics, K-wide margins)
        for batch in group:
            column = batch.column(features)
            if _has_sparse_rows(column):
                rows, margins_of = vectors_to_csr(column, num_features), numerics.sparse_raw_margins
            else:
                rows, margins_of = vectors_to_dense(column, num_features), numerics.raw_margins
            running = None
            if not few:
                running = model_loss.running(
                    batch.num_rows, thresholds, threshold, top_k if ranking else 0
                )
            raw = np.empty((batch.num_rows, num_classes)) if wide else None
            scored.append((rows, margins_of, running, raw))
        for start, block in zip(starts, blocks):
            W_block, b_block = block.value
            for rows, margins_of, running, raw in scored:
                margins = margins_of(W_block, b_block, rows)
                if running is not None:
                    running.add(margins, start)
                if wide:
                    raw[:, start : start + margins.shape[1]] = margins
                del margins
            del W_block, b_block
            _release_block(block)
        for batch, (_, _, running, raw) in zip(group, scored):
            if few:
                outputs = outputs_from_margins(raw, thresholds, threshold, model_loss)
                top = loss.top_k(outputs[0], outputs[1], top_k) if ranking else None
                yield _appended(batch, _output_columns(kinds, *outputs, top, labels), names)
                continue
            top = running.top() if ranking else None
            probability = None
            if "probability" in kinds:
                # The rawPrediction column shares the margins' buffer (Arrow takes numpy
                # arrays without a copy), so only without it may the probabilities reuse it.
                out = raw if "raw" not in kinds else None
                probability = running.probabilities(raw, out=out)
            prediction = running.predictions() if "prediction" in kinds else None
            columns = _output_columns(kinds, raw, probability, prediction, top, labels)
            yield _appended(batch, columns, names)

    return score


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
    threshold: float | None = None,
    block_bytes: int | None = None,
    class_blocks: ClassBlockBroadcasts | None = None,
    top_k: int = 5,
    top_k_col: str = "",
    top_k_probability_col: str = "",
    top_k_labels_col: str = "",
    labels: list[str] | None = None,
    model_loss: loss.Loss | None = None,
):
    """Append rawPrediction / probability (vectors) and prediction (double) to ``dataset``,
    and the top-k ranking columns that are asked for.

    Parameters
    ----------
    dataset : pyspark.sql.DataFrame
        Rows with a vector column ``features``.
    W, b : numpy.ndarray
        The model: K x D coefficients and K intercepts; one row is MLlib's binomial model
        (see :func:`outputs_from_margins`).
    features : str
        Name of the feature vector column.
    raw_col, probability_col, prediction_col : str
        Names of the output columns; an empty name skips that output, as in MLlib.
    thresholds : list of float or None
        MLlib's per-class thresholds for the prediction.
    threshold : float, optional
        MLlib's binary threshold, for models of two classes (it takes the place of
        ``thresholds``): a row is 1 when its probability of class 1 exceeds it.
    block_bytes : int, optional
        Broadcast the model in class blocks of at most this many bytes (at least one class
        each). By default a model travels in the task closure unless it is larger than
        :func:`scoring_block_bytes` allows.
    class_blocks : ClassBlockBroadcasts, optional
        Where the model keeps its broadcast blocks between calls; without it each call that
        scores in blocks broadcasts the model anew.
    top_k : int
        How many classes the ranking columns hold per row (all of them if there are fewer).
    top_k_col, top_k_probability_col, top_k_labels_col : str
        Names of the ranking columns, empty to skip one: the ``top_k`` most probable classes
        best first (``array<double>`` of class indices, as pyspark's ``RankingEvaluator``
        takes them), their probabilities, and their ``labels``.
    labels : list of str, optional
        The class labels (``StringIndexer``'s), which ``top_k_labels_col`` needs.
    model_loss : Loss, optional
        The model's family; by default read from its rows as MLlib does. A multi-label
        model's prediction column is ``array<double>``, each row's predicted label set.

    Returns
    -------
    pyspark.sql.DataFrame
        ``dataset`` with the requested output columns appended.

    Notes
    -----
    Spark Connect has no broadcast variables, so there the model always travels in the task
    closure (with a warning when it would have been scored in blocks). Without the K-wide
    columns (rawPrediction and probability) a model of more than two classes is scored a
    block of classes at a time, merging a running top-k, so no row's K margins are held at
    once. Block scoring predicts
    the class of the largest margin (``raw_k - log t_k`` with thresholds), which ranks classes
    as the probabilities do; only margins that tie to rounding can tip it another way.
    """
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

    outputs = [
        (name, kind)
        for name, kind in (
            (raw_col, "raw"),
            (probability_col, "probability"),
            (prediction_col, "prediction"),
            (top_k_col, "top_k"),
            (top_k_probability_col, "top_k_probability"),
            (top_k_labels_col, "top_k_labels"),
        )
        if name
    ]
    if top_k_labels_col and not labels:
        raise ValueError(
            f"topKLabelsCol is '{top_k_labels_col}' but the model has no class labels: they "
            "come from the label column's metadata, as StringIndexer writes it, when the model "
            "is fitted. Fit on a StringIndexer's output column, or use topKCol for class "
            "indices."
        )
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
    if block_bytes is not None and block_bytes <= 0:
        raise ValueError(f"block_bytes must be a positive number of bytes. Got {block_bytes}.")

    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    num_classes, num_features = W.shape
    check_columns(dataset.schema, features, None, None)
    column = f"__svb_{dataset.columns.index(features)}"  # its positional name (below)
    names = [name for name, _ in outputs]
    kinds = [kind for _, kind in outputs]
    spark = dataset.sparkSession
    model_bytes = W.nbytes + b.nbytes
    if block_bytes is None:
        block_bytes = scoring_block_bytes(model_bytes, _python_memory(spark))
    sc = spark_context(spark) if block_bytes is not None else None
    if block_bytes is None or sc is None:
        if block_bytes is not None:
            warnings.warn(
                f"The model is {model_bytes} bytes ({num_classes} classes x {num_features} "
                "features), large enough to score in broadcast class blocks, but Spark Connect "
                "has no broadcast variables, so every scoring task unpickles the whole model "
                "from its closure. Score on a classic SparkSession if the executors' Python "
                "workers run out of memory.",
                stacklevel=3,
            )
        score = _closure_scorer(
            W,
            b,
            features=column,
            kinds=kinds,
            names=names,
            thresholds=thresholds,
            threshold=threshold,
            top_k=top_k,
            labels=labels,
            model_loss=model_loss,
        )
    else:
        classes_per_block = max(1, block_bytes // ((num_features + 1) * W.itemsize))
        blocks = (class_blocks or ClassBlockBroadcasts()).broadcasts(sc, W, b, classes_per_block)
        score = _block_scorer(
            blocks,
            list(range(0, num_classes, classes_per_block)),
            (num_classes, num_features),
            features=column,
            kinds=kinds,
            names=names,
            thresholds=thresholds,
            threshold=threshold,
            top_k=top_k,
            labels=labels,
            model_loss=model_loss,
            group_bytes=block_bytes,
        )

    # mapInArrow looks every column of its frame up by a parsed name, which a name with a dot
    # or a backtick does not survive: the frame is scored under positional names, and its
    # names (and their metadata) come back after.
    types = {
        "raw": VectorUDT(),
        "probability": VectorUDT(),
        "prediction": ArrayType(DoubleType())
        if model_loss and model_loss.label_sets
        else DoubleType(),
        "top_k": ArrayType(DoubleType()),
        "top_k_probability": ArrayType(DoubleType()),
        "top_k_labels": ArrayType(StringType()),
    }
    positional = [f"__svb_{i}" for i in range(len(dataset.columns))]
    schema = StructType(
        [*(StructField(p, f.dataType, f.nullable, f.metadata)
           for p, f in zip(positional, dataset.schema.fields)),
         *(StructField(name, types[kind]) for name, kind in outputs)]
    )  # fmt: skip
    scored = dataset.toDF(*positional).mapInArrow(score, schema)
    return scored.toDF(*dataset.columns, *names)
