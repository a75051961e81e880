"""The driver's hello board: the barrier tasks' rendezvous without BarrierTaskContext.allGather."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from svb_spark.control.board import HelloBoard, swap_hellos
from svb_spark.control.signing import sign


@pytest.fixture
def board():
    board = HelloBoard("127.0.0.1", "s3cret", timeout=20.0)
    yield board
    board.close()


def _swap_all(board, workers, hellos, secret="s3cret"):
    answers = {}

    def post(rank):
        answers[rank] = swap_hellos(board.address, secret, rank, workers, hellos[rank], 10.0)

    threads = [threading.Thread(target=post, args=(rank,)) for rank in reversed(range(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15.0)
    return answers


def test_every_rank_gets_every_hello_in_rank_order(board):
    answers = _swap_all(board, 3, ["a", "b", "c"])
    assert answers == {rank: ["a", "b", "c"] for rank in range(3)}
    # The board serves the next round (another fit of the same stage's retry) afresh.
    assert _swap_all(board, 3, ["d", "e", "f"]) == {rank: ["d", "e", "f"] for rank in range(3)}


def test_the_hello_of_a_task_that_died_is_dropped(board):
    # Rank 0 of a failed attempt posted, then its task died before rank 1 posted.
    with socket.create_connection(board.address) as dead:
        dead.sendall(sign("s3cret", {"rank": 0, "workers": 2, "hello": "stale"}))
        time.sleep(0.2)
    time.sleep(0.2)
    # The retried attempt's tasks meet each other, not the dead task.
    assert _swap_all(board, 2, ["fresh", "b"]) == {0: ["fresh", "b"], 1: ["fresh", "b"]}


def test_a_hello_with_a_bad_signature_is_refused(board):
    with pytest.raises(RuntimeError, match="no signed answer"):
        swap_hellos(board.address, "wrong", 0, 1, "a", 2.0)
    assert swap_hellos(board.address, "s3cret", 0, 1, "a", 2.0) == ["a"]


def test_a_peer_that_never_posts_times_out_with_the_reason():
    board = HelloBoard("127.0.0.1", "s3cret", timeout=0.5)
    try:
        with pytest.raises(RuntimeError, match="a peer never posted its hello"):
            swap_hellos(board.address, "s3cret", 0, 2, "a", 5.0)
    finally:
        board.close()


def test_an_unreachable_board_means_all_gather():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
    assert swap_hellos(address, "s3cret", 0, 2, "a", 2.0) is None


def test_a_fit_meets_through_the_driver(spark, digits_frames):
    from svb_spark import SVBLogisticRegression

    train, _ = digits_frames
    summary = SVBLogisticRegression(numWorkers=2, maxIter=2).fit(train).summary
    assert [w["hellos_via"] for w in summary.workers] == ["driver", "driver"]
    assert len({w["location"] for w in summary.workers}) == 2
