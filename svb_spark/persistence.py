"""Save and load SVBLogisticRegressionModel in MLlib's layout.

``path/metadata`` holds the params as ``DefaultParamsWriter`` writes them; ``path/data`` is a
Parquet table with one row per class (classIndex, intercept, coefficients), so a model with
thousands of classes and millions of features is written in parallel-friendly pieces and never
needs one giant row. Only the DataFrame API is used, so this works without a SparkContext
(on Spark Connect, ``overwrite()`` can only clear local paths).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
from pyspark.ml.util import (
    DefaultParamsReader,
    DefaultParamsWriter,
    MLReadable,
    MLReader,
    MLWritable,
    MLWriter,
)


def _session():
    from pyspark.sql import SparkSession

    try:
        # The thread's active session, else the default one: after a Ctrl-C broke a py4j call,
        # the thread talks to the JVM over a new connection, which has no active session.
        return SparkSession.active()
    except Exception:
        raise RuntimeError("Saving or loading a model needs an active SparkSession.") from None


def _context_or_session(spark):
    """What ``DefaultParams{Writer,Reader}`` take: Spark 3.5's want the SparkContext, Spark 4's
    take either and get the session on Spark Connect, which has no SparkContext."""
    from svb_spark.session import spark_context

    sc = spark_context(spark)
    return spark if sc is None else sc


def _remove(spark, path: str) -> None:
    """Best-effort removal of a partly written model directory."""
    try:
        jvm = spark.sparkContext._jvm
        hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
        hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(
            hadoop_path, True
        )
    except Exception:
        import shutil

        shutil.rmtree(path.removeprefix("file:"), ignore_errors=True)


class SVBModelWriter(MLWriter):
    """Writes params as metadata and the arrays as ``path/data``."""

    def __init__(self, instance) -> None:
        super().__init__()
        self.instance = instance

    def _handleOverwrite(self, path: str) -> None:
        # MLWriter's own overwrite calls into the JVM, which Spark Connect clients cannot;
        # there the directory is removed through the filesystem instead (local paths only).
        from svb_spark.session import spark_context

        spark = _session()
        if spark_context(spark) is not None:
            super()._handleOverwrite(path)
        else:
            _remove(spark, path)

    def saveImpl(self, path: str) -> None:
        from svb_spark.session import dataframe_from_arrow

        spark = _session()
        W, b = self.instance._model_arrays()
        try:
            DefaultParamsWriter.saveMetadata(
                self.instance,
                path,
                _context_or_session(spark),
                extraMetadata={"numClasses": int(W.shape[0]), "numFeatures": int(W.shape[1])},
            )
            table = pa.table(
                {
                    "classIndex": pa.array(np.arange(W.shape[0], dtype=np.int32)),
                    "intercept": pa.array(b.astype(np.float64)),
                    "coefficients": pa.FixedSizeListArray.from_arrays(
                        pa.array(W.astype(np.float64).ravel()), W.shape[1]
                    ).cast(pa.list_(pa.float64())),
                }
            )
            dataframe_from_arrow(spark, table).write.parquet(os.path.join(path, "data"))
        except BaseException:
            # Never leave a half-written model behind: a later load would fail confusingly.
            _remove(spark, path)
            raise


class SVBModelReader(MLReader):
    """Reads what :class:`SVBModelWriter` wrote."""

    def __init__(self, cls) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str):
        spark = _session()
        metadata = DefaultParamsReader.loadMetadata(path, _context_or_session(spark))
        data = spark.read.parquet(os.path.join(path, "data"))
        if hasattr(data, "toArrow"):
            rows = data.toArrow().to_pandas()
        else:  # pyspark 3.5
            rows = data.toPandas()
        rows = rows.sort_values("classIndex")
        K, D = metadata["numClasses"], metadata["numFeatures"]
        W = np.stack(rows["coefficients"].to_numpy()).reshape(K, D) if K else np.zeros((0, D))
        b = rows["intercept"].to_numpy()
        model = self.cls._from_arrays(W.copy(), b.copy())
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


class SVBModelWritable(MLWritable):
    """Mixin: ``model.write().overwrite().save(path)``."""

    def write(self) -> MLWriter:
        return SVBModelWriter(self)


class SVBModelReadable(MLReadable):
    """Mixin: ``Model.load(path)``."""

    @classmethod
    def read(cls) -> MLReader:
        return SVBModelReader(cls)
