"""What the driver and the barrier tasks agree on: the training frame's columns, the result
rows' schema, and the encoding of the model and record a task sends back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from svb_spark.core.loop import TrainingResult
from svb_spark.spark.inspection import quoted_column
from svb_spark.spark.session import barrier_stage_keeps_partitions

# Column names of the DataFrame the driver hands to the barrier stage.
FEATURES, LABEL, WEIGHT, ROW_ID = "features", "label", "weight", "row_id"
HELD_OUT = "held_out"  # true for the validation rows, which are scored and never trained on
RESULT_SCHEMA = pa.schema([("part", pa.string()), ("seq", pa.int32()), ("data", pa.binary())])
RESULT_DDL = "part string, seq int, data binary"
_CHUNK_BYTES = 32 << 20
_SHARE_SLACK = 0.1  # how far from an even share an input partition may be to keep it
_HOLDOUT_BUCKETS = 1 << 20  # the hash buckets a holdout fraction is counted in


def stored_arrays(result: TrainingResult, suffix: str = "") -> tuple[dict[str, np.ndarray], dict]:
    """W and b as the C-contiguous arrays that hold them, and their layout (dtype, shape,
    transposed): a feature-major replica goes out as its D x K storage, not a K x D copy.
    ``suffix`` (".<rank>" for a block of the class-sharded mode) is appended to the names."""
    stored, layout = {}, {}
    for name, array in (("W", result.W), ("b", np.ascontiguousarray(result.b))):
        transposed = not array.flags.c_contiguous
        stored[name + suffix] = np.ascontiguousarray(array.T if transposed else array)
        layout[name + suffix] = [array.dtype.str, list(array.shape), transposed]
    return stored, layout


def block_suffix(rank: int) -> str:
    """The name suffix of rank ``rank``'s block of classes in the class-sharded mode."""
    return f".{rank}"


def encode_result(
    result: TrainingResult, delivered: str | None = None, block: int | None = None
) -> Iterator[pa.RecordBatch]:
    """A worker's output rows: W and b as raw bytes in chunks, the shapes and summary as JSON.

    The weights leave straight from the replica's memory, one chunk at a time, so that a
    worker never holds a second copy of a K x D replica. With ``delivered`` (the token of a
    delivery to the driver, see :mod:`svb_spark.control.delivery`) they are not in the rows at all.
    Replicated modes: rank 0 sends everything. Class-sharded mode: every rank sends its
    ``block`` (its rank), and rank 0 the summary too.
    """
    suffix = "" if block is None else block_suffix(block)
    stored, layout = stored_arrays(result, suffix)
    if delivered is None:
        for name, array in stored.items():
            yield from result_rows(name, memoryview(array).cast("B"))
    else:
        layout["delivered"] = delivered
    yield from result_rows("layout" + suffix, json.dumps(layout).encode())
    if not block:
        yield from result_rows("summary", json.dumps(result.summary_dict()).encode())


def result_rows(part: str, payload: bytes | memoryview) -> Iterator[pa.RecordBatch]:
    """``payload`` as (part, seq, data) rows of at most 32 MB each, one batch per row."""
    for seq, start in enumerate(range(0, max(len(payload), 1), _CHUNK_BYTES)):
        yield pa.RecordBatch.from_pydict(
            {"part": [part], "seq": [seq], "data": [bytes(payload[start : start + _CHUNK_BYTES])]},
            schema=RESULT_SCHEMA,
        )


def collect_parts(rows) -> dict:
    """Reassemble collected rows into one bytes-like payload per part.

    ``rows`` is a pyarrow Table of :data:`RESULT_SCHEMA` (the stage's output collected as
    Arrow) or ``(part, seq, data)`` tuples. A part of one chunk is that chunk, not a copy;
    longer parts are copied once, into one uint8 array.
    """
    if isinstance(rows, pa.Table):
        data = rows.column("data")
        rows = zip(
            rows.column("part").to_pylist(),
            rows.column("seq").to_pylist(),
            (data[i].as_buffer() for i in range(len(data))),
        )
    parts: dict[str, list] = {}
    for part, seq, chunk in rows:
        parts.setdefault(part, []).append((seq, chunk))
    return {name: _concatenate([c for _, c in sorted(chunks)]) for name, chunks in parts.items()}


def _concatenate(chunks: list):
    if len(chunks) == 1:
        return chunks[0]
    views = [np.frombuffer(chunk, dtype=np.uint8) for chunk in chunks]
    out = np.empty(sum(len(v) for v in views), dtype=np.uint8)
    start = 0
    for view in views:
        out[start : start + len(view)] = view
        start += len(view)
    return out


def _array_from_bytes(data, dtype: str, shape: list[int], transposed: bool) -> np.ndarray:
    array = np.frombuffer(data, dtype=np.dtype(dtype))
    return array.reshape(shape[::-1]).T if transposed else array.reshape(shape)


