"""Save and load SVBLogisticRegressionModel in MLlib's layout.

``path/metadata`` holds the params as ``DefaultParamsWriter`` writes them; ``path/data`` is a
Parquet table with one row per class (classIndex, intercept, coefficients, and the class's
label where the model keeps ``StringIndexer``'s labels), so a model with
thousands of classes and millions of features is written in pieces of at most 64 MB (one
Spark job each) and never needs one giant row or task. Writing uses only the DataFrame API, so
it works without a SparkContext (on Spark Connect, ``overwrite()`` can only clear local paths);
in classic mode the driver reads the files back itself (see :func:`_read_on_driver`).
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

from svb_spark.params import json_params


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
    from svb_spark.spark.session import spark_context

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


# The coefficients one write job carries: a DataFrame made from local data travels inside its
# tasks, and a task larger than spark.rpc.message.maxSize (128 MB by default) is refused.
_WRITE_BYTES = 64 << 20


def _classes_per_write(num_features: int) -> int:
    return max(1, _WRITE_BYTES // (8 * max(num_features, 1)))


class SVBModelWriter(MLWriter):
    """Writes params as metadata and the arrays as ``path/data``."""

    def __init__(self, instance) -> None:
        super().__init__()
        self.instance = instance

    def _handleOverwrite(self, path: str) -> None:
        # MLWriter's own overwrite calls into the JVM, which Spark Connect clients cannot;
        # there the directory is removed through the filesystem instead (local paths only).
        from svb_spark.spark.session import spark_context

        spark = _session()
        if spark_context(spark) is not None:
            super()._handleOverwrite(path)
        else:
            _remove(spark, path)

    def saveImpl(self, path: str) -> None:
        from svb_spark.spark.session import dataframe_from_arrow

        spark = _session()
        W, b = self.instance._model_arrays()
        labels = getattr(self.instance, "labels", None)
        try:
            params = {p.name: v for p, v in self.instance._paramMap.items()}
            DefaultParamsWriter.saveMetadata(
                self.instance,
                path,
                _context_or_session(spark),
                extraMetadata={"numClasses": int(W.shape[0]), "numFeatures": int(W.shape[1])},
                paramMap=json_params(params),
            )
            data = os.path.join(path, "data")
            for first in range(0, max(W.shape[0], 1), _classes_per_write(W.shape[1])):
                rows = slice(first, first + _classes_per_write(W.shape[1]))
                columns = {
                    "classIndex": pa.array(np.arange(W.shape[0], dtype=np.int32)[rows]),
                    "intercept": pa.array(b[rows].astype(np.float64)),
                    "coefficients": pa.FixedSizeListArray.from_arrays(
                        pa.array(W[rows].astype(np.float64).ravel()), W.shape[1]
                    ).cast(pa.list_(pa.float64())),
                }
                if labels is not None:
                    columns["label"] = pa.array(labels[rows], type=pa.string())
                table = pa.table(columns)
                dataframe_from_arrow(spark, table).write.mode("append").parquet(data)
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
        batches = _read_on_driver(spark, os.path.join(path, "data"))
        if batches is None:
            data = spark.read.parquet(os.path.join(path, "data"))
            if hasattr(data, "toArrow"):
                batches = data.toArrow().to_batches()
            else:  # pyspark 3.5
                batches = pa.Table.from_pandas(data.toPandas(), preserve_index=False).to_batches()
        K, D = metadata["numClasses"], metadata["numFeatures"]
        W, b = np.zeros((K, D)), np.zeros(K)
        labels = None
        # Batch by batch into the model's own arrays: the model is held once, plus a batch.
        for batch in batches:
            classes = batch.column("classIndex").to_numpy()
            values = batch.column("coefficients").flatten().to_numpy(zero_copy_only=False)
            W[classes] = values.reshape(len(classes), D)
            b[classes] = batch.column("intercept").to_numpy(zero_copy_only=False)
            if "label" in batch.schema.names:
                labels = [None] * K if labels is None else labels
                for index, label in zip(classes, batch.column("label").to_pylist()):
                    labels[index] = label
        model = self.cls._from_arrays(W, b)
        model._labels = labels
        model._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(model, metadata)
        return model


def _read_on_driver(spark, directory: str):
    """The model's Parquet data as record batches read by the driver itself through
    :mod:`pyarrow.fs`, or None where Spark must read it.

    Read through Spark, a large model's rows pass through executors' JVM heaps and come back as
    task results (a 1500 x 2^18 model overflowed 1 GB executors); read here, they go from the
    files into the arrays. Only in classic mode, where the driver sees the path as Spark does
    (an explicit URI, or a bare path on a local default filesystem), and Spark takes over on
    any error (say, no Hadoop client library for ``hdfs://``).
    """
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from svb_spark.spark.session import spark_context

    sc = spark_context(spark)
    if sc is None:
        return None
    if "://" not in directory:
        default = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
        if not default.startswith("file:"):
            return None
        directory = os.path.abspath(directory.removeprefix("file:"))
    try:
        fs, root = pafs.FileSystem.from_uri(directory)
        files = pq.ParquetDataset(root, filesystem=fs).files
    except (OSError, ValueError, pa.ArrowException):
        return None
    return (
        batch
        for name in files
        for batch in pq.ParquetFile(fs.open_input_file(name)).iter_batches(batch_size=16)
    )


class SVBModelWritable(MLWritable):
    """Mixin: ``model.write().overwrite().save(path)``."""

    def write(self) -> MLWriter:
        return SVBModelWriter(self)


class SVBModelReadable(MLReadable):
    """Mixin: ``Model.load(path)``."""

    @classmethod
    def read(cls) -> MLReader:
        return SVBModelReader(cls)
