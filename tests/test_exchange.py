"""Codec and transports, without Spark: in-process threads and a real Flight mesh on loopback."""

import multiprocessing
import os
import re
import signal
import socket
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from svb_spark.core import wire
from svb_spark.core.exchange import ExchangeError, ExchangeTimeoutError
from svb_spark.transport.flight import FlightMeshExchange
from svb_spark.transport.local import LocalExchangeGroup


def test_codec_round_trip_is_exact():
    rng = np.random.default_rng(0)
    message = wire.RoundMessage(
        kind=wire.SV, first_step=12, rank=3, rows=[4, 3], weight_sums=[4.0, 3.5],
        loss_sums=[2.0, 1.25], U=rng.normal(size=(7, 4)).astype(np.float32),
        V=rng.normal(size=(7, 9)).astype(np.float32),
    )  # fmt: skip
    batch = wire.encode(message)
    assert batch.num_rows == 7
    back = wire.decode(batch)
    assert (back.first_step, back.rank, back.rows) == (12, 3, [4, 3])
    assert (back.weight_sums, back.loss_sums) == ([4.0, 3.5], [2.0, 1.25])
    assert back.U.dtype == np.float32 and (back.U == message.U).all()
    assert (back.V == message.V).all()
    u1, v1 = back.step_vectors(1)
    assert (u1 == message.U[4:]).all() and (v1 == message.V[4:]).all()
    # Also through a Table, as a Flight reader returns it, and through IPC bytes.
    assert (wire.decode(pa.Table.from_batches([batch])).V == message.V).all()
    assert (wire.decode(wire.from_ipc(wire.to_ipc(batch))).U == message.U).all()


def test_codec_dense_gradient_message():
    G = np.arange(2 * 3 * 5, dtype=np.float64).reshape(6, 5)  # 2 steps of K=3 x (D + 1 = 5)
    message = wire.RoundMessage(wire.DENSE, 0, 1, [8, 8], [8.0, 8.0], [1.0, 2.0], G=G)
    back = wire.decode(wire.encode(message))
    assert (back.step_gradient(1) == G[3:]).all() and back.U is None


def test_codec_checksum_and_state_round_trip():
    # The replica check's two messages, alone: the checksum is the one a pyarrow 14 install
    # (the oldest supported) used to fail to build.
    assert wire.decode_checksum(wire.encode_checksum("ab12")) == "ab12"
    table = pa.Table.from_batches([wire.encode_checksum("ab12")])
    assert wire.decode_checksum(table) == "ab12"
    values = np.arange(5, dtype=np.float32)
    back, factor = wire.decode_state(wire.encode_state(values, 0.5))
    assert back.dtype == np.float32 and (back == values).all() and factor == 0.5


def test_codec_handles_an_empty_batch_and_counts_framing():
    message = wire.RoundMessage(
        wire.SV, 0, 1, [0], [0.0], [0.0], np.zeros((0, 3)), np.zeros((0, 5))
    )
    batch = wire.encode(message)
    back = wire.decode(batch)
    assert back.U.shape == (0, 3) and back.V.shape == (0, 5)
    payload, framing = wire.message_bytes(batch)
    assert payload == 0 and framing > 0
    assert payload + framing == len(wire.to_ipc(batch)) - 8  # minus the end-of-stream marker


def _run_workers(exchanges, steps, pause=0.0):
    """Every worker gathers `steps` steps, `pause` seconds apart; returns what each saw, per
    rank."""
    seen = {}
    errors = []

    def run(ex):
        try:
            got = []
            for step in range(steps):
                batch = pa.RecordBatch.from_pydict({"v": [float(100 * step + ex.rank)]})
                got.append([b.column(0)[0].as_py() for b in ex.all_gather(step, batch)])
                time.sleep(pause)
            seen[ex.rank] = got
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(ex,)) for ex in exchanges]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return seen


def _expected(num_workers, steps):
    return [[float(100 * s + r) for r in range(num_workers)] for s in range(steps)]


