"""SVBLogisticRegression on a real local[2] Spark: correctness, MLlib interop, persistence."""

import warnings

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import MulticlassClassificationEvaluator
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

from svb_spark import (
    SVBConvergenceWarning,
    SVBLogisticRegression,
    SVBLogisticRegressionModel,
)
from tests.support.data import planted as _planted
from tests.support.data import planted_frame, to_frame
from tests.support.reference import reference_model, worker_partitions


@pytest.fixture(scope="module")
def planted(spark):
    X, y, w = _planted()
    return X, y, w, planted_frame(spark).cache()


@pytest.mark.parametrize("solver", ["sgd", "saga", "asgd"])
def test_distributed_fit_equals_single_process_reference(spark, planted, solver):
    X, y, w, df = planted
    estimator = SVBLogisticRegression(
        solver=solver,
        weightCol="weight",
        numWorkers=2,
        maxIter=6,
        tol=0.0,
        regParam=0.01,
        batchSize=16,
        dtype="float64",
        seed=5,
    )
    model = estimator.fit(df)

    # The reference: numpy statistics, the same rows per worker, one global batch per step.
    assert min(len(p[1]) for p in worker_partitions(df, 2)) > 0
    W, b, history = reference_model(
        df, X, y, w, 2, batch_size=16, max_iter=6, tol=0.0, reg_param=0.01,
        fit_intercept=True, step_size=1.0, seed=5, dtype="float64", solver=solver,
    )  # fmt: skip

    assert model.summary.solver == solver
    np.testing.assert_allclose(model.coefficientMatrix.toArray(), W, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.interceptVector.toArray(), b, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(model.summary.objectiveHistory, history, rtol=1e-5)

    again = estimator.fit(df)
    assert (again.coefficientMatrix.toArray() == model.coefficientMatrix.toArray()).all()


def test_digits_accuracy_matches_scikit_learn(spark, digits, digits_frames):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = digits
    train, test = digits_frames
    model = SVBLogisticRegression(numWorkers=2).fit(train)
    ours = model.evaluate(test).accuracy

    # The same objective: regParam's default is 0, so scikit-learn with a negligible penalty.
    sk_std = (
        make_pipeline(StandardScaler(), LogisticRegression(C=1e12, max_iter=5000))
        .fit(X_train, y_train)
        .score(X_test, y_test)
    )
    summary = model.summary
    print(
        f"digits test accuracy: svb {ours:.4f} ({summary.solver}, stopped by "
        f"{summary.stopReason} after {summary.totalIterations} iterations), sklearn+scaler "
        f"with C=1e12 {sk_std:.4f}"
    )
    # Every param at its default: tol stops the fit well before maxIter, within 0.5 pt.
    assert summary.solver == "lbfgs" and summary.converged and summary.stopReason == "tol"
    assert summary.totalIterations < model.getMaxIter() / 3
    assert ours >= sk_std - 0.005

    assert summary.totalIterations == len(summary.objectiveHistory) > 1
    assert summary.objectiveHistory[-1] < summary.objectiveHistory[0]
    assert summary.numWorkers == 2 and summary.exchange in ("p2p", "dense")


def test_bytes_per_step_are_the_sufficient_vectors(spark, planted):
    _, _, _, df = planted
    model = SVBLogisticRegression(
        numWorkers=2, maxIter=2, batchSize=20, tol=0.0, solver="sgd", exchange="p2p"
    ).fit(df)
    summary = model.summary
    K, D, B, P = 4, 6, 20, 2
    expected = (P - 1) * B * (K + D) * 4  # float32 U and V to each peer
    # A full step's message less its framing (schema, header, padding) is the payload.
    framing_per_message = summary.framingBytesSent / summary.exchanges
    full_step = float(np.median(summary.bytesSentPerExchange))
    assert full_step - framing_per_message == pytest.approx(expected, rel=0.01)
    assert summary.predictedBytesPerStep["p2p"] == expected
    assert summary.payloadBytesSent + summary.framingBytesSent == summary.bytesSent
    assert summary.bytesReceived == pytest.approx(summary.bytesSent, rel=0.2)
    assert {"compute", "exchange", "apply", "train", "inspect"} <= set(summary.timings)
    ranks = summary.workers
    assert len(ranks) == 2 and sum(r["rows"] for r in ranks) == 400
    assert ranks[0]["location"] != ranks[1]["location"]
    # Every phase of the stage, on the driver and in each task, is timed.
    assert {"stage", "result_decode", "task_start"} <= set(summary.timings)
    assert 0 <= summary.timings["task_start"] < summary.timings["stage"] < summary.timings["train"]
    task_phases = {"setup", "load", "flight_start", "rendezvous", "loop", "close"}
    assert set(ranks[1]["phases"]) == task_phases
    # Classic mode: rank 0 sent the weights to the driver's inbox, not through the shuffle.
    assert set(ranks[0]["phases"]) == task_phases | {"send_model", "encode"}
    assert all(seconds >= 0 for r in ranks for seconds in r["phases"].values())


def test_summary_metrics_agree_with_mllib_evaluator(spark, digits_frames):
    train, test = digits_frames
    model = SVBLogisticRegression(numWorkers=2, maxIter=10).fit(train)
    summary = model.evaluate(test)
    evaluator = MulticlassClassificationEvaluator()
    predictions = model.transform(test)
    for metric, ours in [
        ("accuracy", summary.accuracy),
        ("weightedPrecision", summary.weightedPrecision),
        ("weightedRecall", summary.weightedRecall),
        ("f1", summary.weightedFMeasure()),
        ("weightedFalsePositiveRate", summary.weightedFalsePositiveRate),
    ]:
        assert ours == pytest.approx(
            evaluator.setMetricName(metric).evaluate(predictions), abs=1e-12
        )
    assert summary.labels == [float(k) for k in range(10)]
    assert len(summary.precisionByLabel) == 10


def test_transform_agrees_with_single_vector_predictions(spark, digits, digits_frames):
    _, X_test, _, _ = digits
    train, test = digits_frames
    model = SVBLogisticRegression(numWorkers=2, maxIter=5).fit(train)
    rows = model.transform(test).limit(20).collect()
    for row in rows:
        probability = model.predictProbability(row.features).toArray()
        np.testing.assert_allclose(row.probability.toArray(), probability, rtol=1e-12)
        np.testing.assert_allclose(
            row.rawPrediction.toArray(), model.predictRaw(row.features).toArray()
        )
        assert row.prediction == model.predict(row.features)
        assert probability.sum() == pytest.approx(1.0)

    # thresholds steer predictions as in MLlib: a zero threshold makes its class win.
    skewed = model.copy().setThresholds([1.0] * 9 + [0.0])
    assert {r.prediction for r in skewed.transform(test).collect()} == {9.0}
    # An empty output column name skips that column.
    only_prediction = model.copy().setProbabilityCol("").setRawPredictionCol("")
    assert only_prediction.transform(test).columns == ["features", "label", "prediction"]


def test_sparse_vectors_and_arrays_train_the_same_model(spark, planted):
    X, y, w, dense_df = planted
    sparse_df = to_frame(spark, X, y, sparse=True, extra={"weight": w})
    array_df = dense_df.withColumn("features", vector_to_array("features"))
    estimator = SVBLogisticRegression(weightCol="weight", numWorkers=2, maxIter=3, dtype="float64")
    reference = estimator.fit(dense_df).coefficientMatrix.toArray()
    for df in (sparse_df, array_df):
        np.testing.assert_allclose(
            estimator.fit(df).coefficientMatrix.toArray(), reference, rtol=1e-9
        )


def test_pipeline_cross_validation_over_reg_param(spark, digits_frames):
    train, test = digits_frames
    svb = SVBLogisticRegression(numWorkers=2, maxIter=15)
    grid = ParamGridBuilder().addGrid(svb.regParam, [0.0, 0.01]).build()
    cv = CrossValidator(
        estimator=Pipeline(stages=[svb]),
        estimatorParamMaps=grid,
        evaluator=MulticlassClassificationEvaluator(metricName="accuracy"),
        numFolds=2,
        seed=1,
    )
    cv_model = cv.fit(train)
    assert len(cv_model.avgMetrics) == 2 and min(cv_model.avgMetrics) > 0.85
    best = cv_model.bestModel.stages[-1]
    assert isinstance(best, SVBLogisticRegressionModel)
    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(
        cv_model.transform(test)
    )
    assert accuracy > 0.9


def test_model_estimator_and_pipeline_save_load_round_trip(spark, digits_frames, tmp_path):
    train, test = digits_frames
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=5, regParam=0.01, batchSize=16)
    model = estimator.fit(train)

    model.write().overwrite().save(str(tmp_path / "model"))
    loaded = SVBLogisticRegressionModel.load(str(tmp_path / "model"))
    assert (loaded.coefficientMatrix.toArray() == model.coefficientMatrix.toArray()).all()
    assert (loaded.interceptVector.toArray() == model.interceptVector.toArray()).all()
    assert loaded.uid == model.uid and loaded.getRegParam() == 0.01 and loaded.getBatchSize() == 16
    assert not loaded.hasSummary
    ours = [r.probability for r in model.transform(test).collect()]
    theirs = [r.probability for r in loaded.transform(test).collect()]
    assert ours == theirs

    estimator.write().overwrite().save(str(tmp_path / "estimator"))
    reloaded = SVBLogisticRegression.load(str(tmp_path / "estimator"))
    assert reloaded.extractParamMap() == {
        reloaded.getParam(p.name): v for p, v in estimator.extractParamMap().items()
    }

    pipeline_model = Pipeline(stages=[estimator]).fit(train)
    pipeline_model.write().overwrite().save(str(tmp_path / "pipeline"))
    restored = PipelineModel.load(str(tmp_path / "pipeline"))
    assert [r.prediction for r in restored.transform(test).collect()] == [
        r.prediction for r in pipeline_model.transform(test).collect()
    ]


