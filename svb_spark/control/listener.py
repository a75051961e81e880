"""A TCP listener on the driver that serves every connection in a thread of its own: the base
of the model inbox (:mod:`svb_spark.control.delivery`) and the hello board
(:mod:`svb_spark.control.board`)."""

from __future__ import annotations

import socket
import threading


class ConnectionListener:
    """Listens on ``(host, a free port)``, published as ``address``, and hands every accepted
    connection to :meth:`_serve` in a daemon thread. A subclass sets its own state before
    calling ``__init__``: connections may arrive as soon as it returns."""

    def __init__(self, host: str, name: str) -> None:
        self._name = name
        self._socket = socket.create_server((host, 0))
        self.address = (host, self._socket.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name=name, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            threading.Thread(
                target=self._serve, args=(connection,), name=f"{self._name}-conn", daemon=True
            ).start()

    def _serve(self, connection: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._socket.close()
        self._thread.join(1.0)