def test_local_exchange_returns_every_message_in_rank_order():
    group = LocalExchangeGroup(3)
    exchanges = [group.member(r) for r in range(3)]
    seen = _run_workers(exchanges, 20)
    assert all(seen[r] == _expected(3, 20) for r in range(3))
    assert group._messages == {}  # freed once everyone has read a step


@pytest.fixture
def mesh():
    made = []

    def make(num_workers, secret="fit-secret", timeout=20.0):
        exchanges = [
            FlightMeshExchange(r, num_workers, "127.0.0.1", secret, timeout)
            for r in range(num_workers)
        ]
        made.extend(exchanges)
        return exchanges

    yield make
    for ex in made:
        ex.close()


def test_flight_mesh_delivers_every_message_in_rank_order_and_counts_bytes(mesh):
    exchanges = mesh(3)
    locations = [ex.location for ex in exchanges]
    for ex in exchanges:
        ex.connect(locations)
    seen = _run_workers(exchanges, 25)
    assert all(seen[r] == _expected(3, 25) for r in range(3))
    one = pa.RecordBatch.from_pydict({"v": [0.0]})
    payload, framing = wire.message_bytes(one)
    for ex in exchanges:
        assert (ex.payload_sent, ex.framing_sent) == (25 * 2 * payload, 25 * 2 * framing)
        assert ex.bytes_received == 25 * 2 * (payload + framing)
        assert ex.sent_per_exchange == [2 * (payload + framing)] * 25
        assert ex.payload_per_exchange == [2 * payload] * 25


def test_flight_server_refuses_a_client_with_a_wrong_or_missing_token(mesh):
    (server,) = mesh(1, secret="the-right-secret")
    client = flight.FlightClient(server.location)
    batch = pa.RecordBatch.from_pydict({"v": [1.0]})
    descriptor = flight.FlightDescriptor.for_path("0", "5")
    for headers in ([(b"authorization", b"Bearer wrong")], []):
        options = flight.FlightCallOptions(headers=headers, timeout=10)
        with pytest.raises(flight.FlightUnauthenticatedError):
            writer, _ = client.do_put(descriptor, batch.schema, options=options)
            writer.write_batch(batch)
            writer.close()
    client.close()
    assert server._server.mailbox == {}


def test_flight_wait_for_a_silent_peer_times_out_with_a_clear_error(mesh):
    exchanges = mesh(2, timeout=1.0)
    locations = [ex.location for ex in exchanges]
    exchanges[0].connect(locations)
    with pytest.raises(
        ExchangeTimeoutError, match=r"worker 0 waited 1 s for step 0 from workers \[1\]"
    ):
        exchanges[0].all_gather(0, pa.RecordBatch.from_pydict({"v": [1.0]}))


def test_flight_server_refuses_oversized_messages_and_never_shows_the_secret(caplog):
    secret = "s3cret-token-that-must-not-leak"
    small, big = (
        FlightMeshExchange(r, 2, "127.0.0.1", secret, 1.0, max_message_bytes=1000) for r in range(2)
    )
    try:
        small.connect([small.location, big.location])
        oversized = pa.RecordBatch.from_pydict({"v": np.zeros(1000)})  # 8000 bytes
        with pytest.raises(ExchangeError, match="exceeds 1000 bytes") as refused:
            small._send(1, 0, oversized)
        assert big._server.mailbox == {}
        with pytest.raises(ExchangeTimeoutError) as timed_out:
            small.all_gather(1, pa.RecordBatch.from_pydict({"v": [1.0]}))
        for error in (refused.value, timed_out.value):
            assert secret not in str(error) and secret not in repr(error)
        assert secret not in caplog.text
    finally:
        small.close()
        big.close()


