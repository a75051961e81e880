"""A direct mesh of Arrow Flight servers between the workers of one fit.

Every worker runs a Flight server that accepts ``do_put`` calls into a mailbox keyed by
(step, sender rank). A step sends this worker's record batch to every peer, then waits until the
mailbox holds every peer's batch for that step. A loopback ``do_put`` costs about a millisecond,
against about a second for ``BarrierTaskContext.allGather``, which is why the step loop uses
this mesh and leaves Spark's control plane alone.

This module knows nothing of Spark: the caller swaps ``location`` strings once (the barrier
task does it with ``allGather``) and passes them to :meth:`FlightMeshExchange.connect`.

With :class:`~svb_spark.exchange.tls.TlsFiles` the mesh runs over ``grpc+tls`` with mutual
authentication: each server asks every caller for a certificate signed by the configured CA,
and each client checks the server's certificate the same way. The secret is checked either
way: TLS says a peer is some worker of the cluster, the secret says it is a worker of this fit.
"""

from __future__ import annotations

import hmac
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.flight as flight

from svb_spark.exchange.base import (
    Exchange,
    ExchangeError,
    ExchangeTimeoutError,
    wait_for_messages,
)
from svb_spark.exchange.tls import TLS_CONF_KEYS, TlsFiles, TlsMaterial, read_tls_files

logger = logging.getLogger(__name__)

_AUTH_HEADER = "authorization"


