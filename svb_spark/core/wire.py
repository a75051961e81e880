"""A worker's message for one exchange <-> one Arrow record batch.

A message covers the ``R = syncInterval`` consecutive steps a worker took since the last
exchange (R = 1 for exact synchronous SGD) and holds, per step, either

- ``kind="sv"``: the sufficient vectors, column ``u`` (a fixed-size list of K floats per row)
  and either column ``v`` (D floats per row) or, for CSR rows, columns ``v_indices`` and
  ``v_values`` (one list per row: the list offsets are the CSR indptr), rows of all R steps
  stacked; or
- ``kind="dense"``: the baseline's gradient, column ``g``: K rows of D + 1 floats per step (the
  last entry of a row is the intercept gradient).

The header (kind, first step, rank, and per step: rows, weight sum, loss sum) rides in the
schema metadata, so one record batch is one self-describing message. Decoding is zero-copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_HEADER_KEY = b"svb.header"
SV, DENSE, SHARDED = "sv", "dense", "sharded"


@dataclass
class RoundMessage:
    """One worker's contribution to one exchange."""

    kind: str
    first_step: int
    rank: int
    rows: list[int]  # per step
    weight_sums: list[float]  # per step
    loss_sums: list[float]  # per step
    U: np.ndarray | None = None  # sum(rows) x K, weighted (P - Y)   [kind "sv"]
    V: np.ndarray | None = None  # sum(rows) x D, standardized rows, dense or CSR [kind "sv"]
    G: np.ndarray | None = None  # steps*K x (D + 1) gradients       [kind "dense"]
    # The sender's held-out (loss, weight, correct weight, rows) sums at the end of the epoch
    # that the replicas closed last, when the fit has held-out rows; it rides in the header.
    validation: list[float] | None = None

    @property
    def steps(self) -> int:
        return len(self.rows)

    num_features: int = 0

    def step_vectors(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """(U, V) of the j-th step of this message (kind "sv")."""
        if self.steps == 1:  # the whole message: slicing CSR rows would copy them
            return self.U, self.V
        start = sum(self.rows[:j])
        stop = start + self.rows[j]
        return self.U[start:stop], self.V[start:stop]

    def step_gradient(self, j: int) -> np.ndarray:
        """The K x (D + 1) gradient sum of the j-th step (kind "dense")."""
        K = self.G.shape[0] // self.steps
        return self.G[j * K : (j + 1) * K]


def _fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    width = matrix.shape[1]
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def encode(message: RoundMessage) -> pa.RecordBatch:
    """Pack a worker's message and header into one record batch."""
    header = {
        "kind": message.kind,
        "first_step": message.first_step,
        "rank": message.rank,
        "rows": message.rows,
        "weight_sums": message.weight_sums,
        "loss_sums": message.loss_sums,
        "num_features": message.num_features,
        "validation": message.validation,
    }
    if message.kind == SV and isinstance(message.V, np.ndarray):
        columns = {"u": _fixed_size_list(message.U), "v": _fixed_size_list(message.V)}
    elif message.kind == SV:
        V = message.V
        offsets = pa.array(V.indptr.astype(np.int32, copy=False))
        indices = pa.array(V.indices.astype(np.int32, copy=False))
        columns = {
            "u": _fixed_size_list(message.U),
            "v_indices": pa.ListArray.from_arrays(offsets, indices),
            "v_values": pa.ListArray.from_arrays(offsets, pa.array(V.data)),
        }
    else:
        columns = {"g": _fixed_size_list(message.G)}
    schema = pa.schema(
        [pa.field(name, array.type) for name, array in columns.items()],
        metadata={_HEADER_KEY: json.dumps(header).encode()},
    )
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=schema)


def _matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = column.type.list_size
    # The child array itself (messages hold no nulls): flatten() runs a compute kernel, which
    # costs more than the rest of a small message's decoding.
    values = column.values.slice(column.offset * width, len(column) * width)
    return values.to_numpy(zero_copy_only=False).reshape(-1, width)


def _csr(indices: pa.Array | pa.ChunkedArray, values: pa.Array | pa.ChunkedArray, header):
    from scipy import sparse

    if isinstance(indices, pa.ChunkedArray):
        indices, values = indices.combine_chunks(), values.combine_chunks()
    indptr = indices.offsets.to_numpy()
    stored = slice(indptr[0], indptr[-1])
    return sparse.csr_matrix(
        (values.values.to_numpy()[stored], indices.values.to_numpy()[stored], indptr - indptr[0]),
        shape=(len(indices), header.num_features),
    )


def decode(batch: pa.RecordBatch | pa.Table) -> RoundMessage:
    """Inverse of :func:`encode`; accepts the Table a Flight reader returns as well."""
    header = json.loads(batch.schema.metadata[_HEADER_KEY])
    message = RoundMessage(**header)
    if message.kind == SV:
        message.U = _matrix(batch.column("u"))
        if "v" in batch.schema.names:
            message.V = _matrix(batch.column("v"))
        else:
            message.V = _csr(batch.column("v_indices"), batch.column("v_values"), message)
    else:
        message.G = _matrix(batch.column("g"))
    return message


def message_bytes(message: pa.RecordBatch | pa.Table) -> tuple[int, int]:
    """(payload, framing) bytes of a message on the wire.

    Payload is the Arrow buffers; framing is what an IPC stream adds: the schema with its
    header, the record batch metadata and padding.
    """
    batches = message.to_batches() if isinstance(message, pa.Table) else [message]
    payload = sum(b.nbytes for b in batches)
    wire = message.schema.serialize().size + sum(pa.ipc.get_record_batch_size(b) for b in batches)
    return payload, wire - payload