def decode_result(rows, deliveries=None) -> TrainingResult:
    """Inverse of :func:`encode_result` on the collected rows (see :func:`collect_parts`);
    each worker's own report (its ``worker<rank>`` part) joins its entry in ``workers``.

    W and b are views of the collected buffers, in the replica's layout (a feature-major
    replica arrives as the transpose of its D x K storage), or the arrays delivered to
    ``deliveries`` (a :class:`~svb_spark.control.delivery.ModelInbox`), as it made them. The
    class-sharded mode's blocks are stacked in rank order into one K x D copy, unless the
    inbox built them in place into one model.
    """
    parts = collect_parts(rows)
    suffixes = [""] if "layout" in parts else _block_suffixes(parts)
    blocks = [_weights(parts, deliveries, suffix) for suffix in suffixes]
    if len(blocks) == 1:
        W, b = blocks[0]
    else:  # the model the inbox built the blocks into, or their copy
        W = deliveries.stacked([W for W, _ in blocks]) if deliveries is not None else None
        W = np.concatenate([W for W, _ in blocks]) if W is None else W
        b = np.concatenate([b for _, b in blocks])
    summary = json.loads(bytes(parts["summary"]))
    for worker in summary["workers"]:
        worker.update(json.loads(bytes(parts.get(f"worker{worker['rank']}", b"{}"))))
    return TrainingResult(W=W, b=b, **summary)


def _block_suffixes(parts: dict) -> list[str]:
    ranks = sorted(int(name.split(".", 1)[1]) for name in parts if name.startswith("layout."))
    return [block_suffix(rank) for rank in ranks]


def _weights(parts: dict, deliveries, suffix: str) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of one result (``suffix`` "") or one block, from the rows or the inbox."""
    layout = json.loads(bytes(parts["layout" + suffix]))
    token = layout.pop("delivered", None)
    if token is not None:
        delivered = deliveries.take(token) if deliveries is not None else None
        if delivered is None:
            raise RuntimeError(
                f"a worker reported delivering the model ({token}) but it never came"
            )
        return delivered["W" + suffix], delivered["b" + suffix]  # as the inbox made them
    return tuple(_array_from_bytes(parts[name + suffix], *layout[name + suffix])
                 for name in ("W", "b"))  # fmt: skip


def training_frame(
    dataset,
    features: str,
    label: str,
    weight: str | None,
    num_workers: int,
    validation: str | None = None,
    stats=None,
    holdout: float = 0.0,
    seed: int = 0,
):
    """The columns the workers need, one partition per worker (validation rows included).

    The held-out rows are the validation column's true rows or, with a ``holdout`` fraction,
    the rows whose hash of (row id, ``seed``) falls in that fraction: the same rows for the
    same input and seed, spread evenly over the workers.

    Every row gets an id that grows along its partition, and the workers sort their rows by
    it: together with ``seed`` this makes fits repeatable. The rows are hash-partitioned on
    that id, so that the same input gives every worker the same rows; but an input whose
    partitions the pre-pass (``stats``, a :class:`~svb_spark.spark.inspection.DatasetSummary`) found
    to be one per worker, each within 10% of an even share, keeps them when Spark can run the
    barrier stage on them: the same input then gives every worker the same rows in the same
    order without a shuffle of the whole dataset.
    """
    # SQL text, not pyspark's Column functions: on Spark 4 every such call records its Python
    # call site in the JVM, and the first imports IPython where it is installed (0.4 s of a
    # spark-submit job's first fit).
    label_type = "ARRAY<DOUBLE>" if stats is not None and stats.label_sets else "DOUBLE"
    frame = dataset.selectExpr(
        f"{quoted_column(features)} AS {FEATURES}",
        f"CAST({quoted_column(label)} AS {label_type}) AS {LABEL}",
        f"CAST({quoted_column(weight) if weight else 1.0} AS DOUBLE) AS {WEIGHT}",
        f"{quoted_column(validation) if validation else 'false'} AS {HELD_OUT}",
        f"monotonically_increasing_id() AS {ROW_ID}",
    )
    if holdout > 0.0:
        bucket = f"pmod(xxhash64({ROW_ID}, {int(seed)}), {_HOLDOUT_BUCKETS})"
        held_out = f"{bucket} < {int(holdout * _HOLDOUT_BUCKETS)} AS {HELD_OUT}"
        frame = frame.selectExpr(FEATURES, LABEL, WEIGHT, held_out, ROW_ID)
    if (
        stats is not None
        and evenly_split(stats.partition_rows, num_workers)
        and barrier_stage_keeps_partitions(frame, num_workers)
    ):
        return frame
    return frame.repartition(num_workers, ROW_ID)


def evenly_split(partition_rows, num_workers: int) -> bool:
    """Whether rows in ``partition_rows`` (rows per partition) are one partition per worker,
    each within 10% of an even share: what the fit's memory check assumes of a worker."""
    if len(partition_rows) != num_workers or not sum(partition_rows):
        return False
    share = sum(partition_rows) / num_workers
    return all(abs(rows - share) <= _SHARE_SLACK * share for rows in partition_rows)
