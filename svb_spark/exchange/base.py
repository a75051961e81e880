"""The one interface every exchange mode implements."""

from __future__ import annotations

import abc

import pyarrow as pa


class ExchangeError(RuntimeError):
    """A peer could not be reached or refused a message."""


class ExchangeTimeoutError(ExchangeError, TimeoutError):
    """A peer's message did not arrive within the exchange timeout."""


class Exchange(abc.ABC):
    """Swaps one Arrow record batch per worker and step among ``num_workers`` workers.

    ``all_gather(step, batch)`` returns every worker's batch for ``step`` ordered by rank (this
    worker's own batch included), so that every replica applies the same update in the same
    order. Implementations count the payload bytes they send and receive.
    """

    def __init__(self, rank: int, num_workers: int) -> None:
        self.rank = rank
        self.num_workers = num_workers
        self.bytes_sent = 0
        self.bytes_received = 0

    @abc.abstractmethod
    def all_gather(self, step: int, batch: pa.RecordBatch) -> list[pa.RecordBatch | pa.Table]:
        """Send ``batch`` to every peer and return all workers' batches for ``step``."""

    def close(self) -> None:  # noqa: B027 - transports without resources need nothing here
        """Release sockets and threads; the default has none."""

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
