"""What the driver and the barrier tasks agree on: the training frame's columns, the result
rows' schema, and the encoding of the model and record a task sends back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from svb_spark.training import TrainingResult

# Column names of the DataFrame the driver hands to the barrier stage.
FEATURES, LABEL, WEIGHT, ROW_ID = "features", "label", "weight", "row_id"
HELD_OUT = "held_out"  # true for the validation rows, which are scored and never trained on
RESULT_SCHEMA = pa.schema([("part", pa.string()), ("seq", pa.int32()), ("data", pa.binary())])
RESULT_DDL = "part string, seq int, data binary"
_CHUNK_BYTES = 32 << 20


def encode_result(result: TrainingResult) -> Iterator[pa.RecordBatch]:
    """Rank 0's output rows: W and b as raw bytes in chunks, the shapes and summary as JSON.

    The weights leave straight from the replica's memory, one chunk at a time, so that a
    worker never holds a second copy of a K x D replica.
    """
    arrays = {"W": result.W, "b": np.ascontiguousarray(result.b)}
    layout = {}
    for name, array in arrays.items():
        # A feature-major replica goes out as its D x K storage, not as a K x D copy.
        transposed = not array.flags.c_contiguous
        stored = np.ascontiguousarray(array.T if transposed else array)
        layout[name] = [array.dtype.str, list(array.shape), transposed]
        yield from result_rows(name, memoryview(stored).cast("B"))
    yield from result_rows("layout", json.dumps(layout).encode())
    yield from result_rows("summary", json.dumps(result.summary_dict()).encode())


def result_rows(part: str, payload: bytes | memoryview) -> Iterator[pa.RecordBatch]:
    """``payload`` as (part, seq, data) rows of at most 32 MB each, one batch per row."""
    for seq, start in enumerate(range(0, max(len(payload), 1), _CHUNK_BYTES)):
        yield pa.RecordBatch.from_pydict(
            {"part": [part], "seq": [seq], "data": [bytes(payload[start : start + _CHUNK_BYTES])]},
            schema=RESULT_SCHEMA,
        )


def collect_parts(rows) -> dict[str, bytes]:
    """Reassemble collected ``(part, seq, data)`` rows into one payload per part."""
    parts: dict[str, list[tuple[int, bytes]]] = {}
    for part, seq, data in rows:
        parts.setdefault(part, []).append((seq, bytes(data)))
    return {name: b"".join(data for _, data in sorted(chunks)) for name, chunks in parts.items()}


def _array_from_bytes(data: bytes, dtype: str, shape: list[int], transposed: bool) -> np.ndarray:
    array = np.frombuffer(data, dtype=np.dtype(dtype))
    return array.reshape(shape[::-1]).T if transposed else array.reshape(shape)


def decode_result(rows) -> TrainingResult:
    """Inverse of :func:`encode_result` on the collected ``(part, seq, data)`` rows; each
    worker's own report (its ``worker<rank>`` part) joins its entry in ``workers``."""
    parts = collect_parts(rows)
    layout = json.loads(parts["layout"])
    W, b = (_array_from_bytes(parts[name], *layout[name]) for name in ("W", "b"))
    summary = json.loads(parts["summary"])
    for worker in summary["workers"]:
        worker.update(json.loads(parts.get(f"worker{worker['rank']}", b"{}")))
    return TrainingResult(W=W, b=b, **summary)


def training_frame(
    dataset,
    features: str,
    label: str,
    weight: str | None,
    num_workers: int,
    validation: str | None = None,
):
    """The columns the workers need, one partition per worker (validation rows included).

    Rows are hash-partitioned on a row id so that the same input gives every worker the same
    rows, and the workers sort by it: together with ``seed`` this makes fits repeatable.
    """
    from pyspark.sql import functions as F

    return dataset.select(
        F.col(features).alias(FEATURES),
        F.col(label).cast("double").alias(LABEL),
        (F.col(weight).cast("double") if weight else F.lit(1.0)).alias(WEIGHT),
        (F.col(validation) if validation else F.lit(False)).alias(HELD_OUT),
        F.monotonically_increasing_id().alias(ROW_ID),
    ).repartition(num_workers, ROW_ID)
