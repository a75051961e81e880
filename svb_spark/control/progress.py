"""Live per-epoch progress of a fit: rank 0 reports, the driver shows.

In classic mode the driver runs a :class:`ProgressServer`, a small TCP listener on the driver's
host, and rank 0 of the barrier stage sends it one JSON line per epoch through a
:class:`ProgressReporter`. Each line carries an HMAC-SHA256 of its body keyed by the fit's
secret, so the listener drops anything not sent by a task of this fit. Spark Connect has no
driver-side Python process next to the JVM to listen, so there rank 0's lines go to the
executor logs only.

Progress never slows or fails the fit: the reporter sends from its own thread, drops messages
it cannot send within a short timeout, and stops trying once the listener is gone.
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from svb_spark.control.signing import sign, verify

logger = logging.getLogger("svb_spark")

# A line longer than this is not a progress message; refuse it rather than buffer it.
_MAX_LINE = 1 << 16
_SEND_TIMEOUT = 2.0


class ProgressServer:
    """Accepts signed per-epoch messages on ``(host, port)`` and hands them to ``on_message``.

    Parameters
    ----------
    host : str
        Address to bind to: the driver's host as executors reach it (``spark.driver.host``).
    secret : str
        The fit's secret; lines signed with another key are dropped.
    on_message : callable
        Called with each verified message (a dict), in the listener's thread.

    Examples
    --------
    >>> seen = []
    >>> server = ProgressServer("127.0.0.1", "s3cret", seen.append)
    >>> reporter = ProgressReporter(server.address, "s3cret")
    >>> reporter.send({"epoch": 1, "objective": 0.5})
    >>> reporter.close()
    >>> import time
    >>> deadline = time.time() + 5  # the listener reads in its own thread
    >>> while not seen and time.time() < deadline:
    ...     time.sleep(0.05)
    >>> server.close()
    >>> seen
    [{'epoch': 1, 'objective': 0.5}]
    """

    def __init__(self, host: str, secret: str, on_message: Callable[[dict], None]) -> None:
        self._secret = secret
        self._on_message = on_message
        self._socket = socket.create_server((host, 0))
        self.address = (host, self._socket.getsockname()[1])
        self._closed = threading.Event()
        self._connections: list[tuple[threading.Thread, socket.socket]] = []
        self._thread = threading.Thread(target=self._accept, name="svb-progress", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            thread = threading.Thread(
                target=self._read, args=(connection,), name="svb-progress-conn", daemon=True
            )
            self._connections.append((thread, connection))
            thread.start()

    def _read(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rb") as lines:
            for line in lines:
                if len(line) > _MAX_LINE:
                    return
                message = verify(self._secret, line)
                if message is None:
                    logger.warning("dropped a progress message with a bad signature")
                    return
                try:
                    self._on_message(message)
                except Exception:  # a display error must not end the listener
                    logger.exception("progress display failed")

    def close(self, timeout: float = 1.0) -> None:
        """Stop listening, after reading what connected reporters already sent."""
        self._closed.set()
        # On Linux close() alone does not wake a thread blocked in accept(); shutdown() does.
        _shutdown(self._socket)
        self._socket.close()
        self._thread.join(timeout)
        for thread, connection in self._connections:
            # A reporter that finished has closed its end: the reader drains it and stops.
            # One that did not (a killed task) is cut off after ``timeout``.
            thread.join(timeout)
            _shutdown(connection)
            thread.join(timeout)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ProgressReporter:
    """Sends messages to a :class:`ProgressServer` from a background thread.

    ``send`` never blocks the caller; a message that cannot be delivered within
    ``timeout`` seconds is dropped and the reporter stops sending, so a driver listener that
    has gone away costs the training loop nothing.
    """

    def __init__(self, address: tuple[str, int], secret: str, timeout: float = _SEND_TIMEOUT):
        self._address = tuple(address)
        self._secret = secret
        self._timeout = timeout
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="svb-progress-send", daemon=True)
        self._thread.start()

    def send(self, message: dict) -> None:
        self._queue.put(message)

    def _run(self) -> None:
        connection = None
        try:
            while (message := self._queue.get()) is not None:
                if connection is None:
                    connection = socket.create_connection(self._address, timeout=self._timeout)
                connection.sendall(sign(self._secret, message))
        except OSError as error:
            logger.info("progress listener unreachable (%s); reporting to this log only", error)
        finally:
            if connection is not None:
                connection.close()

    def close(self, timeout: float = _SEND_TIMEOUT) -> None:
        """Flush what is queued (waiting at most ``timeout`` seconds) and stop."""
        self._queue.put(None)
        self._thread.join(timeout)


def format_progress(message: dict) -> str:
    """One human line for a progress message (an epoch's, or an L-BFGS iteration's)."""
    unit = message.get("unit", "epochs")[:-1]
    return (
        f"{unit} {message['epoch']}/{message['epochs']}  "
        f"objective {message['objective']:.6f}  "
        f"{message['rows_per_second']:,.0f} rows/s  "
        f"{message['bytes_sent']:,} bytes sent"
    )


def _in_notebook() -> bool:
    """True under an IPython kernel that can show rich output (Jupyter, Databricks)."""
    if "IPython" not in sys.modules:  # a kernel has imported it; importing it costs 0.4 s
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class ProgressDisplay:
    """Shows progress messages: one display updated in place in a notebook, log lines else.

    Log lines go to the ``svb_spark`` logger at INFO, shown where the application's logging
    shows INFO (the ``svb-spark`` command does; a script can ``logging.basicConfig();
    logging.getLogger("svb_spark").setLevel(logging.INFO)``, which leaves py4j's INFO lines out).
    """

    def __init__(self, description: str) -> None:
        self.description = description
        self._handle = None
        if _in_notebook():
            from IPython.display import display

            self._handle = display(f"{description}: starting", display_id=True)

    def __call__(self, message: dict) -> None:
        line = format_progress(message)
        if self._handle is not None:
            self._handle.update(f"{self.description}: {line}")
        else:
            logger.info("%s", line)


@contextmanager
def progress_listener(
    conf: Callable[[str], str | None] | None,
    secret: str,
    description: str,
    wanted: bool = True,
    also: Callable[[dict], None] | None = None,
) -> Iterator[tuple[str, int] | None]:
    """The driver's progress listener for one fit: yields its ``(host, port)``, or None.

    ``conf`` reads the SparkContext's conf keys, or is None on Spark Connect: only classic
    mode has a listener (Spark Connect's tasks cannot be assumed to reach the client, and
    their lines stay in the executor logs). A listener that cannot bind is not an error. Each
    message is shown, then handed to ``also`` (the fit's MLflow tracker) when given.
    """
    server = None
    if wanted and conf is not None:
        host = conf("spark.driver.host") or "127.0.0.1"
        display = ProgressDisplay(description)
        handler = display if also is None else _and_then(display, also)
        try:
            server = ProgressServer(host, secret, handler)
        except OSError as error:
            logger.warning("no live progress: cannot listen on %s (%s)", host, error)
    try:
        yield None if server is None else server.address
    finally:
        if server is not None:
            server.close()


def _and_then(first: Callable[[dict], None], second: Callable[[dict], None]):
    def both(message: dict) -> None:
        try:
            first(message)
        finally:  # a display that fails does not cost the tracker its message
            second(message)

    return both
