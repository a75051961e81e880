"""The model's way home: rank 0 sends the trained weights straight to the driver.

Result rows would carry K x D floats through the barrier stage's shuffle (written, read back
and collected: three passes through the JVM). Instead, in classic mode the driver listens on
a :class:`ModelInbox` and rank 0 sends each array once over a TCP connection, from the
replica's memory to the driver; the shuffle then carries only the small record of the fit,
which names the delivery by a token. The header is signed with the fit's secret (as progress
lines are), so the inbox takes weights only from a task of this fit.

The driver builds the float64 model in original feature units (a :class:`ModelBuild`) as the
weights arrive, a few megabytes at a time: the float32 replica is never held whole on the
driver, and at 2^28 coefficients the build costs no pass of its own after the stage. In the
class-sharded mode every rank sends its block of classes, built into its rows of the model.

Where the inbox cannot be used (Spark Connect, mutual TLS between the workers, Spark's network
encryption, or a driver the executors cannot reach) the weights travel as result rows.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from svb_spark.control.listener import ConnectionListener
from svb_spark.control.signing import sign, verify
from svb_spark.core import standardization

logger = logging.getLogger(__name__)

_MAX_HEADER = 1 << 16


class ModelInbox(ConnectionListener):
    """Receives signed deliveries of named arrays on ``(host, port)``; :meth:`take` them by
    token, each in its logical shape (a transposed array is a view of the storage it came in).
    With a ``build``, the array named ``W`` is built into it as it arrives.

    Examples
    --------
    >>> inbox = ModelInbox("127.0.0.1", "s3cret")
    >>> send_arrays(inbox.address, "s3cret", "t1", {"b": np.arange(3.0)})
    True
    >>> inbox.take("t1")["b"]
    array([0., 1., 2.])
    >>> inbox.close()
    """

    def __init__(
        self, host: str, secret: str, timeout: float = 120.0, build: ModelBuild | None = None
    ) -> None:
        self._secret = secret
        self._timeout = timeout
        self._build = build
        self._received: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()
        super().__init__(host, "svb-inbox")

    def _serve(self, connection: socket.socket) -> None:
        try:
            with connection:
                connection.settimeout(self._timeout)
                reader = connection.makefile("rb")
                header = verify(self._secret, reader.readline(_MAX_HEADER))
                if header is None:
                    logger.warning("refused a model delivery with a bad signature")
                    return
                transposed = set(header.get("transposed", ()))
                first_rows = header.get("first_rows", {})  # a class-sharded block's first class
                arrays = {}
                for name, dtype, shape in header["arrays"]:
                    dtype, flipped = np.dtype(dtype), name in transposed
                    built = None
                    if name in first_rows and self._build is not None:
                        built = self._build.receive_block(
                            reader, dtype, shape, flipped, first_rows[name], header["attempt"]
                        )
                    elif name == "W" and self._build is not None:
                        built = self._build.receive(reader, dtype, shape, flipped)
                    if built is None:
                        built = _receive(reader, dtype, shape, flipped)
                    if built is _GONE:
                        return  # the sender went away: no delivery
                    arrays[name] = built
                with self._lock:
                    self._received[header["token"]] = arrays
                connection.sendall(b"ok\n")
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("a model delivery failed", exc_info=True)

    def take(self, token: str) -> dict[str, np.ndarray] | None:
        """The arrays delivered under ``token`` (once), or None."""
        with self._lock:
            return self._received.pop(token, None)

    def stacked(self, blocks: list[np.ndarray]) -> np.ndarray | None:
        """The whole model when ``blocks`` (in rank order) are the blocks built in place in
        it, else None."""
        return None if self._build is None else self._build.stacked(blocks)


def send_arrays(
    address: tuple[str, int],
    secret: str,
    token: str,
    arrays: dict[str, np.ndarray],
    timeout: float = 120.0,
    transposed: tuple[str, ...] = (),
    first_rows: dict[str, int] | None = None,
    attempt: str = "",
) -> bool:
    """Send C-contiguous ``arrays`` to the inbox at ``address``; True once it acknowledged
    them, False (logged) if it could not be reached or did not confirm. The arrays named in
    ``transposed`` are the storage of their transpose (a feature-major replica's D x K); those
    in ``first_rows`` are class-sharded blocks of W, built in place from that row; the blocks
    of one stage ``attempt`` (a name its every task gives alike) share one model."""
    header = {
        "token": token,
        "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()],
        "transposed": list(transposed),
        "first_rows": first_rows or {},
        "attempt": attempt,
    }
    try:
        with socket.create_connection(tuple(address), timeout=timeout) as connection:
            connection.sendall(sign(secret, header))
            for array in arrays.values():
                connection.sendall(memoryview(np.ascontiguousarray(array)).cast("B"))
            reply = connection.makefile("rb").readline(16)
    except OSError as error:
        logger.warning("could not send the model to the driver (%s); sending result rows", error)
        return False
    return reply == b"ok\n"


_GONE = object()  # what a receive returns when the sender went away mid-array


def _read_into(reader, array: np.ndarray) -> bool:
    """Fill ``array``'s memory from ``reader``; False if the stream ended first."""
    view = memoryview(array).cast("B")
    got = 0
    while got < len(view):
        n = reader.readinto(view[got:])
        if not n:
            return False
        got += n
    return True


# How much of W the inbox reads at a time before widening and scaling it into the model.
_BUILD_CHUNK_BYTES = 8 << 20


def _stream(reader, dtype: np.dtype, shape: list[int], build) -> bool:
    """Read an array of ``shape`` from ``reader`` a chunk of rows at a time, calling
    ``build(piece, first_row)`` on each; False if the stream ended first.

    Two staging chunks take turns: one thread builds a chunk while the next one is read (both
    release the GIL), so the build hides behind the transfer instead of following it."""
    rows, columns = shape
    per_chunk = max(1, _BUILD_CHUNK_BYTES // max(1, columns * dtype.itemsize))
    staging = [np.empty(min(per_chunk, rows) * columns, dtype=dtype) for _ in range(2)]
    building = None
    with ThreadPoolExecutor(1, thread_name_prefix="svb-model-build") as builder:
        for turn, start in enumerate(range(0, rows, per_chunk)):
            n = min(per_chunk, rows - start)
            piece = staging[turn % 2][: n * columns].reshape(n, columns)
            if not _read_into(reader, piece):  # the other chunk may still be building
                return False
            if building is not None:
                building.result()  # the chunk before: its staging is read into next
            building = builder.submit(build, piece, start)
        if building is not None:
            building.result()
    return True


def _receive(reader, dtype: np.dtype, shape: list[int], transposed: bool):
    """One array as sent, in its logical shape, or ``_GONE``."""
    array = np.empty(shape, dtype=dtype)
    if not _read_into(reader, array):
        return _GONE
    return array.T if transposed else array


# Models of at least this many coefficients get their float64 buffer made while the stage
# runs: the first touch of a fresh 2 GB buffer took 3 to 10 s on the test machines (the pages
# are faulted in one by one), more than all the rest of the fit's fixed cost.
PREPARED_COEFFICIENTS = 1 << 24


class ModelBuffer:
    """The flat float64 buffer of ``size`` elements that the model is built in (see
    :func:`svb_spark.core.standardization.unstandardize`), allocated and touched page by page in a
    background thread while the driver waits for the stage.

    Examples
    --------
    >>> buffer = ModelBuffer(6)
    >>> buffer.take().shape
    (6,)
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._buffer: np.ndarray | None = None
        self._thread = threading.Thread(target=self._make, name="svb-model-buffer", daemon=True)
        self._thread.start()

    def _make(self) -> None:
        buffer = np.empty(self._size, dtype=np.float64)
        buffer[::512] = 0.0  # one write per 4 KiB page faults every page in
        self._buffer = buffer

    def take(self) -> np.ndarray:
        self._thread.join()
        if self._buffer is None:  # the thread failed (e.g. no memory): make it here
            self._buffer = np.empty(self._size, dtype=np.float64)
        return self._buffer


class ModelBuild:
    """The float64 K x D model in original feature units, built from the trained weights (on
    standardized features, float32 or float64): as they arrive in the inbox, a chunk of
    storage rows at a time (:meth:`receive`), or after the stage from the arrays the result
    carried (:meth:`finish`). Models of at least :data:`PREPARED_COEFFICIENTS` are built in
    a :class:`ModelBuffer` made while the stage runs.

    The buffer takes one delivery: a later one (from a retried stage) is received as it was
    sent and built by :meth:`finish`, so two attempts never write into the same memory.

    Examples
    --------
    >>> build = ModelBuild(2, 3, scale=np.array([1.0, 2.0, 4.0]), mean=None)
    >>> W, b = build.finish(np.ones((2, 3), dtype=np.float32), np.zeros(2, dtype=np.float32))
    >>> W
    array([[1., 2., 4.],
           [1., 2., 4.]])
    """

    def __init__(
        self, num_classes: int, num_features: int, scale: np.ndarray, mean: np.ndarray | None
    ) -> None:
        self._size = num_classes * num_features
        self._num_features = num_features
        self._scale = np.asarray(scale, dtype=np.float64)
        self._mean = mean
        self._buffer = ModelBuffer(self._size) if self._size >= PREPARED_COEFFICIENTS else None
        self._claimed = False
        self._built: np.ndarray | None = None
        self._attempt: str | None = None  # the stage attempt whose blocks are built in place
        self._blocks: dict[int, np.ndarray] = {}  # first class -> a block's rows of the model
        self._lock = threading.Lock()

    def _take_buffer(self) -> np.ndarray:
        if self._buffer is not None:
            return self._buffer.take()
        return np.empty(self._size, dtype=np.float64)

    def receive(self, reader, dtype: np.dtype, shape: list[int], transposed: bool):
        """Read W's storage (``shape``, the transpose of W's if ``transposed``) from
        ``reader``, building the model from it chunk by chunk; the built W, ``_GONE`` if the
        stream ended early, or None when the buffer already took a delivery (read it as
        sent)."""
        with self._lock:
            if self._claimed:
                return None
            self._claimed = True
        out = self._take_buffer()
        rows, columns = shape

        def build(piece: np.ndarray, start: int) -> None:
            n = len(piece)
            chunk = out[start * columns : (start + n) * columns]
            if transposed:  # a storage row is one feature's: it takes that feature's factor
                scale = self._scale[start : start + n]
                standardization.unstandardize_weights(piece.T, scale, chunk)
            else:
                standardization.unstandardize_weights(piece, self._scale, chunk)

        if not _stream(reader, dtype, shape, build):
            return _GONE
        storage = out.reshape(rows, columns)
        self._built = storage.T if transposed else storage
        return self._built

    def receive_block(
        self, reader, dtype: np.dtype, shape: list[int], transposed: bool, first: int,
        attempt: str,
    ):  # fmt: skip
        """:meth:`receive` for one class-sharded block of W, the classes from ``first`` on,
        built into its rows of the K x D model. The blocks of one stage attempt share the
        buffer; a later attempt's are read as sent (None), so that one model never mixes
        built blocks with blocks still to build. Returns the block's rows of the model."""
        with self._lock:
            if self._claimed and self._attempt != attempt:
                return None
            if not self._claimed:
                self._claimed, self._attempt = True, attempt
                self._built = self._take_buffer().reshape(-1, self._num_features)
        model = self._built
        classes = shape[1] if transposed else shape[0]
        rows = model[first : first + classes]

        def build(piece: np.ndarray, start: int) -> None:
            n = len(piece)
            if transposed:  # storage rows are features: columns start .. start + n of the block
                np.multiply(piece.T, self._scale[start : start + n], out=rows[:, start : start + n])
            else:
                np.multiply(piece, self._scale, out=rows[start : start + n], dtype=np.float64)

        if not _stream(reader, dtype, shape, build):
            return _GONE
        self._blocks[first] = rows
        return rows

    def stacked(self, blocks: list[np.ndarray]) -> np.ndarray | None:
        """The model built in place when ``blocks`` are exactly its blocks, in order."""
        built = [self._blocks[first] for first in sorted(self._blocks)]
        if len(built) == len(blocks) and all(a is b for a, b in zip(built, blocks)):
            if sum(len(block) for block in blocks) == len(self._built):
                return self._built
        return None

    def finish(self, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The float64 model ``(W, b)`` in original feature units, from the result's
        arrays: ``W`` is either what :meth:`receive` built or the trained weights."""
        if W is not self._built:
            W = standardization.unstandardize_weights(W, self._scale, self._unclaimed_buffer())
        return W, standardization.unstandardize_intercept(W, b, self._mean)

    def _unclaimed_buffer(self) -> np.ndarray:
        with self._lock:
            claimed, self._claimed = self._claimed, True
        return np.empty(self._size, dtype=np.float64) if claimed else self._take_buffer()


def inbox_wanted(conf: Callable[[str], str | None] | None, tls) -> bool:
    """Whether the weights may travel outside Spark's own channels: classic mode (``conf``
    reads the SparkContext's conf keys; None on Spark Connect), no TLS between the workers
    (``tls`` is None) and none of Spark's network or I/O encryption."""
    if conf is None or tls is not None:
        return False
    encrypted = ("spark.network.crypto.enabled", "spark.io.encryption.enabled")
    return not any(str(conf(key)).lower() == "true" for key in encrypted)