def test_close_returns_within_the_timeout_while_a_stalled_peer_holds_a_call_open(caplog):
    # A peer that sent half a message and then stopped (SIGSTOP, a hung process) keeps a
    # do_put open on our server; closing must not wait for it, or the error would never
    # reach Spark.
    server = FlightMeshExchange(0, 2, "127.0.0.1", "fit-secret", timeout=1.0)
    port = int(server.location.rsplit(":", 1)[1])
    client = flight.FlightClient(server.location)
    batch = pa.RecordBatch.from_pydict({"v": [1.0]})
    options = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer fit-secret")])
    writer, _ = client.do_put(flight.FlightDescriptor.for_path("0", "1"), batch.schema, options)
    writer.write_batch(batch)  # ...and never closed: the call stays open
    deadline = time.time() + 10  # until the server is reading that half message
    while not server._server.arriving and time.time() < deadline:
        time.sleep(0.01)

    closing = threading.Thread(target=server.close)
    started = time.perf_counter()
    closing.start()
    closing.join(10)
    assert not closing.is_alive() and time.perf_counter() - started < 5
    assert "still arriving" in caplog.text

    # Once the peer's connection goes, the server is gone too: nothing listens on its port.
    writer.close()
    client.close()
    deadline = time.time() + 10
    while _listening(port) and time.time() < deadline:
        time.sleep(0.1)
    assert not _listening(port)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _serve_until_killed(queue) -> None:
    exchange = FlightMeshExchange(2, 3, "127.0.0.1", "fit-secret", timeout=1.0)
    queue.put(exchange.location)
    time.sleep(600)


def test_a_stalled_worker_gives_every_peer_a_clear_timeout_error():
    # Worker 2 lives in a process of its own, which the test stops (SIGSTOP) as a hung
    # executor would be: its connections stay open but nothing answers.
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    stalled = context.Process(target=_serve_until_killed, args=(queue,), daemon=True)
    stalled.start()
    live = [FlightMeshExchange(r, 3, "127.0.0.1", "fit-secret", 1.0) for r in range(2)]
    try:
        locations = [ex.location for ex in live] + [queue.get(timeout=60)]
        for ex in live:
            ex.connect(locations)
        os.kill(stalled.pid, signal.SIGSTOP)
        errors = {}

        def step(ex):
            started = time.perf_counter()
            try:
                ex.all_gather(0, pa.RecordBatch.from_pydict({"v": [1.0]}))
            except ExchangeError as error:
                errors[ex.rank] = (error, time.perf_counter() - started)

        threads = [threading.Thread(target=step, args=(ex,)) for ex in live]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(errors) == [0, 1]
        for rank, (error, seconds) in errors.items():
            assert isinstance(error, ExchangeTimeoutError)
            expected = rf"worker {rank} could not deliver step 0 to worker 2 within 1 s"
            assert re.search(expected, str(error))
            assert seconds < 5
    finally:
        os.kill(stalled.pid, signal.SIGKILL)
        stalled.join(10)
        for ex in live:
            ex.close()


def _round_message(step, rank):
    rng = np.random.default_rng([step, rank])
    rows = 1 + (step + rank) % 3
    return wire.RoundMessage(
        wire.SV, step, rank, [rows], [float(rows)], [0.5 * rank],
        U=rng.normal(size=(rows, 2)), V=rng.normal(size=(rows, 4)),
    )  # fmt: skip