class _SecretCheckFactory(flight.ServerMiddlewareFactory):
    """Refuses every call that does not present this fit's secret."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._expected = f"Bearer {secret}".encode()

    def start_call(self, info, headers):
        presented = headers.get(_AUTH_HEADER, [])
        if not any(
            hmac.compare_digest(value.encode() if isinstance(value, str) else value, self._expected)
            for value in presented
        ):
            raise flight.FlightUnauthenticatedError("this server accepts only workers of its fit")
        return None


class _MailboxServer(flight.FlightServerBase):
    def __init__(
        self,
        location: str,
        secret: str,
        max_message_bytes: int | None,
        tls: TlsMaterial | None = None,
    ) -> None:
        middleware = {"secret": _SecretCheckFactory(secret)}
        if tls is None:
            super().__init__(location, middleware=middleware)
        else:
            super().__init__(
                location,
                middleware=middleware,
                tls_certificates=[flight.CertKeyPair(tls.cert, tls.key)],
                verify_client=True,
                root_certificates=tls.ca,
            )
        self.mailbox: dict[tuple[int, int], pa.Table] = {}
        self.arrived = threading.Condition()
        self.max_message_bytes = max_message_bytes

    def do_put(self, context, descriptor, reader, writer):
        step, rank = (int(part) for part in descriptor.path)
        batches, size = [], 0
        for chunk in reader:
            size += chunk.data.nbytes
            # Refuse while reading, before an oversized message is held in memory.
            if self.max_message_bytes is not None and size > self.max_message_bytes:
                raise flight.FlightServerError(
                    f"message from worker {rank} for step {step} exceeds "
                    f"{self.max_message_bytes} bytes, the most this fit's batch size, classes "
                    "and features allow"
                )
            batches.append(chunk.data)
        table = pa.Table.from_batches(batches, schema=reader.schema)
        with self.arrived:
            self.mailbox[(step, rank)] = table
            self.arrived.notify_all()


class FlightMeshExchange(Exchange):
    """Exchange over a full mesh of Arrow Flight connections.

    Parameters
    ----------
    rank, num_workers : int
        This worker's index and the number of workers in the fit.
    host : str
        Address to bind to and to advertise: the executor's own host.
    secret : str
        Token made on the driver for this fit; peers must present it on every call.
    timeout : float
        Seconds to wait for a peer before raising :class:`ExchangeTimeoutError`.
    max_message_bytes : int, optional
        Largest message payload the server accepts; larger ones are refused with an error.
    tls : TlsFiles, optional
        PEM files for mutual TLS (read here, on the executor); None for plain ``grpc+tcp``.
        Every worker's certificate must be signed by ``tls.ca`` and name its ``host``.

    Examples
    --------
    >>> mesh = FlightMeshExchange(0, 1, "127.0.0.1", secret="s3cret", timeout=5.0)
    >>> mesh.connect([mesh.location])
    >>> batch = pa.record_batch({"x": [1.0, 2.0]})
    >>> mesh.all_gather(0, batch)[0].num_rows
    2
    >>> mesh.close()
    """

    def __init__(
        self,
        rank: int,
        num_workers: int,
        host: str,
        secret: str,
        timeout: float,
        max_message_bytes: int | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        super().__init__(rank, num_workers)
        self.timeout = timeout
        self._tls = read_tls_files(tls) if tls is not None else None
        scheme = "grpc+tcp" if tls is None else "grpc+tls"
        try:
            self._server = _MailboxServer(
                f"{scheme}://{host}:0", secret, max_message_bytes, self._tls
            )
        except pa.ArrowException as error:
            if tls is None:
                raise
            # gRPC says only "Server did not start properly"; the usual cause is a key that
            # does not belong to the certificate, which the files alone do not show.
            raise ExchangeError(
                f"worker {rank} could not start its TLS Flight server on {host} ({error}); check "
                f"that {TLS_CONF_KEYS[1]} ({tls.key!r}) is the key of {TLS_CONF_KEYS[0]} "
                f"({tls.cert!r}) and that {TLS_CONF_KEYS[2]} ({tls.ca!r}) holds a CA certificate"
            ) from None
        self.location = f"{scheme}://{host}:{self._server.port}"
        self._options = flight.FlightCallOptions(
            headers=[(_AUTH_HEADER.encode(), f"Bearer {secret}".encode())], timeout=timeout
        )
        self._peers: dict[int, flight.FlightClient] = {}
        self._senders: ThreadPoolExecutor | None = None

    def connect(self, locations: list[str]) -> None:
        """Open a client to every peer; ``locations`` is indexed by rank."""
        if len(locations) != self.num_workers:
            raise ValueError(f"expected {self.num_workers} locations, got {len(locations)}")
        credentials = {}
        if self._tls is not None:
            credentials = dict(
                tls_root_certs=self._tls.ca, cert_chain=self._tls.cert, private_key=self._tls.key
            )
        self._peers = {
            rank: flight.FlightClient(location, **credentials)
            for rank, location in enumerate(locations)
            if rank != self.rank
        }
        if len(self._peers) > 1:
            self._senders = ThreadPoolExecutor(len(self._peers), thread_name_prefix="svb-send")

    def _send(self, peer: int, step: int, batch: pa.RecordBatch) -> None:
        descriptor = flight.FlightDescriptor.for_path(str(step), str(self.rank))
        try:
            writer, _ = self._peers[peer].do_put(descriptor, batch.schema, options=self._options)
            writer.write_batch(batch)
            writer.close()
        except flight.FlightTimedOutError:
            raise ExchangeTimeoutError(
                f"worker {self.rank} could not deliver step {step} to worker {peer} within "
                f"{self.timeout:g} s (exchangeTimeout): worker {peer} is stalled, overloaded or "
                "gone; raise exchangeTimeout if its steps are legitimately that slow"
            ) from None
        except flight.FlightError as error:
            hint = ""
            if self._tls is not None and isinstance(error, flight.FlightUnavailableError):
                # A refused handshake looks like a closed socket from this side.
                hint = (
                    f"; with mutual TLS, every worker's certificate must be signed by the CA in "
                    f"{TLS_CONF_KEYS[2]} and name its executor's host"
                )
            raise ExchangeError(
                f"worker {self.rank} could not send step {step} to worker {peer}: {error}{hint}"
            ) from None

    def all_gather(self, step: int, batch: pa.RecordBatch) -> list[pa.RecordBatch | pa.Table]:
        """Send ``batch`` for exchange ``step`` to every peer, then wait for theirs."""
        peers = sorted(self._peers)
        if self._senders is not None:
            for future in [self._senders.submit(self._send, p, step, batch) for p in peers]:
                future.result()
        else:
            for peer in peers:
                self._send(peer, step, batch)

        server = self._server
        with server.arrived:
            wait_for_messages(server.arrived, server.mailbox, step, peers, self.rank, self.timeout)
            received = {peer: server.mailbox.pop((step, peer)) for peer in peers}
        self._count(batch, len(peers), list(received.values()))
        received[self.rank] = batch
        return [received[rank] for rank in range(self.num_workers)]

    def close(self) -> None:
        if self._senders is not None:
            self._senders.shutdown(wait=True)
            self._senders = None
        for client in self._peers.values():
            client.close()
        self._peers = {}
        # The server's shutdown waits for the calls in progress, and a stalled peer can hold
        # one open for ever (half a message sent, then nothing). Wait at most the timeout, so
        # the error that brought us here reaches Spark; the shutdown ends in the background
        # once that peer's connection drops (Spark kills its task when the stage fails).
        stopper = threading.Thread(target=self._server.shutdown, name="svb-flight-shutdown")
        stopper.daemon = True
        stopper.start()
        stopper.join(self.timeout)
        if stopper.is_alive():
            logger.warning(
                "worker %d: a peer's message was still arriving after %.0f s; the Flight "
                "server stops when that peer's connection closes",
                self.rank, self.timeout,
            )  # fmt: skip
