"""The automatic hold-out (validationFraction): which fits hold rows out, which rows, and the
stop it gives, against the same fits training on every row."""

from __future__ import annotations

import numpy as np
import pytest

from svb_spark import SVBLogisticRegression
from svb_spark.core.solvers.auto import automatic_holdout
from svb_spark.core.stopping import HOLDOUT_MIN_ROWS

LARGE = HOLDOUT_MIN_ROWS


@pytest.mark.parametrize(
    "fraction, tol, rows, solver, mode, validation, held_out",
    [
        (0.1, 3e-3, LARGE, "sgd", "p2p", False, 0.1),
        (0.2, 3e-3, LARGE, "saga", "dense", False, 0.2),
        (0.1, 3e-3, LARGE, "asgd", "p2p", False, 0.0),  # would judge the iterate, not the mean
        (0.005, 3e-3, LARGE, "sgd", "p2p", False, 0.0),  # 50 rows judge nothing
        (0.1, 3e-3, LARGE - 1, "sgd", "p2p", False, 0.0),  # too few rows to spare
        (0.1, 0.0, LARGE, "sgd", "p2p", False, 0.0),  # tol=0 asks for maxIter epochs
        (0.0, 3e-3, LARGE, "sgd", "p2p", False, 0.0),  # switched off
        (0.1, 3e-3, LARGE, "sgd", "p2p", True, 0.0),  # a validation column wins
        (0.1, 3e-3, LARGE, "lbfgs", "p2p", False, 0.0),  # scores no held-out rows
        (0.1, 3e-3, LARGE, "sgd", "sharded", False, 0.1),
        (0.1, 3e-3, LARGE, "sgd", "broadcast", False, 0.0),
    ],
)
def test_which_fits_hold_rows_out(fraction, tol, rows, solver, mode, validation, held_out):
    assert automatic_holdout(fraction, tol, rows, solver, mode, validation) == held_out


def test_auto_picks_the_fastest_step_whether_or_not_the_fit_holds_rows_out():
    import dataclasses

    from svb_spark.core.solvers import FitFacts
    from svb_spark.core.solvers.auto import choose, holdout

    # 1000 classes of text in steps of 128 rows: the cost model predicts sharded steps faster,
    # and the sharded mode scores held-out rows too.
    text = FitFacts(1000, 1 << 14, 2, 50_000, True, 50.0, 128, "float32", tol=3e-3,
                    validation_fraction=0.1)  # fmt: skip
    every_row = dataclasses.replace(text, validation_fraction=0.0)
    assert choose(every_row).mode == "sharded"
    choice = choose(text)
    assert choice.mode == "sharded" and holdout(text, choice.solver, choice.mode) == 0.1
    # On one worker there is nothing to shard.
    assert choose(dataclasses.replace(text, num_workers=1)).mode == "p2p"


@pytest.mark.parametrize("classes", [1, 5])
def test_correct_weight_counts_the_rows_predicted_right(classes):
    from svb_spark.core.loss import BINOMIAL, MULTINOMIAL

    loss = BINOMIAL if classes == 1 else MULTINOMIAL
    rng = np.random.default_rng(classes)
    margins = rng.normal(size=(200, classes))
    y = rng.integers(0, max(classes, 2), size=200)
    w = rng.uniform(0.1, 2.0, size=200)
    U, _ = loss.vectors(margins.copy(), y, w)
    predicted = margins[:, 0] > 0 if classes == 1 else margins.argmax(axis=1)
    assert loss.correct_weight(U, y, w) == pytest.approx(w[predicted == y].sum())


def test_the_holdout_rows_judge_by_accuracy_and_a_validation_column_by_loss():
    import dataclasses

    from svb_spark.testing import train_in_process
    from tests.support.data import blobs, training_config

    parts = blobs(seed=2, rows=(300, 260))
    masks = [np.random.default_rng(r).random(len(p[1])) < 0.2 for r, p in enumerate(parts)]
    config = training_config(parts, max_iter=12, reg_param=0.0, validation_tol=0.01)
    partitions = [(*part, mask) for part, mask in zip(parts, masks)]
    for holdout, judged in ((0.0, "validation_history"), (0.2, "validation_accuracy")):
        fit = dataclasses.replace(config, holdout_fraction=holdout)
        result = train_in_process(partitions, fit)[0]
        history = getattr(result, judged)
        best = int(np.argmax(history) if holdout else np.argmin(history))
        assert len(result.validation_accuracy) == len(result.validation_history) > 0
        assert result.best_epoch == best
        if result.stop_reason != "maxIter":
            assert result.stop_reason == ("holdout" if holdout else "validation")


