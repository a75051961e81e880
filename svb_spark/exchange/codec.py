"""Sufficient vectors <-> one Arrow record batch.

Layout: column ``u`` is a fixed-size list of K floats per row, column ``v`` a fixed-size list of
D floats per row; the header (step, rank, rows, weight sum, loss sum) rides in the schema
metadata, so one record batch is one self-describing message. Decoding is zero-copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

_HEADER_KEY = b"svb.header"


@dataclass
class SufficientVectors:
    """One worker's message for one step."""

    step: int
    rank: int
    U: np.ndarray  # rows x K, weighted (P - Y)
    V: np.ndarray  # rows x D, the standardized feature rows
    weight_sum: float
    loss_sum: float

    @property
    def rows(self) -> int:
        return int(self.U.shape[0])


def _fixed_size_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    width = matrix.shape[1]
    flat = pa.array(np.ascontiguousarray(matrix).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def encode(message: SufficientVectors) -> pa.RecordBatch:
    """Pack a worker's sufficient vectors and header into one record batch."""
    header = {
        "step": message.step,
        "rank": message.rank,
        "rows": message.rows,
        "weight_sum": message.weight_sum,
        "loss_sum": message.loss_sum,
    }
    u = _fixed_size_list(message.U)
    v = _fixed_size_list(message.V)
    schema = pa.schema(
        [pa.field("u", u.type), pa.field("v", v.type)],
        metadata={_HEADER_KEY: json.dumps(header).encode()},
    )
    return pa.RecordBatch.from_arrays([u, v], schema=schema)


def _matrix(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def decode(batch: pa.RecordBatch | pa.Table) -> SufficientVectors:
    """Inverse of :func:`encode`; accepts the Table a Flight reader returns as well."""
    header = json.loads(batch.schema.metadata[_HEADER_KEY])
    return SufficientVectors(
        step=header["step"],
        rank=header["rank"],
        U=_matrix(batch.column("u")),
        V=_matrix(batch.column("v")),
        weight_sum=header["weight_sum"],
        loss_sum=header["loss_sum"],
    )
