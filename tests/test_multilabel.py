"""Multi-label rows: K independent sigmoids trained in one fit (:class:`MultiLabel`), rows'
label sets kept sparse, every replica equal, against the single-process reference."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from svb_spark.core.multilabel import MULTILABEL, label_sets
from svb_spark.testing import train_in_process
from tests.support.compare import assert_judged_alike
from tests.support.data import tagged_frame, training_config
from tests.support.reference import reference_sgd

K = 5


def tagged_blobs(seed=0, rows=(130, 101, 77), D=6):
    """Uneven partitions of rows with 0 to K labels each, a label where a planted teacher's
    noisy margin is positive: [(X, label sets, weights), ...]."""
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(K, D))
    parts = []
    for n in rows:
        X = rng.normal(2.0, 3.0, size=(n, D))
        on = X @ teacher.T + rng.logistic(size=(n, K)) - 2.0 > 0
        parts.append((X, label_sets([np.flatnonzero(r) for r in on], K, np.float64),
                      rng.uniform(0.2, 3.0, size=n)))  # fmt: skip
    return parts


def test_the_vectors_are_the_gradient_of_the_loss_sum():
    rng = np.random.default_rng(1)
    margins = rng.normal(size=(30, K))
    y = label_sets([rng.choice(K, rng.integers(0, 3), replace=False) for _ in range(30)], K)
    w = rng.uniform(0.5, 2.0, size=30)
    U, loss_sum = MULTILABEL.vectors(margins.copy(), y, w)
    dense = y.toarray()
    expected = w * (np.logaddexp(0.0, margins) - dense * margins).sum(axis=1)
    assert loss_sum == pytest.approx(expected.sum(), rel=1e-12)
    np.testing.assert_allclose(U, w[:, None] * (1 / (1 + np.exp(-margins)) - dense), rtol=1e-12)


def test_a_row_counts_as_correct_in_proportion_to_its_f1():
    y = label_sets([[0, 2], [], [1], [3]], K)
    margins = np.full((4, K), -3.0)
    margins[0, [0, 2]] = 2.0  # exactly its labels: F1 1
    margins[2, [0, 1]] = 1.0  # one label too many: F1 2/3
    w = np.array([1.0, 2.0, 4.0, 8.0])  # row 1 has none and predicts none (1); row 3 misses (0)
    U, _ = MULTILABEL.vectors(margins, y, w)
    assert MULTILABEL.correct_weight(U, y, w) == pytest.approx(1.0 + 2.0 + 4.0 * 2 / 3)


@pytest.mark.parametrize("solver", ["sgd", "asgd", "saga", "lbfgs"])
def test_one_fit_trains_every_label_as_the_single_process_reference(solver):
    parts = tagged_blobs()
    config = training_config(parts, num_classes=K, loss=MULTILABEL, solver=solver,
                             exchange="p2p" if solver == "sgd" else "dense")  # fmt: skip
    digests = {}

    def record(rank, step, W, b):
        digests.setdefault(step, set()).add(hashlib.sha256(W.tobytes() + b.tobytes()).digest())

    results = train_in_process(parts, config, on_exchange=record)
    assert digests and all(len(seen) == 1 for seen in digests.values())  # identical replicas
    W, b, history = reference_sgd(parts, config)
    np.testing.assert_allclose(results[0].W, W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].b, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)
    assert history[-1] < history[0]


@pytest.mark.parametrize("exchange", ["p2p", "sharded"])
def test_sgd_starts_from_each_labels_log_odds_as_the_reference(exchange):
    from svb_spark.core.solvers.lbfgs import mllib_intercepts

    parts = tagged_blobs()
    config = training_config(parts, num_classes=K, loss=MULTILABEL, exchange=exchange)
    Y = np.concatenate([y.toarray() for _, y, _ in parts])
    w = np.concatenate([w for _, _, w in parts])
    start = mllib_intercepts(config, w @ Y, float(w.sum()))
    np.testing.assert_allclose(start, np.log((w @ Y + 0.5) / (w.sum() - w @ Y + 0.5)))
    config = dataclasses.replace(config, start_intercepts=start, max_iter=1)
    results = train_in_process(parts, config)
    b = np.concatenate([r.b for r in results]) if exchange == "sharded" else results[0].b
    W_ref, b_ref, history = reference_sgd(parts, config)
    np.testing.assert_allclose(b, b_ref, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(results[0].objective_history, history, rtol=1e-9)
    zero = train_in_process(parts, dataclasses.replace(config, start_intercepts=None))[0]
    assert zero.objective_history[0] > history[0]  # the base rates start closer


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("holdout", [0.0, 0.2])
def test_the_class_sharded_mode_trains_and_judges_blocks_of_labels_as_replicas_do(
    holdout, sparse, monkeypatch
):
    # Blocks of labels need no normalizer from each other; the held-out rows (a validation
    # column, judged by loss, or the fraction, by the rows' mean F1) are judged 7 at a time.
    from scipy import sparse as sp

    monkeypatch.setattr("svb_spark.core.solvers.sharded.HELD_OUT_ROWS", 7)
    dense = [(np.abs(X), y, w) for X, y, w in tagged_blobs()]
    parts = [(sp.csr_matrix(X), y, w) for X, y, w in dense] if sparse else dense
    masks = [np.random.default_rng(r).random(y.shape[0]) < 0.2 for r, (_, y, _) in enumerate(parts)]
    partitions = [(*part, mask) for part, mask in zip(parts, masks)]
    config = training_config(
        dense, num_classes=K, loss=MULTILABEL, max_iter=12, reg_param=0.0, validation_tol=0.01,
        holdout_fraction=holdout, **({"sparse": True, "mean": None} if sparse else {}),
    )  # fmt: skip
    replicated = train_in_process(partitions, config)[0]
    sharded = train_in_process(partitions, dataclasses.replace(config, exchange="sharded"))
    assert_judged_alike(sharded, replicated)


def test_a_sharded_message_carries_label_sets_as_their_labels_alone():
    from svb_spark.core import wire

    y = label_sets([[3], [], [0, 4]], K)
    message = wire.ShardMessage(2, 1, X=np.ones((3, 2)), y=y, w=np.ones(3), num_features=2,
                                num_labels=K)  # fmt: skip
    batch = wire.encode_shard(message)
    assert {"y_indptr", "y_indices"} <= set(batch.schema.names) and "y" not in batch.schema.names
    back = wire.decode_shard(batch)
    assert back.y.shape == (3, K) and (back.y != y).nnz == 0
    np.testing.assert_array_equal(back.X, message.X)


# On Spark: a label column of array<double> (each row's label indices) trains multi-label.

LABELS = 3


def test_a_multilabel_fit_is_mllibs_binomial_fit_of_each_label(spark, tmp_path):
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import MultilabelClassificationEvaluator, RankingEvaluator
    from pyspark.sql import functions as F

    from svb_spark import SVBLogisticRegression, SVBLogisticRegressionModel

    frame, X = tagged_frame(spark)
    model = SVBLogisticRegression(numWorkers=2, regParam=0.05, topKCol="topK", topK=2).fit(frame)
    assert model.getFamily() == "multilabel" and model.numClasses == LABELS
    W, b = model.coefficientMatrix.toArray(), model.interceptVector.toArray()
    # With independent sigmoids the objective splits by label: each row of W is MLlib's
    # binomial model of that label, at the same regParam (same session, same rows).
    for k in range(LABELS):
        one = frame.withColumn("y", F.array_contains("label", float(k)).cast("double"))
        mllib = LogisticRegression(regParam=0.05, labelCol="y").fit(one)
        scale = np.abs(mllib.coefficients.toArray()).max()
        np.testing.assert_allclose(W[k], mllib.coefficients.toArray(), atol=2e-3 * scale)
        assert b[k] == pytest.approx(mllib.intercept, abs=2e-3 * max(abs(mllib.intercept), 1))

    scored = model.transform(frame).cache()
    rows = scored.select("prediction", "probability", "topK").collect()
    probability = 1.0 / (1.0 + np.exp(-(X @ W.T + b)))
    np.testing.assert_allclose([r.probability.toArray() for r in rows], probability, rtol=1e-9)
    assert [r.prediction for r in rows] == [np.flatnonzero(p > 0.5).astype(float).tolist()
                                            for p in probability]  # fmt: skip
    assert [r.topK for r in rows] == [np.argsort(-p, kind="stable")[:2].astype(float).tolist()
                                      for p in probability]  # fmt: skip

    # pyspark's evaluators take the columns as they are; the summary agrees with them where
    # MLlib's metrics are defined (on rows that carry labels: MLlib divides 0 by 0 on the rest).
    evaluator = MultilabelClassificationEvaluator()
    summary = model.summary
    for metric in ("microF1Measure", "subsetAccuracy", "hammingLoss", "microPrecision"):
        expected = evaluator.setMetricName(metric).evaluate(scored)
        assert getattr(summary, metric) == pytest.approx(expected, rel=1e-12), metric
    labeled = scored.where(F.size("label") > 0)
    on_labeled = model.evaluate(labeled.select("features", "label"))
    for metric in ("accuracy", "recall", "f1Measure", "precision"):
        expected = evaluator.setMetricName(metric).evaluate(labeled)
        assert getattr(on_labeled, metric) == pytest.approx(expected, rel=1e-12), metric
    assert 0.5 < summary.microF1Measure < 1.0  # learned, and not trivially
    precision = RankingEvaluator(predictionCol="topK", metricName="precisionAtK", k=2)
    assert 0.0 < precision.evaluate(scored) <= 1.0
    assert summary.precisionAtK(2) == pytest.approx(precision.evaluate(scored), rel=1e-12)
    with pytest.raises(ValueError, match="precisionAtK takes k from 1 to 5"):
        summary.precisionAtK(6)

    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = SVBLogisticRegressionModel.load(str(tmp_path / "m"))
    assert loaded.getFamily() == "multilabel"
    assert (
        loaded.transform(frame).select("prediction").collect()
        == scored.select("prediction").collect()
    )
    with pytest.raises(ValueError, match="MLlib has no multi-label"):
        model.toMLlib()
    scored.unpersist()


def test_multilabel_refusals_name_the_column_and_the_fix(spark):
    from pyspark.sql import functions as F

    from svb_spark import SVBLogisticRegression

    frame, _ = tagged_frame(spark, rows=60)
    with pytest.raises(ValueError, match="'label' holds label sets .* binomial family"):
        SVBLogisticRegression(family="binomial", numWorkers=2).fit(frame)
    single = frame.withColumn("label", F.size("label").cast("double"))  # one label a row
    with pytest.raises(ValueError, match="family='multilabel' trains on label sets"):
        SVBLogisticRegression(family="multilabel", numWorkers=2).fit(single)
    with pytest.raises(ValueError, match="has the label 2, but numClasses is 2"):
        SVBLogisticRegression(numClasses=2, numWorkers=2).fit(frame)
    nulls = frame.withColumn("label", F.when(F.rand(0) < 0.5, F.col("label")))
    with pytest.raises(ValueError, match="null label set"):
        SVBLogisticRegression(numWorkers=2).fit(nulls)
    empty = frame.withColumn("label", F.array().cast("array<double>"))
    with pytest.raises(ValueError, match="holds no label: every one of the 60 row"):
        SVBLogisticRegression(numWorkers=2).fit(empty)
    fractional = frame.withColumn("label", F.array(F.lit(0.0), F.lit(1.5)))
    with pytest.raises(ValueError, match="in every label set; found 1.5"):
        SVBLogisticRegression(numWorkers=2).fit(fractional)


def test_rows_held_out_by_the_fraction_judge_a_multilabel_fit_by_their_mean_f1():
    parts = tagged_blobs(rows=(300, 300))
    config = training_config(parts, num_classes=K, loss=MULTILABEL, holdout_fraction=0.2,
                             validation_tol=0.01, max_iter=10, reg_param=0.0)  # fmt: skip
    partitions = [(*part, np.random.default_rng(r).random(300) < 0.2)
                  for r, part in enumerate(parts)]  # fmt: skip
    result = train_in_process(partitions, config)[0]
    f1 = result.validation_accuracy
    assert len(f1) >= 2 and result.best_epoch == int(np.argmax(f1))
    assert int(np.argmin(result.validation_history)) != result.best_epoch  # not by the loss


def test_every_exchange_mode_trains_a_multilabel_fit_on_spark_alike(spark):
    from svb_spark import SVBLogisticRegression

    frame, _ = tagged_frame(spark, rows=300)
    fits = {
        exchange: SVBLogisticRegression(numWorkers=2, solver="sgd", maxIter=4, tol=0.0,
                                        exchange=exchange, validationFraction=0.0).fit(frame)
        for exchange in ("p2p", "sharded", "broadcast", "dense")
    }  # fmt: skip
    p2p = fits.pop("p2p")
    expected = p2p.coefficientMatrix.toArray()
    for exchange, model in fits.items():
        assert model.summary.exchange == exchange and model.getFamily() == "multilabel"
        W = model.coefficientMatrix.toArray()
        np.testing.assert_allclose(W, expected, rtol=1e-4, atol=1e-6, err_msg=exchange)
        history = model.summary.objectiveHistory
        np.testing.assert_allclose(history, p2p.summary.objectiveHistory, rtol=1e-5)
    # A warm start goes on from a multi-label model: 4 more epochs from p2p's end.
    warm = SVBLogisticRegression(numWorkers=2, solver="sgd", maxIter=4, tol=0.0,
                                 validationFraction=0.0, initialModel=p2p).fit(frame)  # fmt: skip
    assert warm.summary.objectiveHistory[0] < p2p.summary.objectiveHistory[0]