def test_held_out_rows_of_weight_zero_judge_nothing():
    import dataclasses

    from svb_spark.testing import train_in_process
    from tests.support.data import blobs, training_config

    parts = blobs(seed=2, rows=(300, 260))
    masks = [np.random.default_rng(r).random(len(p[1])) < 0.2 for r, p in enumerate(parts)]
    weightless = [(X, y, np.where(m, 0.0, w), m) for (X, y, w), m in zip(parts, masks)]
    config = training_config(parts, max_iter=6, validation_tol=0.01, holdout_fraction=0.2)
    result = train_in_process(weightless, dataclasses.replace(config, tol=0.0))[0]
    assert result.stop_reason == "maxIter" and result.total_iterations == 6
    assert not result.validation_history and result.best_epoch is None


def test_the_last_pass_trains_the_best_model_on_the_held_out_rows(monkeypatch):
    import dataclasses

    from svb_spark.core.solvers.stochastic import SgdSolver
    from svb_spark.testing import train_in_process
    from tests.support.data import blobs, training_config

    # Class 3 only among the held-out rows: the epochs never see it, the last pass does.
    parts = blobs(seed=2, rows=(300, 260))
    masks = [(y == 3) | (np.random.default_rng(r).random(len(y)) < 0.1) for r, (_, y, _) in
             enumerate(parts)]  # fmt: skip
    partitions = [(*part, mask) for part, mask in zip(parts, masks)]
    config = training_config(parts, max_iter=6, validation_tol=0.01, holdout_fraction=0.2)
    config = dataclasses.replace(config, reg_param=0.0)
    with_pass = train_in_process(partitions, config)[0]
    monkeypatch.setattr(SgdSolver, "begin_last_pass", lambda self: None)
    best_model = train_in_process(partitions, config)[0]

    assert with_pass.validation_accuracy == best_model.validation_accuracy
    assert with_pass.best_epoch == best_model.best_epoch
    pass_steps = max(-(-int(mask.sum()) // config.batch_size) for mask in masks)
    assert with_pass.steps == best_model.steps + pass_steps
    assert with_pass.b[3] > best_model.b[3] + 0.5  # class 3's rows were trained on

    def class_3_rows_found(result):
        X = np.concatenate([X[m] for (X, _, _), m in zip(parts, masks)])
        y = np.concatenate([y[m] for (_, y, _), m in zip(parts, masks)])
        Z = (X - config.mean) * config.scale
        return int(((Z @ result.W.T + result.b).argmax(axis=1)[y == 3] == 3).sum())

    assert class_3_rows_found(with_pass) > class_3_rows_found(best_model)


def test_the_memory_check_counts_the_best_model_held_out_rows_keep():
    from svb_spark.core.solvers import FitFacts
    from svb_spark.core.solvers.auto import check_memory

    # A 1000 x 2^14 float32 replica is 64 MiB; the best model doubles it.
    facts = dict(num_classes=1000, num_features=1 << 14, num_workers=2, num_rows=50_000,
                 sparse=True, nonzeros_per_row=50.0, batch_size=32, dtype="float32",
                 worker_memory=100 << 20, tol=3e-3)  # fmt: skip
    check_memory(FitFacts(**facts), "sgd", "p2p")
    with pytest.raises(ValueError, match=r"plus 1000 x 16384 x 4 bytes for the best model"):
        check_memory(FitFacts(**facts, validation_fraction=0.1), "sgd", "p2p")
    # Sharded, a worker keeps the best of its block: 500 classes.
    check_memory(FitFacts(**facts, validation_fraction=0.1), "sgd", "sharded")
    tight = dict(facts, worker_memory=40 << 20)
    with pytest.raises(ValueError, match=r"plus 500 x 16384 x 4 bytes for the best model"):
        check_memory(FitFacts(**tight, validation_fraction=0.1), "sgd", "sharded")


def test_the_held_out_rows_are_a_fraction_chosen_by_the_seed(spark):
    from pyspark.sql import functions as F

    from svb_spark.spark.contract import HELD_OUT, ROW_ID, training_frame

    data = spark.range(20_000).select(F.col("id").alias("features"), F.lit(0.0).alias("label"))

    def held_out(seed: int, fraction: float = 0.1) -> set[int]:
        frame = training_frame(data, "features", "label", None, 2, holdout=fraction, seed=seed)
        return {row[ROW_ID] for row in frame.where(F.col(HELD_OUT)).select(ROW_ID).collect()}

    first, again, other = held_out(1), held_out(1), held_out(2)
    assert first == again
    assert 1_800 <= len(first) <= 2_200 and 1_800 <= len(other) <= 2_200
    assert len(first & other) < 400  # independent draws share about 10% of 10%
    assert 5_600 <= len(held_out(1, 0.3)) <= 6_400


@pytest.fixture(scope="module")
def overfitting_frames(spark):
    """A many-parameter problem that SGD overfits: 40 classes x 300 features from 13,000
    noisy rows (12,000 to train), so the held-out loss turns up while the training objective
    still falls."""
    import pandas as pd
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    rng = np.random.default_rng(7)
    K, D, n = 40, 300, 13_000
    teacher = rng.normal(size=(K, D)) / np.sqrt(D) * 2.0
    X = rng.normal(size=(n, D))
    y = (X @ teacher.T + rng.gumbel(size=(n, K)) * 0.5).argmax(axis=1)

    def frame(rows: slice):
        data = pd.DataFrame({"x": list(X[rows]), "label": y[rows].astype(float)})
        vectors = array_to_vector(F.col("x")).alias("features")
        return spark.createDataFrame(data).select(vectors, "label").cache()

    train, test = frame(slice(0, 12_000)), frame(slice(12_000, None))
    return train, test


def test_a_large_sgd_fit_stops_on_the_rows_it_holds_out(spark, overfitting_frames):
    train, test = overfitting_frames
    params = dict(numWorkers=2, solver="sgd", seed=3)
    model = SVBLogisticRegression(**params).fit(train)
    every_row = SVBLogisticRegression(validationFraction=0.0, **params).fit(train)
    summary, before = model.summary, every_row.summary
    accuracy, accuracy_before = model.evaluate(test).accuracy, every_row.evaluate(test).accuracy
    print(
        f"held-out accuracy per epoch {np.round(summary.validationAccuracy, 4).tolist()}\n"
        f"held out 10%: {summary.stopReason} after {summary.totalIterations} epochs (best "
        f"{summary.bestEpoch}), accuracy {accuracy:.4f}; every row: {before.stopReason} after "
        f"{before.totalIterations} epochs, accuracy {accuracy_before:.4f}"
    )
    assert summary.stopReason == "holdout"
    assert len(summary.validationHistory) == len(summary.validationAccuracy)
    assert len(summary.validationAccuracy) == summary.totalIterations
    assert summary.bestEpoch == int(np.argmax(summary.validationAccuracy))
    assert summary.totalIterations < before.totalIterations
    assert not before.validationHistory
    # A fifth of the epochs, at some accuracy: the held-out rows are trained on only in the
    # last pass, and the stop comes on SGD's first plateau, where forty epochs of a shrinking
    # step gain a little more (here 0.460 against 0.475; 0.454 before the last pass).
    assert accuracy >= accuracy_before - 0.03
    again = SVBLogisticRegression(**params).fit(train)  # the same rows held out, the same fit
    assert np.array_equal(again.coefficientMatrix.toArray(), model.coefficientMatrix.toArray())


def test_tol_zero_trains_on_every_row_for_max_iter_epochs(spark, overfitting_frames):
    train, _ = overfitting_frames
    model = SVBLogisticRegression(numWorkers=2, solver="sgd", tol=0.0, maxIter=2).fit(train)
    assert model.summary.stopReason == "maxIter" and model.summary.totalIterations == 2
    assert not model.summary.validationHistory


def test_a_validation_column_wins_over_the_fraction(spark, overfitting_frames):
    from pyspark.sql import functions as F

    train, _ = overfitting_frames
    flagged = train.withColumn("isVal", F.rand(seed=5) < 0.2)
    params = dict(numWorkers=2, solver="sgd", seed=3, maxIter=4, validationIndicatorCol="isVal")
    with_fraction = SVBLogisticRegression(validationFraction=0.3, **params).fit(flagged)
    without = SVBLogisticRegression(validationFraction=0.0, **params).fit(flagged)
    assert with_fraction.summary.validationHistory  # the column's rows are scored
    assert with_fraction.summary.stopReason != "holdout"
    assert np.array_equal(
        with_fraction.coefficientMatrix.toArray(), without.coefficientMatrix.toArray()
    )


def test_a_long_tail_of_classes_holds_no_rows_out():
    from svb_spark.core.stopping import HOLDOUT_MIN_ROWS_PER_CLASS

    rows = 40_000
    enough = rows // HOLDOUT_MIN_ROWS_PER_CLASS
    assert automatic_holdout(0.1, 1e-6, rows, "sgd", "p2p", False, num_classes=enough) == 0.1
    assert automatic_holdout(0.1, 1e-6, rows, "sgd", "p2p", False, num_classes=enough + 1) == 0.0
    assert automatic_holdout(0.1, 1e-6, rows, "sgd", "p2p", False, num_classes=10_000) == 0.0
    # Ten rows a class, where the held-out stop lost to the tol stop, is a long tail too.
    assert automatic_holdout(0.1, 1e-6, rows, "sgd", "p2p", False, num_classes=4_000) == 0.0
