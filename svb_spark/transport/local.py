"""An in-process exchange between threads: the training loop without Spark or sockets."""

from __future__ import annotations

import threading

import pyarrow as pa

from svb_spark.core.exchange import Exchange
from svb_spark.transport.base import wait_for_messages


class LocalExchangeGroup:
    """Shared mailbox of ``num_workers`` threads; ``member(rank)`` gives each its Exchange."""

    def __init__(self, num_workers: int, timeout: float = 60.0) -> None:
        self.num_workers = num_workers
        self.timeout = timeout
        self._messages: dict[tuple[int, int], pa.RecordBatch] = {}
        self._reads: dict[int, int] = {}
        self._arrived = threading.Condition()

    def member(self, rank: int) -> LocalExchange:
        return LocalExchange(self, rank)

    def _post(self, step: int, rank: int, batch: pa.RecordBatch) -> None:
        with self._arrived:
            self._messages[(step, rank)] = batch
            self._arrived.notify_all()

    def _collect(self, step: int, reader: int) -> list[pa.RecordBatch]:
        ranks = list(range(self.num_workers))
        keys = [(step, r) for r in ranks]
        with self._arrived:
            wait_for_messages(self._arrived, self._messages, step, ranks, reader, self.timeout)
            batches = [self._messages[k] for k in keys]
            # The last reader of a step frees it, so memory does not grow with the steps.
            self._reads[step] = self._reads.get(step, 0) + 1
            if self._reads[step] == self.num_workers:
                del self._reads[step]
                for k in keys:
                    del self._messages[k]
            return batches


class LocalExchange(Exchange):
    """One thread's view of a :class:`LocalExchangeGroup`."""

    def __init__(self, group: LocalExchangeGroup, rank: int) -> None:
        super().__init__(rank, group.num_workers)
        self._group = group

    def all_gather(
        self, round_index: int, batch: pa.RecordBatch
    ) -> list[pa.RecordBatch | pa.Table]:
        self._group._post(round_index, self.rank, batch)
        batches = self._group._collect(round_index, self.rank)
        peers = [b for r, b in enumerate(batches) if r != self.rank]
        self._count(batch, len(peers), peers)
        return batches