def test_a_model_is_saved_in_pieces_small_enough_for_a_task(spark, tmp_path, monkeypatch):
    import svb_spark.spark.persistence as persistence

    # A cluster refuses a task above spark.rpc.message.maxSize: the coefficients go out in
    # several write jobs (here 3 classes of 2 features each), and come back whole.
    monkeypatch.setattr(persistence, "_WRITE_BYTES", 3 * 2 * 8)
    W = np.arange(14.0).reshape(7, 2)
    model = SVBLogisticRegressionModel(W, np.arange(7.0))
    model.write().overwrite().save(str(tmp_path / "model"))
    parts = list((tmp_path / "model" / "data").glob("part-*.parquet"))
    loaded = SVBLogisticRegressionModel.load(str(tmp_path / "model"))
    assert len(parts) >= 3
    np.testing.assert_array_equal(loaded.coefficientMatrix.toArray(), W)
    np.testing.assert_array_equal(loaded.interceptVector.toArray(), np.arange(7.0))
    # The driver reads the files itself; where it cannot, Spark reads them, to the same model.
    assert persistence._read_on_driver(spark, str(tmp_path / "model" / "data")) is not None
    monkeypatch.setattr(persistence, "_read_on_driver", lambda spark, directory: None)
    through_spark = SVBLogisticRegressionModel.load(str(tmp_path / "model"))
    np.testing.assert_array_equal(through_spark.coefficientMatrix.toArray(), W)


