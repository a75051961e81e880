"""Large zeroed arrays whose memory the kernel backs with 2 MiB pages where it can.

A fit's big arrays (a worker's replica and its optimizer state, the driver's float64 model)
are written for the first time during the fit, and each first write of a 4 KiB page is a page
fault. Under a hypervisor each fault is dear: on the test machines, first writes to a fresh
2 GB array took 5 to 13 s, against 1.5 to 2 s when the array was advised to use transparent
huge pages (512 times fewer faults). Arrays of at least :data:`HUGE_BYTES` are therefore
anonymous memory maps advised with ``MADV_HUGEPAGE``; anonymous maps read as zeros, as
``np.zeros`` does. Where the platform has no such advice, they are plain ``np.zeros``.
"""

from __future__ import annotations

import mmap

import numpy as np

# Smaller arrays fault in quickly enough, and a 2 MiB page would mostly hold nothing.
HUGE_BYTES = 32 << 20

_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)


def zeros(shape, dtype) -> np.ndarray:
    """A C-contiguous zero array, on huge pages when it is large.

    Examples
    --------
    >>> zeros((2, 3), np.float32)
    array([[0., 0., 0.],
           [0., 0., 0.]], dtype=float32)
    """
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _ADVICE is None or size < HUGE_BYTES:
        return np.zeros(shape, dtype=dtype)
    memory = mmap.mmap(-1, size)
    try:
        memory.madvise(_ADVICE)
    except OSError:  # the kernel has no transparent huge pages: small pages it is
        pass
    return np.frombuffer(memory, dtype=dtype).reshape(shape)  # the array keeps the map alive


def zeros_like(array: np.ndarray) -> np.ndarray:
    """Zeros of ``array``'s shape and dtype in its memory order (C, or the transpose of a
    C-contiguous array, as a feature-major replica is).

    Examples
    --------
    >>> zeros_like(np.ones((3, 2)).T).flags.f_contiguous
    True
    """
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        return zeros(array.shape[::-1], array.dtype).T
    return zeros(array.shape, array.dtype)
