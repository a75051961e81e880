"""Checkpoints of a fit's replica, so that a retried barrier stage resumes instead of restarting.

Rank 0 writes one every ``checkpointInterval`` epochs into the fit's own directory under
``checkpointDir``, through :mod:`pyarrow.fs`, so a local path and any Hadoop-compatible URI
(``hdfs://``, ``s3://``, ...) work alike. A checkpoint is written to a temporary file and
renamed into place, so a reader sees a whole checkpoint or none; the older ones are then
deleted. When Spark retries the barrier stage (a worker died), rank 0 finds the newest one,
tells its peers the step at the rendezvous, and every worker loads it and goes on from there.

A checkpoint holds the replica's weights (in the layout the replica stores them), its scalar
factor, the step, the objective history and the partial epoch sums, and the plan. Minibatches
are a pure function of (seed, rank, step) (see :meth:`svb_spark.training.LocalPartition.batch`),
so the step is the whole random state: a resumed fit takes exactly the steps an uninterrupted
one would have taken.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from svb_spark.exchange import codec

_PREFIX, _SUFFIX = "step-", ".arrow"
_HEADER = b"svb_checkpoint"


@dataclass
class ReplicaState:
    """Everything a replica needs to go on from ``step`` as if it had never stopped."""

    values: np.ndarray  # the replica's arrays, flattened (see ReplicaWeights.flat)
    feature_major: bool
    factor: float
    step: int
    history: list[float]
    converged: bool
    epoch_loss: float
    epoch_weight: float
    plan: dict


def filesystem(directory: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``directory`` (an absolute path or a URI) and the path within it."""
    return pafs.FileSystem.from_uri(directory)


def _encode(state: ReplicaState) -> pa.RecordBatch:
    """The replica as the codec's state message, with the rest of the state in its metadata."""
    header = {
        "feature_major": state.feature_major,
        "step": state.step,
        "history": state.history,
        "converged": state.converged,
        "epoch_loss": state.epoch_loss,
        "epoch_weight": state.epoch_weight,
        "plan": state.plan,
    }
    batch = codec.encode_state(state.values, state.factor)
    metadata = {**batch.schema.metadata, _HEADER: json.dumps(header).encode()}
    return batch.replace_schema_metadata(metadata)


def _decode(batch: pa.RecordBatch) -> ReplicaState:
    header = json.loads(batch.schema.metadata[_HEADER])
    values, factor = codec.decode_state(batch)
    return ReplicaState(
        values=values,
        feature_major=header["feature_major"],
        factor=factor,
        step=header["step"],
        history=header["history"],
        converged=header["converged"],
        epoch_loss=header["epoch_loss"],
        epoch_weight=header["epoch_weight"],
        plan=header["plan"],
    )


def _step_of(name: str) -> int | None:
    if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
        digits = name[len(_PREFIX) : -len(_SUFFIX)]
        return int(digits) if digits.isdigit() else None
    return None


def checkpoint_steps(directory: str) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, oldest first (none if it is absent)."""
    fs, root = filesystem(directory)
    listing = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    steps = (_step_of(posixpath.basename(info.path)) for info in listing)
    return sorted(step for step in steps if step is not None)


def write_checkpoint(directory: str, state: ReplicaState) -> str:
    """Write ``state`` atomically (temporary file, then rename); delete older checkpoints.

    Returns the checkpoint's path. On any failure the temporary file is removed and the
    previous checkpoint stays.
    """
    fs, root = filesystem(directory)
    fs.create_dir(root, recursive=True)
    final = posixpath.join(root, f"{_PREFIX}{state.step:012d}{_SUFFIX}")
    # A dot-name is never taken for a checkpoint, should the rename not happen.
    temporary = posixpath.join(root, f".{uuid.uuid4().hex}.tmp")
    batch = _encode(state)
    try:
        with fs.open_output_stream(temporary) as sink:
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
        fs.move(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(temporary)
        raise
    for step in checkpoint_steps(directory):
        if step < state.step:
            with contextlib.suppress(OSError):  # a reader may hold it; it goes with the dir
                fs.delete_file(posixpath.join(root, f"{_PREFIX}{step:012d}{_SUFFIX}"))
    return final


def read_checkpoint(directory: str, step: int) -> ReplicaState:
    """The checkpoint of ``step`` in ``directory``."""
    fs, root = filesystem(directory)
    with fs.open_input_stream(posixpath.join(root, f"{_PREFIX}{step:012d}{_SUFFIX}")) as source:
        return _decode(pa.ipc.open_stream(source).read_next_batch())


def remove_checkpoints(directory: str) -> None:
    """Delete a fit's checkpoint directory, if there is one."""
    fs, root = filesystem(directory)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(root)
