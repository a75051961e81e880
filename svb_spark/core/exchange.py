"""The contract every exchange mode's transport implements: give every worker all workers'
messages for a step, in rank order, and count the bytes moved. The core trains against it;
:mod:`svb_spark.transport` implements it (Arrow Flight between tasks, threads in one process)."""

from __future__ import annotations

import abc

import pyarrow as pa

from svb_spark.core.wire import message_bytes


class ExchangeError(RuntimeError):
    """A peer could not be reached or refused a message."""


class ExchangeTimeoutError(ExchangeError, TimeoutError):
    """A peer's message did not arrive within the exchange timeout."""


class Exchange(abc.ABC):
    """Swaps one Arrow record batch per worker and exchange among ``num_workers`` workers.

    ``all_gather(round_index, batch)`` returns every worker's batch for that exchange ordered by
    rank (this worker's own batch included), so that every replica applies the same update in
    the same order. Every exchange counts the payload and framing bytes it sends and receives,
    in total and per exchange (``sent_per_exchange``, and its payload alone in
    ``payload_per_exchange``: what the cost model predicts).
    """

    def __init__(self, rank: int, num_workers: int) -> None:
        self.rank = rank
        self.num_workers = num_workers
        self.reset_counts()

    def reset_counts(self) -> None:
        """Start the byte counters at zero (after exchanges that are not training's)."""
        self.payload_sent = self.framing_sent = 0
        self.payload_received = self.framing_received = 0
        self.sent_per_exchange: list[int] = []
        self.payload_per_exchange: list[int] = []

    @property
    def bytes_sent(self) -> int:
        return self.payload_sent + self.framing_sent

    @property
    def bytes_received(self) -> int:
        return self.payload_received + self.framing_received

    def _count(self, sent: pa.RecordBatch, copies: int, received: list) -> None:
        payload, framing = message_bytes(sent)
        self.payload_sent += payload * copies
        self.framing_sent += framing * copies
        self.sent_per_exchange.append((payload + framing) * copies)
        self.payload_per_exchange.append(payload * copies)
        for message in received:
            payload, framing = message_bytes(message)
            self.payload_received += payload
            self.framing_received += framing

    @abc.abstractmethod
    def all_gather(
        self, round_index: int, batch: pa.RecordBatch
    ) -> list[pa.RecordBatch | pa.Table]:
        """Send ``batch`` to every peer and return all workers' batches for this exchange."""

    def close(self) -> None:  # noqa: B027 - transports without resources need nothing here
        """Release sockets and threads; the default has none."""

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
