"""The exchange modes on local Spark: same SGD, different transport, different bytes."""

import functools

import numpy as np
import pytest

import svb_spark.spark.broadcast as broadcast
from svb_spark import SVBLogisticRegression, datasets
from tests.support.data import planted_frame


@pytest.fixture(scope="module")
def planted_df(spark):
    return planted_frame(spark).cache()


def _fit(df, **params):
    # SGD: the broadcast mode trains with it, and every mode must train the same model.
    settings = dict(
        weightCol="weight", numWorkers=2, maxIter=2, batchSize=100, dtype="float64", solver="sgd"
    )
    return SVBLogisticRegression(**{**settings, **params}).fit(df)


@pytest.fixture(scope="module")
def p2p_model(planted_df):
    return _fit(planted_df, exchange="p2p")


@pytest.mark.parametrize("mode", ["dense", "broadcast"])
def test_every_mode_trains_the_same_model(planted_df, p2p_model, mode):
    model = _fit(planted_df, exchange=mode)
    assert model.summary.exchange == mode
    np.testing.assert_allclose(
        model.coefficientMatrix.toArray(),
        p2p_model.coefficientMatrix.toArray(),
        rtol=1e-5,
        atol=1e-9,
    )
    np.testing.assert_allclose(
        model.summary.objectiveHistory, p2p_model.summary.objectiveHistory, rtol=1e-9
    )
    # The frame's two input partitions of 200 rows each are the workers' rows: 100 per step.
    assert model.summary.steps == p2p_model.summary.steps == 2 * 2


@pytest.mark.parametrize("snapshot_every_round", [True, False])
def test_broadcast_rebuilds_a_lost_replica_exactly(
    planted_df, p2p_model, monkeypatch, snapshot_every_round
):
    # With snapshots every round a rebuild starts from the newest; without, it replays the
    # whole log of sufficient-vector broadcasts from zero weights.
    monkeypatch.setattr(broadcast, "snapshot_due", lambda *_: snapshot_every_round)
    estimator = SVBLogisticRegression(
        weightCol="weight",
        numWorkers=2,
        maxIter=2,
        batchSize=100,
        dtype="float64",
        exchange="broadcast",
    )
    # Every task drops its cached replica first, so each round takes the rebuild path.
    monkeypatch.setattr(
        broadcast, "_round_task", functools.partial(broadcast._round_task, forget_replica=True)
    )
    model = estimator.fit(planted_df)
    # Both workers rebuilt in every round after the first, including the final one.
    assert model.summary.replicaRebuilds == 2 * model.summary.exchanges
    assert (
        model.coefficientMatrix.toArray() == p2p_model.coefficientMatrix.toArray()
    ).all() or np.allclose(
        model.coefficientMatrix.toArray(),
        p2p_model.coefficientMatrix.toArray(),
        rtol=1e-12,
        atol=1e-15,
    )


@pytest.mark.parametrize(
    "shape, cheaper",
    [
        # Many classes and features, small batches: sufficient vectors win.
        (dict(num_classes=60, num_features=300, batch_size=8), "p2p"),
        # Few classes, large batches: the K x (D + 1) gradient is smaller.
        (dict(num_classes=4, num_features=1000, batch_size=512), "dense"),
    ],
)
def test_measured_bytes_per_step_match_the_cost_model_and_auto_picks_the_cheaper(
    spark, shape, cheaper
):
    X, y = datasets.planted(
        rows=4096, num_features=shape["num_features"], num_classes=shape["num_classes"], seed=1
    )
    df = datasets.to_dataframe(spark, X, y).cache()
    measured = {}
    for mode in ("p2p", "dense", "auto"):
        summary = (
            SVBLogisticRegression(
                numWorkers=2,
                maxIter=1,
                batchSize=shape["batch_size"],
                exchange=mode,
                solver="sgd",
            )
            .fit(df)
            .summary
        )
        # A full step: the median exchange (the last step of an epoch may be short).
        measured[summary.exchange if mode != "auto" else "auto"] = (
            float(np.median(summary.bytesSentPerExchange)),
            summary,
        )
    for mode in ("p2p", "dense"):
        bytes_per_step, summary = measured[mode]
        assert bytes_per_step == pytest.approx(summary.predictedBytesPerStep[mode], rel=0.10)
    auto_summary = measured["auto"][1]
    assert auto_summary.exchange == cheaper
    assert measured[cheaper][0] < measured[{"p2p": "dense", "dense": "p2p"}[cheaper]][0]


def test_bounded_staleness_keeps_digits_accuracy(digits_frames):
    train, test = digits_frames
    exact = SVBLogisticRegression(numWorkers=2).fit(train)
    stale = SVBLogisticRegression(numWorkers=2, syncInterval=4).fit(train)
    assert stale.summary.exchanges * 4 >= stale.summary.steps > (stale.summary.exchanges - 1) * 4
    accuracy_exact = exact.evaluate(test).accuracy
    accuracy_stale = stale.evaluate(test).accuracy
    print(
        f"digits accuracy: syncInterval=1 {accuracy_exact:.4f}, syncInterval=4 {accuracy_stale:.4f}"
    )
    assert accuracy_stale >= accuracy_exact - 0.01


def test_replica_checks_over_the_flight_mesh_find_equal_replicas(planted_df, p2p_model):
    checked = _fit(planted_df, exchange="p2p", verifyInterval=1)
    assert checked.summary.replicaChecks == checked.summary.exchanges > 0
    assert checked.summary.replicaResyncs == 0
    assert (checked.coefficientMatrix.toArray() == p2p_model.coefficientMatrix.toArray()).all()


def test_tol_stops_a_broadcast_fit_as_it_stops_a_p2p_fit(planted_df):
    import warnings

    from svb_spark.classification import SVBConvergenceWarning

    # tol = 0.5: the objective stays above half the first epoch's (1.386 to 0.746), so the
    # rule fires as soon as there are two windows of 3 epochs to compare.
    settings = dict(maxIter=20, tol=0.5, batchSize=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SVBConvergenceWarning)
        broadcast_fit = _fit(planted_df, exchange="broadcast", **settings)
        p2p_fit = _fit(planted_df, exchange="p2p", **settings)
    for model in (broadcast_fit, p2p_fit):
        assert model.summary.stopReason == "tol"
        assert model.summary.totalIterations == 6
    np.testing.assert_allclose(
        broadcast_fit.coefficientMatrix.toArray(), p2p_fit.coefficientMatrix.toArray(), rtol=1e-5
    )
