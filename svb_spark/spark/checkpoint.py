"""Checkpoints of a fit's replica, so that a retried barrier stage resumes instead of restarting.

Rank 0 writes one every ``checkpointInterval`` epochs into the fit's own directory under
``checkpointDir``, through :mod:`pyarrow.fs`, so a local path and any Hadoop-compatible URI
(``hdfs://``, ``s3://``, ...) work alike. A checkpoint is written to a temporary file and
renamed into place, so a reader sees a whole checkpoint or none; the older ones are then
deleted. When Spark retries the barrier stage (a worker died), the workers tell each other at
the rendezvous which checkpoints they see, and every worker loads the newest one and goes on.

SAGA keeps per-row state that only the worker owning the rows holds, so with it every worker
also writes its own memory file at the same steps, and the two newest of each are kept; a step
is resumed only when the replica and every worker's memory of that step exist. In the
class-sharded mode there is no replica: every worker writes its own block of classes, and a
step is resumed only when every block of it exists.

A checkpoint holds the replica's weights (in the layout the replica stores them), its scalar
factor, the step, the objective history and the partial epoch sums, and the plan. Minibatches
are a pure function of (seed, rank, step) (see
:meth:`svb_spark.core.partition.LocalPartition.batch_rows`), so the step is the whole random state:
a resumed fit takes exactly the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from svb_spark.core import wire
from svb_spark.core.state import ReplicaState

_PREFIX, _SUFFIX = "step-", ".arrow"
_HEADER = b"svb_checkpoint"


def filesystem(directory: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``directory`` (an absolute path or a URI) and the path within it."""
    return pafs.FileSystem.from_uri(directory)


def _encode(state: ReplicaState) -> pa.RecordBatch:
    """The replica as the wire state message, with the rest of the state in its metadata."""
    header = {
        "feature_major": state.feature_major,
        "step": state.step,
        "history": state.history,
        "converged": state.converged,
        "epoch_loss": state.epoch_loss,
        "epoch_weight": state.epoch_weight,
        "plan": state.plan,
        "validation_history": state.validation_history,
        "validation_accuracy": state.validation_accuracy,
        "validation_pending": state.validation_pending,
    }
    batch = wire.encode_state(state.values, state.factor)
    metadata = {**batch.schema.metadata, _HEADER: json.dumps(header).encode()}
    return batch.replace_schema_metadata(metadata)


def _decode(batch: pa.RecordBatch) -> ReplicaState:
    header = json.loads(batch.schema.metadata[_HEADER])
    values, factor = wire.decode_state(batch)
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
        validation_history=header["validation_history"],
        validation_accuracy=header.get("validation_accuracy", []),
        validation_pending=header["validation_pending"],
    )


def checkpoint_steps(directory: str) -> list[int]:
    """Steps of the complete checkpoints in ``directory``, oldest first (none if it is absent)."""
    return _steps(directory, _PREFIX)


def _steps(directory: str, prefix: str) -> list[int]:
    fs, root = filesystem(directory)
    listing = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    steps = []
    for info in listing:
        name = posixpath.basename(info.path)
        digits = name[len(prefix) : -len(_SUFFIX)]
        if name.startswith(prefix) and name.endswith(_SUFFIX) and digits.isdigit():
            steps.append(int(digits))
    return sorted(steps)


def write_checkpoint(directory: str, state: ReplicaState, keep: int = 1) -> str:
    """Write ``state`` atomically (temporary file, then rename); keep the newest ``keep``
    checkpoints and delete older ones.

    Returns the checkpoint's path. On any failure the temporary file is removed and the
    previous checkpoint stays. With SAGA, ``keep = 2``: until every worker has written its
    memory of the new step, the step before is the newest whole checkpoint.
    """
    return _write_newest(directory, _PREFIX, state.step, _encode(state), keep)


def write_worker_memory(directory: str, rank: int, step: int, memory: np.ndarray) -> str:
    """Write one worker's per-row state (SAGA's memory) of ``step``, as :func:`write_checkpoint`
    does the replica; only that worker can write it, since only it holds its rows."""
    batch = pa.RecordBatch.from_arrays([pa.array(memory.ravel())], names=["memory"])
    batch = batch.replace_schema_metadata({b"shape": json.dumps(list(memory.shape)).encode()})
    # Two kept: a peer may not have written its memory of this step yet (see write_checkpoint).
    return _write_newest(directory, _memory_prefix(rank), step, batch, keep=2)


