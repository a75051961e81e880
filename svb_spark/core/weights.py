"""The weights one replica holds: W in its layout, b, the L2 scale factor and the optimizer's
state arrays, owned together (as scikit-learn's ``WeightVector`` owns ``wscale``).

Every replica must hold the same bits. So everything a replica keeps between steps lives here,
and the replica check, the resynchronisation and the checkpoints all see it through
:meth:`ReplicaWeights.arrays`.
"""

from __future__ import annotations

import zlib

import numpy as np

from svb_spark.core import numerics

# Bytes of the replica one check hashes (about 2 ms of CRC-32): a check every verifyInterval
# exchanges then costs a bounded sliver of the loop at any K x D, and successive checks cycle
# through the whole replica.
DIGEST_BLOCK_BYTES = 4 << 20


def _bytes_of(array: np.ndarray) -> memoryview:
    """The bytes of ``array`` as a flat memoryview, in memory order: a copy only if it is
    neither C- nor Fortran-contiguous. (A state array made like a feature-major ``W`` is
    Fortran-ordered; copying it for every replica check cost a 1000 x 2^18 fit two minutes.)"""
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        array = array.T  # the same memory, C-ordered: every replica reads it alike
    return memoryview(np.ascontiguousarray(array)).cast("B")


class ReplicaWeights:
    """``factor * W`` and ``b``, plus named optimizer state (e.g. SAGA's average gradient).

    ``W`` is always a K x D view. Sparse rows touch a few features of every class, so for them
    it is a view of a feature-major (D x K) array; otherwise it is class-major. ``factor``
    makes the L2 decay of sparse updates O(1): the model is ``factor * W``.
    """

    def __init__(self, num_classes: int, num_features: int, dtype, feature_major: bool = False):
        shape = (num_classes, num_features)
        if feature_major:
            self.W = numerics.feature_major_zeros(*shape, dtype)
        else:
            self.W = np.zeros(shape, dtype=dtype)
        self.b = np.zeros(num_classes, dtype=dtype)
        self.factor = 1.0
        self.state: dict[str, np.ndarray] = {}  # the optimizer's arrays, by name

    @property
    def storage(self) -> np.ndarray:
        """The contiguous array that holds ``W``: K x D, or D x K when feature-major."""
        return self.W if self.W.flags.c_contiguous else self.W.T

    @property
    def feature_major(self) -> bool:
        return self.storage is not self.W

    def start_from(self, W: np.ndarray, b: np.ndarray) -> None:
        """Make the model exactly (W, b), copied in (W and b may be shared, e.g. a broadcast
        value: W is updated in place) with ``factor = 1``."""
        self.W[...] = np.asarray(W, dtype=self.W.dtype).reshape(self.W.shape)
        self.b[...] = np.asarray(b, dtype=self.b.dtype).reshape(self.b.shape)
        self.factor = 1.0

    def fold_factor(self) -> None:
        """Multiply the scalar into ``W`` (in place), leaving ``factor = 1``."""
        if self.factor != 1.0:
            self.W *= self.W.dtype.type(self.factor)
            self.factor = 1.0

    def penalty(self, reg_param: float, reg_scale) -> float:
        """The L2 penalty of the model ``factor * W``."""
        return numerics.regularization(self.W, reg_param, reg_scale, self.factor)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array replicas must agree on, by name, in a fixed order."""
        return {"W": self.storage, "b": self.b, **self.state}

    def digest(self, check: int | None = None, block_bytes: int | None = None) -> str:
        """A checksum of the factor, ``b`` and one block of the arrays' bytes.

        The arrays of :meth:`arrays` are read as one byte sequence cut into blocks of
        ``block_bytes`` (default :data:`DIGEST_BLOCK_BYTES`); check number ``check`` hashes
        block ``check % digest_blocks()``, so successive checks cover the whole replica once
        every :meth:`digest_blocks` checks, at a bounded cost each. ``check=None`` hashes
        every block. CRC-32 over the arrays' own memory: no copy, about 2 GB/s.
        """
        block_bytes = block_bytes or DIGEST_BLOCK_BYTES
        views = [_bytes_of(a) for a in self.arrays().values()]
        total = sum(len(v) for v in views)
        if check is None:
            start, end, block = 0, total, -1
        else:
            block = check % self.digest_blocks(block_bytes)
            start, end = block * block_bytes, (block + 1) * block_bytes
        crc = zlib.crc32(np.float64(self.factor).tobytes())
        crc = zlib.crc32(_bytes_of(self.b), crc)
        offset = 0
        for view in views:
            lo, hi = max(start - offset, 0), min(end - offset, len(view))
            if lo < hi:
                crc = zlib.crc32(view[lo:hi], crc)
            offset += len(view)
        return f"{block}:{total}:{crc:08x}"

    def digest_blocks(self, block_bytes: int | None = None) -> int:
        """How many checks of :meth:`digest` cover the whole replica."""
        total = sum(a.nbytes for a in self.arrays().values())
        return max(1, -(-total // (block_bytes or DIGEST_BLOCK_BYTES)))

    def flat(self) -> np.ndarray:
        """All arrays, raveled and concatenated in :meth:`arrays` order."""
        return np.concatenate([a.ravel() for a in self.arrays().values()])

    def load_flat(self, values: np.ndarray, factor: float) -> None:
        """Inverse of :meth:`flat` (with the factor), into this replica's own arrays."""
        arrays = self.arrays()
        expected = sum(a.size for a in arrays.values())
        if values.size != expected:
            raise ValueError(
                f"a replica of {expected} values cannot load {values.size} values (another "
                "shape, layout or solver)"
            )
        start = 0
        for array in arrays.values():
            array[...] = values[start : start + array.size].reshape(array.shape)
            start += array.size
        self.factor = factor