def test_stopping_at_max_iter_warns(spark, planted):
    _, _, _, df = planted
    with pytest.warns(SVBConvergenceWarning, match="maxIter=2"):
        SVBLogisticRegression(numWorkers=2, maxIter=2).fit(df)
    # tol=0 asks for maxIter epochs exactly: nothing to warn about.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SVBConvergenceWarning)
        SVBLogisticRegression(numWorkers=2, maxIter=2, tol=0.0).fit(df)


def test_a_large_model_is_built_as_it_arrives_in_a_buffer_made_while_the_stage_ran(
    spark, planted, monkeypatch
):
    from svb_spark.control import delivery

    made, built = [], []

    class Recorded(delivery.ModelBuffer):
        def take(self):
            made.append(super().take())
            return made[-1]

    receive = delivery.ModelBuild.receive

    def recorded_receive(self, *args):
        built.append(receive(self, *args))
        return built[-1]

    monkeypatch.setattr(delivery, "PREPARED_COEFFICIENTS", 4 * 6)  # this model's size
    monkeypatch.setattr(delivery, "ModelBuffer", Recorded)
    monkeypatch.setattr(delivery.ModelBuild, "receive", recorded_receive)
    model = SVBLogisticRegression(numWorkers=2, maxIter=2).fit(planted[3])
    assert len(made) == 1 and np.shares_memory(model._W, made[0])
    assert len(built) == 1 and np.shares_memory(model._W, built[0])  # built on arrival
    monkeypatch.setattr(delivery, "PREPARED_COEFFICIENTS", 4 * 6 + 1)
    SVBLogisticRegression(numWorkers=2, maxIter=2).fit(planted[3])
    assert len(made) == 1  # a smaller model than the threshold: no buffer made beforehand
    assert len(built) == 2  # but built on arrival all the same


