"""The model's way home: rank 0 sends the trained weights straight to the driver.

Result rows would carry K x D floats through the barrier stage's shuffle (written, read back
and collected: three passes through the JVM). Instead, in classic mode the driver listens on
a :class:`ModelInbox` and rank 0 sends each array once over a TCP connection, from the
replica's memory into the buffer the driver keeps; the shuffle then carries only the small
record of the fit, which names the delivery by a token. The header is signed with the fit's
secret (as progress lines are), so the inbox takes weights only from a task of this fit.

Where the inbox cannot be used (Spark Connect, mutual TLS between the workers, Spark's network
encryption, or a driver the executors cannot reach) the weights travel as result rows.
"""

from __future__ import annotations

import logging
import socket
import threading

import numpy as np

from svb_spark.listener import ConnectionListener
from svb_spark.progress import sign, verify

logger = logging.getLogger(__name__)

_MAX_HEADER = 1 << 16


class ModelInbox(ConnectionListener):
    """Receives signed deliveries of named arrays on ``(host, port)``; :meth:`take` them by
    token.

    Examples
    --------
    >>> inbox = ModelInbox("127.0.0.1", "s3cret")
    >>> send_arrays(inbox.address, "s3cret", "t1", {"b": np.arange(3.0)})
    True
    >>> inbox.take("t1")["b"]
    array([0., 1., 2.])
    >>> inbox.close()
    """

    def __init__(self, host: str, secret: str, timeout: float = 120.0) -> None:
        self._secret = secret
        self._timeout = timeout
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
                arrays = {}
                for name, dtype, shape in header["arrays"]:
                    array = np.empty(shape, dtype=np.dtype(dtype))
                    view = memoryview(array).cast("B")
                    got = 0
                    while got < len(view):
                        n = reader.readinto(view[got:])
                        if not n:
                            return  # the sender went away: no delivery
                        got += n
                    arrays[name] = array
                with self._lock:
                    self._received[header["token"]] = arrays
                connection.sendall(b"ok\n")
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("a model delivery failed", exc_info=True)

    def take(self, token: str) -> dict[str, np.ndarray] | None:
        """The arrays delivered under ``token`` (once), or None."""
        with self._lock:
            return self._received.pop(token, None)


def send_arrays(
    address: tuple[str, int],
    secret: str,
    token: str,
    arrays: dict[str, np.ndarray],
    timeout: float = 120.0,
) -> bool:
    """Send C-contiguous ``arrays`` to the inbox at ``address``; True once it acknowledged
    them, False (logged) if it could not be reached or did not confirm."""
    header = {
        "token": token,
        "arrays": [[name, a.dtype.str, list(a.shape)] for name, a in arrays.items()],
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


# Models of at least this many coefficients get their float64 buffer made while the stage
# runs: the first touch of a fresh 2 GB buffer took 3 to 10 s on the test machines (the pages
# are faulted in one by one), more than all the rest of the fit's fixed cost.
PREPARED_COEFFICIENTS = 1 << 24


class ModelBuffer:
    """The flat float64 buffer of ``size`` elements that the model is built in (see
    :func:`svb_spark.solver.unstandardize`), allocated and touched page by page in a
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


def inbox_wanted(spark, config) -> bool:
    """Whether the weights may travel outside Spark's own channels: classic mode, no TLS
    between the workers and none of Spark's network or I/O encryption."""
    from svb_spark.session import spark_conf, spark_context

    if spark_context(spark) is None or config.tls is not None:
        return False
    encrypted = ("spark.network.crypto.enabled", "spark.io.encryption.enabled")
    return not any(str(spark_conf(spark, key)).lower() == "true" for key in encrypted)
