"""Scoring a model in broadcast class blocks agrees with scoring it whole from the task closure."""

from __future__ import annotations

import numpy as np
import pytest

from svb_spark import SVBLogisticRegressionModel
from svb_spark.core.loss import MULTINOMIAL, RunningSoftmax, predictions_from_probabilities
from svb_spark.spark import scoring
from svb_spark.spark.scoring import add_prediction_columns, scoring_block_bytes
from tests.support.data import to_frame

K, D = 7, 5
CLASS_BYTES = (D + 1) * 8  # one class of the model: its coefficients and intercept


def model_and_rows(seed=3, n=60):
    """A K-class model and rows whose largest margins fall in different blocks."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(K, D))
    b = rng.normal(size=K)
    X = rng.normal(size=(n, D))
    X[rng.random(size=X.shape) < 0.4] = 0.0  # zeros, so the sparse copy is really sparse
    X[::5] *= 8.0  # peaked rows: far larger margins, often in a late block
    return W, b, X


def blocks_of(*sizes):
    starts = np.cumsum([0, *sizes])
    return [(int(a), int(z)) for a, z in zip(starts[:-1], starts[1:])]


@pytest.mark.parametrize("thresholds", [None, [0.3, 0.1, 0.5, 0.2, 0.9, 0.4, 0.6]])
def test_running_softmax_matches_the_one_shot_softmax(thresholds):
    rng = np.random.default_rng(0)
    raw = rng.normal(scale=3.0, size=(40, K))
    raw[:10, 5:] += 60.0  # the last block's max is far above the earlier blocks'
    raw[10:20, :2] += 60.0  # the first block's is
    raw[20, :] = 1.5  # a tie everywhere: the lowest class wins
    running = RunningSoftmax(len(raw), thresholds)
    for start, stop in blocks_of(2, 3, 2):
        running.add(raw[:, start:stop], start)

    shifted = raw - raw.max(axis=1, keepdims=True)
    expected_lse = raw.max(axis=1) + np.log(np.exp(shifted).sum(axis=1))
    np.testing.assert_allclose(running.log_sum_exp(), expected_lse, rtol=1e-12)
    probability = MULTINOMIAL.outputs(raw)[1]
    np.testing.assert_allclose(running.probabilities(raw), probability, rtol=1e-12, atol=1e-15)
    expected = predictions_from_probabilities(probability, thresholds)
    np.testing.assert_array_equal(running.predictions(), expected)
    if thresholds is None:
        assert running.predictions()[20] == 0.0
        assert set(running.predictions()[:10]) <= {5.0, 6.0}


def test_running_softmax_zero_threshold_and_nan_rows_follow_mllibs_rule():
    raw = np.array([[5.0, 0.0, -1.0, 2.0], [0.0, 9.0, 1.0, -40.0], [np.nan, 0.0, 1.0, 2.0]])
    for thresholds in ([0.5, 0.5, 0.0, 0.5], [0.0, 0.2, 0.5, 0.3], None):
        running = RunningSoftmax(len(raw), thresholds)
        running.add(raw[:, :1], 0)
        running.add(raw[:, 1:3], 1)
        running.add(raw[:, 3:], 3)
        with np.errstate(invalid="ignore"):
            expected = predictions_from_probabilities(MULTINOMIAL.outputs(raw)[1], thresholds)
        np.testing.assert_array_equal(running.predictions(), expected)


def test_block_rule_uses_the_fixed_limit_or_a_share_of_python_memory():
    assert scoring_block_bytes(scoring.SCORE_IN_BLOCKS_ABOVE) is None
    assert scoring_block_bytes(scoring.SCORE_IN_BLOCKS_ABOVE + 1) == scoring.CLASS_BLOCK_BYTES
    python_memory = 512 << 20  # a model above a quarter of it is scored in eighths of it
    assert scoring_block_bytes(128 << 20, python_memory) is None
    assert scoring_block_bytes((128 << 20) + 1, python_memory) == 64 << 20
    assert scoring_block_bytes((16 << 20) + 1, 64 << 20) == 8 << 20


@pytest.fixture
def broadcasts(spark, monkeypatch):
    """Every value the driver broadcasts while the test runs."""
    sc = spark.sparkContext
    made = []

    def counting(value):
        made.append(value)
        return broadcast(value)

    broadcast = sc.broadcast
    monkeypatch.setattr(sc, "broadcast", counting)
    return made


def scored(df, W, b, columns, thresholds, **options):
    """(raw, probability, prediction) arrays, None for a column not asked for."""
    names = dict(zip(("raw", "probability", "prediction"), columns))
    out = add_prediction_columns(
        df,
        W,
        b,
        features="features",
        raw_col=names["raw"],
        probability_col=names["probability"],
        prediction_col=names["prediction"],
        thresholds=thresholds,
        **options,
    )
    rows = out.orderBy("id").collect()
    return tuple(
        np.array([row[name].toArray() if kind != "prediction" else row[name] for row in rows])
        if name
        else None
        for kind, name in names.items()
    )


CASES = [  # sparse rows, thresholds, (rawPredictionCol, probabilityCol, predictionCol), classes
    (False, None, ("raw", "probability", "prediction"), 2),
    (True, None, ("raw", "probability", "prediction"), 3),
    (False, [0.2, 0.1, 0.0, 0.3, 0.5, 0.1, 0.4], ("", "", "prediction"), 2),
    (True, [0.2, 0.1, 0.3, 0.3, 0.5, 0.1, 0.4], ("", "probability", "prediction"), 3),
    (False, None, ("raw", "", "prediction"), 3),
    (True, [0.5, 0.1, 0.3, 0.3, 0.0, 0.1, 0.4], ("", "", "prediction"), 2),
    (False, [0.5, 0.1, 0.3, 0.3, 0.2, 0.1, 0.4], ("raw", "probability", ""), 2),
]


@pytest.mark.parametrize("sparse, thresholds, columns, classes_per_block", CASES)
def test_block_path_scores_as_the_closure_path(
    spark, broadcasts, sparse, thresholds, columns, classes_per_block
):
    W, b, X = model_and_rows()
    df = to_frame(spark, X, np.zeros(len(X)), sparse=sparse, extra={"id": np.arange(len(X))})

    whole = scored(df, W, b, columns, thresholds)
    assert broadcasts == []  # a small model travels in the closure
    blocked = scored(df, W, b, columns, thresholds, block_bytes=classes_per_block * CLASS_BYTES)

    starts = range(0, K, classes_per_block)
    assert len(broadcasts) == len(starts)
    for start, (W_block, b_block) in zip(starts, broadcasts):
        np.testing.assert_array_equal(W_block, W[start : start + classes_per_block])
        np.testing.assert_array_equal(b_block, b[start : start + classes_per_block])
    for expected, got in zip(whole, blocked):
        assert (expected is None) == (got is None)
        if expected is not None:
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    if columns[2]:
        # A zero threshold makes its class win every row (MLlib's rule); otherwise the rows
        # predict several classes, so a block mixing them up would show.
        if thresholds is not None and 0.0 in thresholds:
            assert set(whole[2]) == {float(thresholds.index(0.0))}
        else:
            assert len(set(whole[2])) > 2


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("block_bytes", [None, 3 * CLASS_BYTES])
def test_k_wide_outputs_are_built_for_a_few_rows_at_a_time_with_the_same_values(
    spark, broadcasts, monkeypatch, sparse, block_bytes
):
    # At many classes a whole Arrow batch's K-wide outputs would not fit a worker: rows are
    # scored in slices of at most WIDE_CHUNK_BYTES of them, here 4 rows (the driver's value
    # travels with the scorer).
    W, b, X = model_and_rows()
    df = to_frame(spark, X, np.zeros(len(X)), sparse=sparse, extra={"id": np.arange(len(X))})
    columns = ("raw", "probability", "prediction")
    whole = scored(df, W, b, columns, None, block_bytes=block_bytes)
    monkeypatch.setattr(scoring, "WIDE_CHUNK_BYTES", 4 * K * 8)
    assert scoring.wide_chunk_rows(K) == 4
    sliced = scored(df, W, b, columns, None, block_bytes=block_bytes)
    for expected, got in zip(whole, sliced):
        np.testing.assert_array_equal(got, expected)


def test_row_chunks_are_zero_copy_slices_that_decode_as_their_rows():
    import pyarrow as pa

    from svb_spark.spark.data import vectors_to_csr, vectors_to_dense

    W, b, X = model_and_rows(n=10)
    rows = pa.array([{"type": 1, "size": None, "indices": None, "values": list(x)} for x in X])
    batch = pa.RecordBatch.from_arrays([rows], names=["features"])
    chunks = list(scoring._row_chunks([batch], 4))
    assert [c.num_rows for c in chunks] == [4, 4, 2]
    for start, chunk in zip((0, 4, 8), chunks):
        column = chunk.column("features")
        np.testing.assert_array_equal(vectors_to_dense(column, D), X[start : start + 4])
        np.testing.assert_array_equal(vectors_to_csr(column, D).toarray(), X[start : start + 4])


def test_model_broadcasts_its_blocks_once_for_every_transform(spark, broadcasts, monkeypatch):
    W, b, X = model_and_rows(seed=5)
    df = to_frame(spark, X, np.zeros(len(X)), extra={"id": np.arange(len(X))})
    model = SVBLogisticRegressionModel(W, b)
    expected = model.transform(df).orderBy("id").collect()
    assert broadcasts == []

    monkeypatch.setattr(scoring, "SCORE_IN_BLOCKS_ABOVE", 2 * CLASS_BYTES)
    monkeypatch.setattr(scoring, "CLASS_BLOCK_BYTES", 3 * CLASS_BYTES)
    first = model.transform(df)
    again = model.copy().transform(df)  # a copy shares the arrays and so the blocks
    assert len(broadcasts) == 3
    for result in (first, again):
        for want, got in zip(expected, result.orderBy("id").collect()):
            assert got.prediction == want.prediction
            np.testing.assert_allclose(
                got.probability.toArray(), want.probability.toArray(), rtol=1e-9
            )
            np.testing.assert_allclose(
                got.rawPrediction.toArray(), want.rawPrediction.toArray(), rtol=1e-9
            )


def test_block_bytes_must_be_positive(spark):
    W, b, X = model_and_rows()
    df = to_frame(spark, X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="block_bytes must be a positive"):
        add_prediction_columns(
            df,
            W,
            b,
            features="features",
            raw_col="raw",
            probability_col="",
            prediction_col="prediction",
            thresholds=None,
            block_bytes=0,
        )


class _CountedBlock:
    """A class block that counts how often a task reads (unpickles) it."""

    def __init__(self, value):
        self._value, self.reads = value, 0

    @property
    def value(self):
        self.reads += 1
        return self._value


def test_without_k_wide_columns_batches_are_scored_in_groups_reading_each_block_once():
    import pyarrow as pa

    W, b, X = model_and_rows(n=30)

    def dense_rows(rows):  # Spark ML DenseVectors in their Arrow form
        vectors = [{"type": 1, "size": None, "indices": None, "values": list(x)} for x in rows]
        return pa.RecordBatch.from_arrays([pa.array(vectors)], names=["features"])

    batches = [dense_rows(X[start : start + 10]) for start in (0, 10, 20)]
    margins = X @ W.T + b
    for group_bytes, reads in ((3 * batches[0].nbytes, 1), (batches[0].nbytes, 3), (0, 3)):
        starts = [0, 3, 6]
        blocks = [_CountedBlock((W[s : s + 3], b[s : s + 3])) for s in starts]
        score = scoring._block_scorer(
            blocks, starts, W.shape, features="features", kinds=("prediction", "top_k"),
            names=["prediction", "topK"], thresholds=None, threshold=None, top_k=3,
            group_bytes=group_bytes,
        )  # fmt: skip
        out = list(score(iter(batches)))
        assert [block.reads for block in blocks] == [reads] * 3
        assert [batch.num_rows for batch in out] == [10, 10, 10]
        prediction = np.concatenate([batch.column("prediction").to_numpy() for batch in out])
        top = np.concatenate([np.stack(batch.column("topK").to_pylist()) for batch in out])
        np.testing.assert_array_equal(prediction, margins.argmax(axis=1))
        np.testing.assert_array_equal(top, np.argsort(-margins, axis=1)[:, :3])
