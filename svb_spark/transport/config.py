"""How a fit's workers talk to each other: made by planning on the driver, read only by the
barrier task and the transports (the core trains against the Exchange contract and knows none
of it)."""

from __future__ import annotations

from dataclasses import dataclass

from svb_spark.transport.tls import TlsFiles


@dataclass(frozen=True)
class TransportConfig:
    """A fit's transport settings, as plain values (pickled into the task closure).

    ``timeout`` is the seconds a worker waits for a peer (the exchangeTimeout param), also
    the driver's listeners' read timeout; ``max_message_bytes`` the largest message a peer
    may send (bigger ones are refused); ``tls`` the PEM files of mutual TLS between the
    workers, or None.
    """

    timeout: float = 120.0
    max_message_bytes: int | None = None
    tls: TlsFiles | None = None