@dataclass
class ShardMessage:
    """One worker's message for one exchange of the class-sharded mode (see
    :mod:`svb_spark.core.solvers.sharded`): its rows of the next step and, for the rows of the
    step before (all workers' rows), the partial softmax normalizers of its block of classes.

    Columns of different lengths travel as one record batch of a single row whose every
    column is a list, so decoding stays zero-copy.
    """

    first_step: int  # the step of ``X`` (the normalizers are of the step before)
    rank: int
    X: np.ndarray | None = None  # rows x D standardized rows, dense or CSR; None: no rows
    y: np.ndarray | None = None  # int32 labels, or the rows' label sets (CSR, multi-label)
    w: np.ndarray | None = None  # weights, in the training dtype
    # Per row of the step before: max over this block's margins and the sum of exp(margin -
    # max) over them; None in the first exchange.
    row_max: np.ndarray | None = None
    row_sum: np.ndarray | None = None
    num_features: int = 0
    num_labels: int = 0  # the label sets' width, where y is label sets


def _one_row_list(values: np.ndarray) -> pa.ListArray:
    values = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.ListArray.from_arrays(pa.array([0, len(values)], type=pa.int32()), values)


def encode_shard(message: ShardMessage) -> pa.RecordBatch:
    """Pack a class-sharded message into one record batch."""
    header = {"first_step": message.first_step, "rank": message.rank,
              "num_features": message.num_features, "num_labels": message.num_labels}  # fmt: skip
    columns = {}
    if message.X is not None:
        if isinstance(message.X, np.ndarray):
            columns["x"] = message.X
        else:
            columns.update(
                x_indptr=message.X.indptr.astype(np.int32),
                x_indices=message.X.indices.astype(np.int32),
                x_values=message.X.data,
            )
        if isinstance(message.y, np.ndarray):
            columns["y"] = message.y.astype(np.int32)
        else:  # label sets: their rows' extents and labels (the ones are implied)
            y = message.y
            columns.update(y_indptr=y.indptr.astype(np.int32), y_indices=y.indices.astype(np.int32))
        columns["w"] = message.w
    if message.row_max is not None:
        columns.update(row_max=message.row_max, row_sum=message.row_sum)
    arrays = {name: _one_row_list(values) for name, values in columns.items()}
    if not arrays:  # an empty message still needs one column to be a batch
        arrays["none"] = _one_row_list(np.zeros(0, dtype=np.int32))
    schema = pa.schema(
        [pa.field(name, array.type) for name, array in arrays.items()],
        metadata={_HEADER_KEY: json.dumps(header).encode()},
    )
    return pa.RecordBatch.from_arrays(list(arrays.values()), schema=schema)


def decode_shard(batch: pa.RecordBatch | pa.Table) -> ShardMessage:
    """Inverse of :func:`encode_shard`; accepts the Table a Flight reader returns as well."""
    message = ShardMessage(**json.loads(batch.schema.metadata[_HEADER_KEY]))
    names = batch.schema.names

    def values(name: str) -> np.ndarray:
        column = batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        return column.flatten().to_numpy(zero_copy_only=False)

    if "w" in names:
        from scipy import sparse

        message.w = values("w")
        rows = len(message.w)
        if "y" in names:
            message.y = values("y")
        else:
            indices = values("y_indices")
            message.y = sparse.csr_matrix(
                (np.ones(len(indices), dtype=message.w.dtype), indices, values("y_indptr")),
                shape=(rows, message.num_labels),
            )
        if "x" in names:
            message.X = values("x").reshape(rows, message.num_features)
        else:
            message.X = sparse.csr_matrix(
                (values("x_values"), values("x_indices"), values("x_indptr")),
                shape=(rows, message.num_features),
            )
    if "row_max" in names:
        message.row_max, message.row_sum = values("row_max"), values("row_sum")
    return message


def to_ipc(batch: pa.RecordBatch) -> bytes:
    """The batch as Arrow IPC stream bytes (what a broadcast carries)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.RecordBatch:
    """Inverse of :func:`to_ipc`."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()


def encode_checksum(digest: str) -> pa.RecordBatch:
    """A replica checksum as a one-row record batch."""
    return pa.RecordBatch.from_pydict({"digest": [digest]})


def decode_checksum(batch: pa.RecordBatch | pa.Table) -> str:
    return batch.column("digest")[0].as_py()


def encode_state(values: np.ndarray, factor: float) -> pa.RecordBatch:
    """A flattened replica (W then b) and its scalar multiplier, for a resynchronisation."""
    schema = pa.schema(
        [("state", pa.from_numpy_dtype(values.dtype))],
        metadata={b"factor": repr(float(factor)).encode()},
    )
    return pa.RecordBatch.from_arrays([pa.array(values)], schema=schema)


def decode_state(batch: pa.RecordBatch | pa.Table) -> tuple[np.ndarray, float]:
    """Inverse of :func:`encode_state`."""
    return np.asarray(batch.column("state").to_numpy()), float(batch.schema.metadata[b"factor"])


def encode_sums(values) -> pa.RecordBatch:
    """Float64 sums (a held-out loss and weight, or a loss and a whole gradient) as a
    one-column record batch; a numpy array travels without a copy."""
    array = pa.array(np.asarray(values, dtype=np.float64), type=pa.float64())
    return pa.RecordBatch.from_arrays([array], names=["sums"])


def decode_sums(batch: pa.RecordBatch | pa.Table) -> list[float]:
    return sums_array(batch).tolist()


def sums_array(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """:func:`encode_sums`'s values as a read-only float64 array, without a copy."""
    column = batch.column("sums")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.to_numpy(zero_copy_only=False)
