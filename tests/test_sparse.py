"""Sparse, high-dimensional data on local Spark: CSR end to end, libsvm input."""

import numpy as np
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.feature import StringIndexer
from pyspark.ml.functions import array_to_vector, vector_to_array

from svb_spark import SVBLogisticRegression, datasets
from tests.support.jobs import run_job


@pytest.fixture(scope="module")
def text_like(spark):
    X, y = datasets.planted_sparse(rows=800, num_features=4096, num_classes=8, nonzeros=24, seed=4)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, seed=4)
    return (
        X_train,
        y_train,
        datasets.to_dataframe(spark, X_train, y_train).cache(),
        datasets.to_dataframe(spark, X_test, y_test).cache(),
    )


def test_sparse_and_dense_copies_train_the_same_model(spark, text_like):
    _, _, sparse_df, _ = text_like
    # The same rows in the same partitions, as DenseVectors.
    dense_df = sparse_df.withColumn("features", array_to_vector(vector_to_array("features")))
    assert dense_df.first().features.numNonzeros() < dense_df.first().features.size / 10
    estimator = SVBLogisticRegression(numWorkers=2, maxIter=3, regParam=0.01, dtype="float64")
    from_sparse = estimator.fit(sparse_df)
    from_dense = estimator.fit(dense_df)
    np.testing.assert_allclose(
        from_sparse.coefficientMatrix.toArray(),
        from_dense.coefficientMatrix.toArray(),
        rtol=1e-5,
        atol=1e-10,
    )
    np.testing.assert_allclose(
        from_sparse.summary.objectiveHistory, from_dense.summary.objectiveHistory, rtol=1e-9
    )


def test_sparse_fit_learns_and_sends_csr_sufficient_vectors(text_like):
    X_train, _, train, test = text_like
    model = SVBLogisticRegression(numWorkers=2, maxIter=10, batchSize=16).fit(train)
    assert model.evaluate(test).accuracy > 0.9

    summary = model.summary
    nnz = X_train.nnz / X_train.shape[0]
    # (P - 1) B (K + 2 nnz + 1) four-byte words: U, then V's values, indices and row offset.
    expected = 1 * 16 * (8 + 2 * nnz + 1) * 4
    assert summary.predictedBytesPerStep["p2p"] == pytest.approx(expected)
    payload_per_step = summary.payloadBytesSent / summary.steps
    assert payload_per_step == pytest.approx(expected, rel=0.10)
    # The dense rows would have been 4096 floats each.
    assert payload_per_step < 16 * 4096 * 4 / 20

    # Transform scores sparse rows without densifying, and agrees with single-row predict.
    for row in model.transform(test).limit(10).collect():
        assert row.features.numNonzeros() < 100
        np.testing.assert_allclose(
            row.probability.toArray(), model.predictProbability(row.features).toArray(), rtol=1e-10
        )


def test_libsvm_file_with_one_based_labels_in_a_pipeline(spark, tmp_path):
    X, y = datasets.planted_sparse(rows=300, num_features=500, num_classes=3, nonzeros=12, seed=8)
    path = tmp_path / "data.libsvm"
    with open(path, "w") as out:
        for i in range(X.shape[0]):
            row = X.getrow(i)
            # libsvm: 1-based feature indices; labels here are 1, 2, 3 as such files often have.
            pairs = " ".join(f"{j + 1}:{v:g}" for j, v in zip(row.indices, row.data))
            out.write(f"{y[i] + 1} {pairs}\n")
    df = spark.read.format("libsvm").option("numFeatures", 500).load(str(path))
    assert df.first().features.size == 500

    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="label", outputCol="classIndex"),
            SVBLogisticRegression(labelCol="classIndex", numWorkers=2, maxIter=10),
        ]
    )
    model = pipeline.fit(df)
    predictions = model.transform(df)
    accuracy = predictions.filter("classIndex = prediction").count() / predictions.count()
    assert accuracy > 0.9
    indexer = model.stages[0]
    # Map predictions back to the file's labels with the indexer's labels.
    assert sorted(float(label) for label in indexer.labels) == [1.0, 2.0, 3.0]


@pytest.mark.slow
def test_hashed_text_scale_problem_fits_without_densifying():
    """K=500, D=2^18, ~50 non-zeros per row, 20k training rows, two workers on local[2]."""
    result = run_job("sparse", timeout=3000)
    assert result["accuracy"] >= 0.9

    replica = 500 * 2**18 * 4
    for worker in result["workers"]:
        # One float32 replica, the rows and O(B (K + nnz)) scratch: a dense batch alone would
        # be 32 x 2^18 floats per step, and a second replica would break the bound.
        assert worker["peak_rss"] < 2 * replica + worker["data_bytes"], worker

    nnz = result["nonzeros_per_row"]
    expected = 1 * 32 * (500 + 2 * nnz + 1) * 4
    assert result["predicted"] == pytest.approx(expected)
    assert result["payload_sent"] / result["steps"] == pytest.approx(expected, rel=0.10)