def test_flight_mesh_keeps_mixed_message_kinds_intact_over_one_stream_per_schema(mesh):
    # Round messages, then a replica check (checksum, then state: other columns), then round
    # messages again: every batch arrives with its schema metadata, and each change of schema
    # costs one new stream per peer.
    exchanges = mesh(3)
    for ex in exchanges:
        ex.connect([e.location for e in exchanges])
    schedule = [("round", s) for s in range(6)]
    schedule += [("checksum", -2), ("state", -3)]
    schedule += [("round", s) for s in range(6, 12)]
    seen, errors = {}, []

    def run(ex):
        try:
            for kind, index in schedule:
                if kind == "round":
                    batch = wire.encode(_round_message(index, ex.rank))
                elif kind == "checksum":
                    batch = wire.encode_checksum(f"digest-{ex.rank}")
                else:
                    batch = wire.encode_state(np.arange(3.0) + ex.rank, 0.5 + ex.rank)
                seen.setdefault(ex.rank, []).append(ex.all_gather(index, batch))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(ex,)) for ex in exchanges]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and sorted(seen) == [0, 1, 2]

    for rank in range(3):
        for (kind, index), messages in zip(schedule, seen[rank]):
            assert len(messages) == 3
            for sender, message in enumerate(messages):
                if kind == "round":
                    expected, got = _round_message(index, sender), wire.decode(message)
                    assert (got.first_step, got.rank, got.rows) == (index, sender, expected.rows)
                    assert (got.weight_sums, got.loss_sums) == (
                        expected.weight_sums, expected.loss_sums,
                    )  # fmt: skip
                    assert (got.U == expected.U).all() and (got.V == expected.V).all()
                elif kind == "checksum":
                    assert wire.decode_checksum(message) == f"digest-{sender}"
                else:
                    values, factor = wire.decode_state(message)
                    assert (values == np.arange(3.0) + sender).all() and factor == 0.5 + sender
    # Round, checksum, state, round: four streams from each of the two peers.
    assert [ex._server.puts for ex in exchanges] == [4 * 2] * 3


def test_flight_mesh_opens_one_stream_per_peer_for_many_steps(mesh):
    exchanges = mesh(3)
    for ex in exchanges:
        ex.connect([e.location for e in exchanges])
    seen = _run_workers(exchanges, 60)
    assert all(seen[r] == _expected(3, 60) for r in range(3))
    assert [ex._server.puts for ex in exchanges] == [2, 2, 2]
    assert all(ex._server.mailbox == {} for ex in exchanges)


def test_flight_mesh_replaces_streams_before_their_deadline(mesh):
    # A stream's gRPC deadline is 1.5 timeouts; it is replaced once older than half a
    # timeout, so that every send has a full timeout, without losing a message.
    exchanges = mesh(2, timeout=1.0)
    for ex in exchanges:
        ex.connect([e.location for e in exchanges])
    seen = _run_workers(exchanges, 8, pause=0.2)
    assert seen == {0: _expected(2, 8), 1: _expected(2, 8)}
    # About 1.6 s of steps: at least three streams each way, at most one per step.
    assert all(3 <= ex._server.puts <= 8 for ex in exchanges)


def test_a_refused_message_drops_its_stream_and_the_next_send_opens_a_new_one():
    small, big = (
        FlightMeshExchange(r, 2, "127.0.0.1", "fit-secret", 1.0, max_message_bytes=1000)
        for r in range(2)
    )
    try:
        small.connect([small.location, big.location])
        small._send(1, 0, pa.RecordBatch.from_pydict({"v": [1.0]}))
        with pytest.raises(ExchangeError, match="exceeds 1000 bytes"):
            small._send(1, 1, pa.RecordBatch.from_pydict({"v": np.zeros(1000)}))
        assert 1 not in small._streams
        small._send(1, 2, pa.RecordBatch.from_pydict({"v": [3.0]}))
        assert sorted(big._server.mailbox) == [(0, 0), (2, 0)]
        assert big._server.mailbox[(2, 0)].column(0)[0].as_py() == 3.0
        assert big._server.puts == 2
    finally:
        small.close()
        big.close()


def test_close_does_not_wait_for_the_open_streams_of_peers_still_running(caplog):
    # A peer's stream stays open until that peer closes its exchange, which may be much later
    # (it is waiting for a message from a worker that failed): closing must not wait for it.
    first, second = (FlightMeshExchange(r, 2, "127.0.0.1", "fit-secret", 20.0) for r in range(2))
    port = int(first.location.rsplit(":", 1)[1])
    try:
        for ex in (first, second):
            ex.connect([first.location, second.location])
        _run_workers([first, second], 3)
        started = time.perf_counter()
        first.close()
        assert time.perf_counter() - started < 5
        assert "still arriving" not in caplog.text
    finally:
        second.close()
    deadline = time.time() + 10
    while _listening(port) and time.time() < deadline:
        time.sleep(0.1)
    assert not _listening(port)  # gone once the peer's stream ended
