"""The rendezvous through the driver: the barrier tasks swap their hellos in milliseconds.

``BarrierTaskContext.allGather`` takes about a second (Spark's barrier coordinator answers on a
one-second poll), which is most of a small fit's fixed cost. In classic mode the driver already
listens for the model (:mod:`svb_spark.control.delivery`); it also keeps a
:class:`HelloBoard`, where every task posts its signed hello and waits for all of them, in rank
order.

The board answers only while every rank's poster is still connected: a hello whose task has
died (a failed attempt of the stage) is dropped when its connection closes, so a retried
attempt meets its own tasks. A task that cannot connect to the board at all swaps its hellos
with ``allGather`` instead; every task of a stage sees the same driver, so they all do.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time

from svb_spark.control.listener import ConnectionListener
from svb_spark.control.signing import sign, verify

logger = logging.getLogger(__name__)

_MAX_LINE = 1 << 20
_CONNECT_SECONDS = 10.0
_POLL_SECONDS = 0.05  # how often waiting posters check that the others are still there


class HelloBoard(ConnectionListener):
    """Collects one signed hello per rank of a stage on ``(host, port)`` and answers every
    poster with all of them, once the last has arrived.

    Examples
    --------
    >>> board = HelloBoard("127.0.0.1", "s3cret")
    >>> other = threading.Thread(target=swap_hellos, args=(board.address, "s3cret", 1, 2, "b"))
    >>> other.start()
    >>> swap_hellos(board.address, "s3cret", 0, 2, "a")
    ['a', 'b']
    >>> other.join(); board.close()
    """

    def __init__(self, host: str, secret: str, timeout: float = 120.0) -> None:
        self._secret = secret
        self._timeout = timeout
        self._hellos: dict[int, tuple[str, socket.socket]] = {}  # rank: (hello, its poster)
        self._answered: dict[socket.socket, list[str]] = {}  # a whole round, for each poster
        self._all_in = threading.Condition()
        super().__init__(host, "svb-board")

    def _serve(self, connection: socket.socket) -> None:
        try:
            with connection:
                connection.settimeout(self._timeout)
                posted = verify(self._secret, connection.makefile("rb").readline(_MAX_LINE))
                if posted is None:
                    logger.warning("refused a hello with a bad signature")
                    return
                rank, workers = int(posted["rank"]), int(posted["workers"])
                hellos = self._wait_for_all(rank, workers, str(posted["hello"]), connection)
                if hellos is not None:
                    connection.sendall(sign(self._secret, {"hellos": hellos}))
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("a hello failed", exc_info=True)

    def _wait_for_all(self, rank: int, workers: int, hello: str, connection) -> list[str] | None:
        """Every rank's hello once all ``workers`` posters are connected at once, or None if
        this poster went away or the timeout passed first."""
        deadline = time.monotonic() + self._timeout
        with self._all_in:
            self._hellos[rank] = (hello, connection)
            while True:
                answer = self._answered.pop(connection, None)
                if answer is not None:
                    return answer
                if not _connected(connection) or time.monotonic() > deadline:
                    if self._hellos.get(rank, (None, None))[1] is connection:
                        del self._hellos[rank]
                    return None
                # Drop the hellos of posters that went away (a failed attempt's tasks).
                for other, (_, poster) in list(self._hellos.items()):
                    if not _connected(poster):
                        del self._hellos[other]
                if all(r in self._hellos for r in range(workers)):  # a round: answer it whole
                    answer = [self._hellos[r][0] for r in range(workers)]
                    for _, poster in self._hellos.values():
                        self._answered[poster] = answer
                    self._hellos.clear()
                    self._all_in.notify_all()
                    continue
                self._all_in.wait(_POLL_SECONDS)


def _connected(connection: socket.socket) -> bool:
    """Whether the poster is still there: it sends nothing after its hello, so a readable
    socket means it closed (or broke) the connection."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return not readable or connection.recv(1, socket.MSG_PEEK) != b""
    except (OSError, ValueError):
        return False


def swap_hellos(
    address: tuple[str, int],
    secret: str,
    rank: int,
    workers: int,
    hello: str,
    timeout: float = 120.0,
) -> list[str] | None:
    """Post ``hello`` for ``rank`` of ``workers`` on the board at ``address`` and return every
    rank's hello, in rank order, or None if the board cannot be connected to. Raises
    RuntimeError, naming the board, if it answers nothing signed within ``timeout`` seconds."""
    try:
        connection = socket.create_connection(tuple(address), timeout=_CONNECT_SECONDS)
    except OSError as error:
        logger.warning("cannot reach the driver's hello board (%s): using allGather", error)
        return None
    try:
        with connection:
            connection.settimeout(timeout)
            connection.sendall(sign(secret, {"rank": rank, "workers": workers, "hello": hello}))
            answer = verify(secret, connection.makefile("rb").readline(_MAX_LINE))
    except OSError as error:
        answer, reason = None, f"{type(error).__name__}: {error}"
    else:
        reason = "no signed answer"
    if answer is None:
        raise RuntimeError(
            f"rank {rank} could not swap hellos through the driver's board at "
            f"{address[0]}:{address[1]} ({reason} within {timeout:.0f} s): a peer never "
            "posted its hello"
        )
    return list(answer["hellos"])