def test_coefficient_matrix_copies_the_model_once():
    import tracemalloc

    W = np.arange(1_000_000, dtype=np.float64).reshape(1000, 1000)
    model = SVBLogisticRegressionModel(W, np.zeros(1000))
    tracemalloc.start()
    matrix = model.coefficientMatrix
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # One float64 copy (8 MB); a Python list of the floats on the way took 4 times that.
    assert peak < 2 * W.nbytes
    np.testing.assert_array_equal(matrix.toArray(), W)


def test_single_vector_api_without_spark_job():
    model = SVBLogisticRegressionModel(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0.0, 0.5]))
    assert model.predict(Vectors.dense([0.0, 0.0])) == 1.0
    assert model.numClasses == 2 and model.numFeatures == 2
    with pytest.raises(RuntimeError, match="No training summary"):
        _ = model.summary


def test_constant_feature_with_standardization_gives_finite_coefficients(spark):
    rows = [(Vectors.dense([float(i), 7.0]), float(i % 2)) for i in range(20)]
    model = SVBLogisticRegression(numWorkers=2, maxIter=3).fit(
        spark.createDataFrame(rows, ["features", "label"])
    )
    coefficients = model.coefficientMatrix.toArray()
    assert np.isfinite(coefficients).all() and (coefficients[:, 1] == 0).all()
    assert np.isfinite(model.interceptVector.toArray()).all()


def test_each_worker_runs_blas_on_its_own_task_cores(spark, digits_frames):
    pytest.importorskip("threadpoolctl")
    train, _ = digits_frames
    environment = spark.sparkContext.environment
    # Executors whose environment asks BLAS for two threads per process (as PySpark's own
    # OMP_NUM_THREADS does on an executor with two cores), whatever each task's share.
    environment["OPENBLAS_NUM_THREADS"] = "2"
    try:
        model = SVBLogisticRegression(numWorkers=2, maxIter=1).fit(train)
    finally:
        del environment["OPENBLAS_NUM_THREADS"]
    for worker in model.summary.workers:
        # numpy's and scipy's BLAS alike, at spark.task.cpus (1).
        assert len(worker["blas_threads"]) >= 1 and set(worker["blas_threads"]) == {1}, worker


def test_a_validation_column_holds_rows_out_and_stops_on_their_loss(spark, digits_frames):
    from pyspark.sql import functions as F

    train, test = digits_frames
    flagged = train.withColumn("isVal", F.rand(seed=1) < 0.2)
    model = SVBLogisticRegression(numWorkers=2, validationIndicatorCol="isVal").fit(flagged)
    summary = model.summary
    history = summary.validationHistory
    print(
        f"digits with a 20% hold-out: stopped by {summary.stopReason} after "
        f"{summary.totalIterations} epochs, best epoch {summary.bestEpoch}, test accuracy "
        f"{model.evaluate(test).accuracy:.4f}"
    )
    assert len(history) == summary.totalIterations
    assert summary.stopReason == "validation" and summary.totalIterations < model.getMaxIter()
    assert summary.bestEpoch == int(np.argmin(history))
    assert model.evaluate(test).accuracy >= 0.94  # 80% of the rows; scikit-learn gets ~0.96
