"""The class-sharded mode: each worker owns a block of classes; rows and normalizers travel."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from svb_spark.core import numerics
from svb_spark.core.loss import MULTINOMIAL
from svb_spark.core.solvers.sharded import class_blocks
from svb_spark.testing import train_in_process
from tests.support.compare import assert_judged_alike
from tests.support.data import blobs, training_config
from tests.support.reference import reference_sgd


def _assembled(results):
    return np.vstack([r.W for r in results]), np.concatenate([r.b for r in results])


def _parts(num_workers, seed=0, K=5):
    rows = (130, 101, 77)[:num_workers] if num_workers <= 3 else (60,) * num_workers
    return blobs(seed=seed, rows=rows, K=K)


def test_class_blocks_cover_every_class_once_and_refuse_empty_blocks():
    assert class_blocks(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert class_blocks(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    with pytest.raises(ValueError, match="at least one class per worker.*3 classes and 4"):
        class_blocks(3, 4)


def test_partial_normalizers_combine_into_the_softmax_sufficient_vectors():
    rng = np.random.default_rng(1)
    margins = rng.normal(scale=30.0, size=(9, 7))  # large scores: the max must be tracked
    y, w = rng.integers(0, 7, 9), rng.uniform(0.5, 2.0, 9)
    U, loss = numerics.sufficient_vectors(np.eye(7), np.zeros(7), margins, y, w)
    blocks = class_blocks(7, 3)
    exponentials = [margins[:, a:b].copy() for a, b in blocks]
    labels = [MULTINOMIAL.label_margins(e, y, a) for e, (a, _) in zip(exponentials, blocks)]
    partial = [MULTINOMIAL.partial_normalizers(e) for e in exponentials]
    normalizer = MULTINOMIAL.log_normalizers([m for m, _ in partial], [s for _, s in partial])
    pieces = [
        MULTINOMIAL.block_vectors(e, m, normalizer, picked, w)
        for e, (m, _), picked in zip(exponentials, partial, labels)
    ]
    np.testing.assert_allclose(np.hstack([u for u, _ in pieces]), U, atol=1e-12)
    assert sum(part_loss for _, part_loss in pieces) == pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("num_workers", [1, 2, 3])
@pytest.mark.parametrize(
    "overrides",
    [{}, {"fit_intercept": False, "mean": None}, {"reg_scale": np.linspace(0.5, 2.0, 6)}],
)
def test_sharded_training_equals_single_process_sgd(num_workers, overrides):
    parts = _parts(num_workers)
    config = training_config(parts, num_classes=5, exchange="sharded", **overrides)
    results = train_in_process(parts, config)
    W, b, history = reference_sgd(parts, config)
    got_W, got_b = _assembled(results)
    np.testing.assert_allclose(got_W, W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got_b, b, rtol=1e-6, atol=1e-9)
    for result in results:  # every worker judged the same epochs
        np.testing.assert_allclose(result.objective_history, history, rtol=1e-9)
        assert result.steps == 8 * -(-max(len(p[1]) for p in parts) // 16)


@pytest.mark.parametrize("num_workers", [2, 3])
def test_sparse_sharded_training_equals_replicated_sgd(num_workers):
    rng = np.random.default_rng(7)
    parts = []
    for n in (90, 70, 50)[:num_workers]:
        X = sp.random(n, 200, density=0.03, format="csr", random_state=rng) * 3.0
        y = rng.integers(0, 6, n)
        parts.append((X, y, rng.uniform(0.5, 2.0, n)))
    dense = np.vstack([p[0].toarray() for p in parts])
    config = training_config(
        [(dense, None, None)], num_classes=6, num_features=200, sparse=True, mean=None,
        scale=np.ones(200), reg_param=0.05,
    )  # fmt: skip
    replicated = train_in_process(parts, dataclasses.replace(config, exchange="p2p"))[0]
    sharded = train_in_process(parts, dataclasses.replace(config, exchange="sharded"))
    W, b = _assembled(sharded)
    np.testing.assert_allclose(W, replicated.W, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b, replicated.b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(sharded[0].objective_history, replicated.objective_history,
                               rtol=1e-9)  # fmt: skip


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("holdout", [0.0, 0.2])
@pytest.mark.parametrize("num_workers", [2, 3])
def test_held_out_rows_judge_a_sharded_fit_as_they_judge_the_replicated_one(
    num_workers, holdout, sparse, monkeypatch
):
    # A validation column (judged by loss) or rows held out by the fraction (by accuracy,
    # then a last pass over them): the same epochs judged, stop and model as replicated SGD.
    # The held-out rows are judged 7 at a time (4,096 on real data): chunks add up alike.
    monkeypatch.setattr("svb_spark.core.solvers.sharded.HELD_OUT_ROWS", 7)
    parts = _parts(num_workers)
    masks = [np.random.default_rng(r).random(len(p[1])) < 0.2 for r, p in enumerate(parts)]
    if sparse:
        parts = [(sp.csr_matrix(np.abs(X)), y, w) for X, y, w in parts]
    partitions = [(*part, mask) for part, mask in zip(parts, masks)]
    dense = [(np.abs(X), y, w) for X, y, w in _parts(num_workers)]
    config = training_config(
        dense, num_classes=5, max_iter=12, reg_param=0.0, validation_tol=0.01,
        holdout_fraction=holdout, **({"sparse": True, "mean": None} if sparse else {}),
    )  # fmt: skip
    replicated = train_in_process(partitions, config)[0]
    sharded = train_in_process(partitions, dataclasses.replace(config, exchange="sharded"))
    assert_judged_alike(sharded, replicated)


def test_sharded_payload_per_step_is_the_cost_formula_with_no_class_term():
    from svb_spark.core.modes import predicted_bytes_per_step

    parts = blobs(rows=(128, 128, 128), K=5, D=6)
    config = training_config(parts, num_classes=5, exchange="sharded", max_iter=2)
    results = train_in_process(parts, config)
    # 8 full steps an epoch, and one last exchange that carries only normalizers.
    per_step = predicted_bytes_per_step("sharded", 3, 16, 5, 6, 8)
    last = 2 * (2 * 3 * 16 * 8)  # to 2 peers, 2 normalizers for each of 48 rows
    steps = results[0].steps
    assert steps == 16
    assert results[0].payload_sent == pytest.approx(steps * per_step + last, rel=0.05)
    # Rows travel, not U: 100 times more classes change the normalizers only.
    assert predicted_bytes_per_step("sharded", 3, 16, 500, 6, 8) == per_step


def test_tol_stops_every_sharded_worker_after_the_same_epoch():
    parts = _parts(3, seed=3)
    config = training_config(parts, num_classes=5, exchange="sharded", max_iter=200, tol=1e-3)
    results = train_in_process(parts, config)
    W, b, history = reference_sgd(parts, config)
    assert {r.stop_reason for r in results} == {"tol"}
    assert len(results[0].objective_history) == len(history) < 200
    np.testing.assert_allclose(_assembled(results)[0], W, rtol=1e-6, atol=1e-9)


def test_sharded_fit_resumes_from_every_block_to_the_same_model(tmp_path):
    parts = _parts(2)
    base = training_config(parts, num_classes=5, exchange="sharded", max_iter=6)
    whole = _assembled(train_in_process(parts, base))
    directory = str(tmp_path / "fit")
    interrupted = dataclasses.replace(base, max_iter=4, checkpoint_dir=directory,
                                      checkpoint_interval=2)  # fmt: skip
    train_in_process(parts, interrupted)
    resumed = train_in_process(
        parts, dataclasses.replace(base, checkpoint_dir=directory), resume_from=directory
    )
    assert {r.resumed_from_step for r in resumed} == {2 * 9}
    W, b = _assembled(resumed)
    np.testing.assert_allclose(W, whole[0], rtol=1e-12)
    np.testing.assert_allclose(b, whole[1], rtol=1e-12)


# --- on a real local[2] Spark ------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted(spark):
    from tests.support.data import planted as planted_data
    from tests.support.data import planted_frame

    X, y, w = planted_data()
    return X, y, w, planted_frame(spark).cache()


def test_spark_sharded_fit_equals_single_process_sgd(planted):
    from svb_spark import SVBLogisticRegression
    from tests.support.reference import reference_model

    X, y, w, df = planted
    settings = dict(batch_size=16, max_iter=6, tol=0.0, reg_param=0.01, fit_intercept=True,
                    step_size=1.0, seed=5, dtype="float64")  # fmt: skip
    model = SVBLogisticRegression(
        exchange="sharded", weightCol="weight", numWorkers=2, maxIter=6, tol=0.0,
        regParam=0.01, batchSize=16, dtype="float64", seed=5,
    ).fit(df)  # fmt: skip
    W, b, history = reference_model(df, X, y, w, 2, **settings)
    np.testing.assert_allclose(model.coefficientMatrix.toArray(), W, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.interceptVector.toArray(), b, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.summary.objectiveHistory, history, rtol=1e-5)
    summary = model.summary
    assert (summary.exchange, summary.solver) == ("sharded", "sgd")
    assert summary.exchangeReason == "set by the exchange param"


def test_spark_sparse_sharded_fit_equals_the_replicated_fit(spark):
    from svb_spark import SVBLogisticRegression, datasets

    X, y = datasets.planted_sparse(rows=300, num_features=500, num_classes=5, nonzeros=12, seed=8)
    df = datasets.to_dataframe(spark, X, y).cache()
    common = dict(numWorkers=2, maxIter=3, batchSize=32, dtype="float64", regParam=0.01, seed=3)
    sharded = SVBLogisticRegression(exchange="sharded", **common).fit(df)
    replicated = SVBLogisticRegression(exchange="p2p", solver="sgd", **common).fit(df)
    for ours, theirs in (
        (sharded.coefficientMatrix, replicated.coefficientMatrix),
        (sharded.interceptVector, replicated.interceptVector),
    ):
        np.testing.assert_allclose(ours.toArray(), theirs.toArray(), rtol=1e-6, atol=1e-9)
    predicted = sharded.transform(df).select("prediction").collect()
    assert len(predicted) == 300
    # At 5 classes a sharded step's own overhead outweighs its saving: auto stays replicated
    # and says why (benchmarks.exchange measures where it shards).
    auto = SVBLogisticRegression(exchange="auto", **common).fit(df).summary
    assert auto.exchange == "p2p" and "fastest step: p2p" in auto.exchangeReason
    assert auto.predictedSecondsPerStep["sharded"] > auto.predictedSecondsPerStep["p2p"]


def test_a_spark_sharded_fit_stops_on_a_validation_column_as_the_replicated_fit(planted):
    from pyspark.sql import functions as F

    from svb_spark import SVBLogisticRegression

    df = planted[3].withColumn("held", F.rand(seed=4) < 0.2)
    common = dict(numWorkers=2, maxIter=30, batchSize=16, dtype="float64", seed=5,
                  validationIndicatorCol="held", solver="sgd")  # fmt: skip
    sharded = SVBLogisticRegression(exchange="sharded", **common).fit(df)
    replicated = SVBLogisticRegression(exchange="p2p", **common).fit(df)
    ours, theirs = sharded.summary, replicated.summary
    assert ours.exchange == "sharded" and ours.validationHistory
    np.testing.assert_allclose(ours.validationHistory, theirs.validationHistory, rtol=1e-6)
    assert ours.stopReason == theirs.stopReason
    np.testing.assert_allclose(
        sharded.coefficientMatrix.toArray(), replicated.coefficientMatrix.toArray(),
        rtol=1e-5, atol=1e-8,
    )  # fmt: skip


@pytest.mark.parametrize(
    "params, message",
    [
        ({"solver": "saga"}, r"solver.*'saga' but exchange='sharded' trains with SGD"),
        ({"syncInterval": 2}, r"exchange='sharded' needs syncInterval=1 \(got 2\)"),
    ],
)
def test_sharded_refuses_what_it_cannot_do(planted, params, message):
    from svb_spark import SVBLogisticRegression

    df = planted[3]
    with pytest.raises(ValueError, match=message):
        SVBLogisticRegression(exchange="sharded", numWorkers=2, maxIter=1, **params).fit(df)


def test_auto_shards_when_a_replica_does_not_fit_a_worker_and_the_driver_checks_float64():
    from svb_spark.core.solvers import FitFacts, check_memory, choose

    # A replica is 400 x 1000 x 4 = 1.6 MB; a block of 200 classes plus 16 rows about 0.87 MB.
    facts = FitFacts(
        400,
        1000,
        2,
        10_000,
        False,
        None,
        8,
        "float32",
        exchange="auto",
        worker_memory=1 << 20,
        worker_memory_key="spark.executor.pyspark.memory",
    )
    choice = choose(facts)
    assert (choice.mode, choice.solver) == ("sharded", "sgd")
    assert "does not fit spark.executor.pyspark.memory; a block of 200 classes" in choice.reason
    check_memory(facts, "sgd", "sharded")  # fits
    with pytest.raises(ValueError, match=r"ceil\(numClasses / numWorkers\) = 100 classes"):
        check_memory(dataclasses.replace(facts, num_features=4000, num_workers=4), "sgd",
                     "sharded")  # fmt: skip
    with pytest.raises(ValueError, match=r"float64: .* = 400 x 1000 x 8 = 3200000 bytes"):
        check_memory(dataclasses.replace(facts, driver_memory=2 << 20), "sgd", "sharded")


@pytest.mark.slow
def test_a_model_larger_than_an_executor_trains_saves_loads_and_scores_sharded():
    from tests.support.jobs import run_job

    result = run_job("big_model", timeout=3000)
    print(
        f"1500 x 2^18 float64 model, executors capped at 2.9 GB: fit {result['fit_seconds']:.0f} s,"
        f" workers' peak RSS {[round(r / 2**30, 2) for r in result['peak_rss']]} GiB"
    )
    assert result["replica_bytes"] > result["cap_bytes"]
    assert (
        "numClasses x numFeatures x 8 bytes (float64) = 1500 x 262144 x 8"
        in (result["p2p_refused"])
    )
    assert result["exchange"] == "sharded" and "does not fit" in result["reason"]
    assert result["shape"] == [1500, 2**18] and result["loaded_equal"]
    assert all(rss < result["cap_bytes"] for rss in result["peak_rss"])
    assert result["scored"] == 200 and result["predictions_agree"] == 1.0