def read_worker_memory(directory: str, rank: int, step: int) -> np.ndarray:
    batch = _read(directory, f"{_memory_prefix(rank)}{step:012d}{_SUFFIX}")
    shape = json.loads(batch.schema.metadata[b"shape"])
    return np.asarray(batch.column("memory").to_numpy()).reshape(shape).copy()


def worker_memory_steps(directory: str, rank: int) -> list[int]:
    """Steps of ``rank``'s complete memory files in ``directory``, oldest first."""
    return _steps(directory, _memory_prefix(rank))


def _memory_prefix(rank: int) -> str:
    return f"memory-{rank:05d}-step-"


def write_block(directory: str, rank: int, state: ReplicaState) -> str:
    """Write one worker's block of classes (the class-sharded mode), as :func:`write_checkpoint`
    does a replica. Two are kept: a peer may not have written its block of this step yet."""
    return _write_newest(directory, _block_prefix(rank), state.step, _encode(state), keep=2)


def read_block(directory: str, rank: int, step: int) -> ReplicaState:
    return _decode(_read(directory, f"{_block_prefix(rank)}{step:012d}{_SUFFIX}"))


def block_steps(directory: str, rank: int) -> list[int]:
    """Steps of ``rank``'s complete block checkpoints in ``directory``, oldest first."""
    return _steps(directory, _block_prefix(rank))


def _block_prefix(rank: int) -> str:
    return f"block-{rank:05d}-step-"


def _write_newest(
    directory: str, prefix: str, step: int, batch: pa.RecordBatch, keep: int = 1
) -> str:
    fs, root = filesystem(directory)
    fs.create_dir(root, recursive=True)
    final = posixpath.join(root, f"{prefix}{step:012d}{_SUFFIX}")
    # A dot-name is never taken for a checkpoint, should the rename not happen.
    temporary = posixpath.join(root, f".{uuid.uuid4().hex}.tmp")
    try:
        with fs.open_output_stream(temporary) as sink:
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
        fs.move(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(temporary)
        raise
    older = [s for s in _steps(directory, prefix) if s < step]
    for stale in older[: max(len(older) - (keep - 1), 0)]:
        with contextlib.suppress(OSError):  # a reader may hold it; it goes with the dir
            fs.delete_file(posixpath.join(root, f"{prefix}{stale:012d}{_SUFFIX}"))
    return final


def _read(directory: str, name: str) -> pa.RecordBatch:
    fs, root = filesystem(directory)
    with fs.open_input_stream(posixpath.join(root, name)) as source:
        return pa.ipc.open_stream(source).read_next_batch()


def read_checkpoint(directory: str, step: int) -> ReplicaState:
    """The checkpoint of ``step`` in ``directory``."""
    return _decode(_read(directory, f"{_PREFIX}{step:012d}{_SUFFIX}"))


def remove_checkpoints(directory: str) -> None:
    """Delete a fit's checkpoint directory, if there is one."""
    fs, root = filesystem(directory)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(root)


class CheckpointStore:
    """A fit's checkpoint directory, as the solvers write and read it (see
    :meth:`svb_spark.core.solvers.Solver.save`): the replica, each worker's per-row state,
    and each worker's block of classes."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def write_replica(self, state: ReplicaState, keep: int = 1) -> str:
        return write_checkpoint(self.directory, state, keep)

    def replica_steps(self) -> list[int]:
        return checkpoint_steps(self.directory)

    def read_replica(self, step: int) -> ReplicaState:
        return read_checkpoint(self.directory, step)

    def write_rows(self, rank: int, step: int, memory: np.ndarray) -> str:
        return write_worker_memory(self.directory, rank, step, memory)

    def rows_steps(self, rank: int) -> list[int]:
        return worker_memory_steps(self.directory, rank)

    def read_rows(self, rank: int, step: int) -> np.ndarray:
        return read_worker_memory(self.directory, rank, step)

    def write_block(self, rank: int, state: ReplicaState) -> str:
        return write_block(self.directory, rank, state)

    def block_steps(self, rank: int) -> list[int]:
        return block_steps(self.directory, rank)

    def read_block(self, rank: int, step: int) -> ReplicaState:
        return read_block(self.directory, rank, step)


def state_to_bytes(state: ReplicaState) -> bytes:
    """A replica state as one Arrow IPC stream: the checkpoint format, in memory."""
    return wire.to_ipc(_encode(state))


def state_from_bytes(data: bytes) -> ReplicaState:
    return _decode(wire.from_ipc(data))
