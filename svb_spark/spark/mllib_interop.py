"""SVB models as MLlib's own: a native ``LogisticRegressionModel`` built in the driver's JVM
with the same coefficients, intercepts, family and column params, and the compressed matrix and
vector formats MLlib returns them in."""

from __future__ import annotations

import numpy as np
from pyspark.ml.linalg import DenseMatrix, DenseVector, SparseMatrix, SparseVector
from scipy import sparse

# The most values one of MLlib's DenseMatrix can hold: its array is indexed by a JVM Int.
MLLIB_MAX_VALUES = 2**31 - 1


def to_mllib(model):
    """``model`` (an SVBLogisticRegressionModel) as a native
    ``pyspark.ml.classification.LogisticRegressionModel``; see its ``toMLlib``."""
    from pyspark import SparkContext
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.ml.common import _py2java
    from pyspark.sql.utils import is_remote

    if model._multilabel:
        raise ValueError(
            "MLlib has no multi-label LogisticRegressionModel: this model's family is "
            "multilabel, one independent sigmoid a label. Score, save and load it as an "
            "SVBLogisticRegressionModel."
        )
    rows, features = model._W.shape
    if rows * features > MLLIB_MAX_VALUES:
        raise ValueError(
            f"MLlib's coefficient matrix holds at most 2^31 - 1 values (its DenseMatrix is "
            f"indexed by an Int), but this model has {rows} x {features} = {rows * features}. "
            "Score, save and load it as an SVBLogisticRegressionModel, which has no such limit."
        )
    # A local Spark Connect server runs a SparkContext in this very process, but the
    # client session cannot use it: check for Connect first.
    sc = None if is_remote() else SparkContext._active_spark_context
    if sc is None:
        raise RuntimeError(
            "toMLlib() builds the model in the driver's JVM and needs a classic "
            "SparkSession (with a SparkContext); Spark Connect has none. Save this model "
            "and rebuild it where a classic session runs."
        )
    java_class = sc._jvm.org.apache.spark.ml.classification.LogisticRegressionModel
    # The Scala constructor is private[spark], but public in the bytecode py4j calls.
    coefficients = model.coefficientMatrix
    if model._is_binomial:  # MLlib reads a binomial model's one row as row major
        coefficients = DenseMatrix(1, model.numFeatures, model._W[0], isTransposed=True)
    java_model = java_class(
        model.uid,
        _py2java(sc, coefficients),
        _py2java(sc, model.interceptVector),
        model.numClasses,
        not model._is_binomial,  # isMultinomial: softmax over all K rows
    )
    mllib = LogisticRegressionModel(java_model)
    mllib._resetUid(model.uid)
    for name in (
        "featuresCol",
        "labelCol",
        "predictionCol",
        "probabilityCol",
        "rawPredictionCol",
    ):
        mllib._set(**{name: model.getOrDefault(name)})
    if model._weight_column():  # MLlib's evaluate weighs rows by it
        mllib._set(weightCol=model._weight_column())
    if model._is_binary:
        t = model.getThreshold()
        if model._is_binomial:
            mllib._set(threshold=t)
        elif t != 0.5:  # at 0.5 MLlib's argmax predicts the same
            mllib._set(thresholds=[1.0 - t, t])
    elif model._thresholds():
        mllib._set(thresholds=model._thresholds())
    mllib._transfer_params_to_java()
    return mllib


def compressed_matrix(W: np.ndarray):
    """``W`` as MLlib's ``Matrix.compressed`` returns it: dense, or sparse column- or row-major
    (CSR), whichever takes fewer bytes in the JVM (an L1 model's zeros come out sparse)."""
    K, D = W.shape
    nonzeros = int(np.count_nonzero(W))
    dense = 8 * K * D + 21  # a double array, its header, two ints and a boolean
    csc, csr = (12 * nonzeros + 4 * (pointers + 1) + 45 for pointers in (D, K))
    if dense <= min(csc, csr):
        return DenseMatrix(K, D, W.ravel(order="F"))  # one copy, not a list of floats
    if csc <= csr:
        columns = sparse.csc_matrix(W)
        return SparseMatrix(K, D, columns.indptr, columns.indices, columns.data)
    rows = sparse.csr_matrix(W)
    return SparseMatrix(K, D, rows.indptr, rows.indices, rows.data, isTransposed=True)


def compressed_vector(b: np.ndarray):
    """``b`` as MLlib's ``Vector.compressed`` returns it: sparse when that is smaller."""
    nonzero = np.flatnonzero(b)
    if 1.5 * (len(nonzero) + 1.0) < len(b):
        return SparseVector(len(b), nonzero, b[nonzero])
    return DenseVector(b)
