"""The model's way home: rank 0's arrays straight into the driver's inbox."""

import time

import numpy as np
import pytest

from svb_spark.control.delivery import ModelBuild, ModelInbox, send_arrays


def test_arrays_arrive_whole_under_their_token_once():
    inbox = ModelInbox("127.0.0.1", "s3cret")
    try:
        W = np.arange(5 * 3000, dtype=np.float32).reshape(3000, 5)  # several TCP segments
        b = np.ones(5)
        assert send_arrays(inbox.address, "s3cret", "first", {"W": W, "b": b})
        got = inbox.take("first")
        np.testing.assert_array_equal(got["W"], W)
        assert got["W"].dtype == np.float32 and got["b"].dtype == np.float64
        assert inbox.take("first") is None
    finally:
        inbox.close()


def test_a_delivery_signed_with_another_secret_is_refused():
    inbox = ModelInbox("127.0.0.1", "s3cret")
    try:
        assert not send_arrays(inbox.address, "wrong", "t", {"b": np.ones(3)})
        assert inbox.take("t") is None
    finally:
        inbox.close()


def test_an_unreachable_inbox_means_result_rows():
    inbox = ModelInbox("127.0.0.1", "s3cret")
    address = inbox.address
    inbox.close()
    assert not send_arrays(address, "s3cret", "t", {"b": np.ones(3)}, timeout=5)


def _deliver(build, stored, transposed, token="t"):
    inbox = ModelInbox("127.0.0.1", "s3cret", build=build)
    try:
        assert send_arrays(inbox.address, "s3cret", token, stored, transposed=transposed)
        return inbox.take(token)
    finally:
        inbox.close()


@pytest.mark.parametrize("feature_major", [False, True])
def test_the_model_is_built_as_it_arrives_chunk_by_chunk(monkeypatch, feature_major):
    from svb_spark.control import delivery
    from svb_spark.core import standardization

    monkeypatch.setattr(delivery, "_BUILD_CHUNK_BYTES", 3 * 7 * 4)  # 3 storage rows at a time
    rng = np.random.default_rng(0)
    storage = rng.normal(size=(10, 7)).astype(np.float32)  # 10 rows: the last chunk is short
    W = storage.T if feature_major else storage
    K, D = W.shape
    b = rng.normal(size=K).astype(np.float32)
    scale, mean = rng.uniform(0.5, 2, D), rng.normal(size=D)
    build = ModelBuild(K, D, scale, mean)
    got = _deliver(build, {"W": storage, "b": b}, ("W",) if feature_major else ())
    assert got["W"].shape == (K, D) and got["W"].dtype == np.float64
    W_built, b_built = build.finish(got["W"], got["b"])
    W_expected, b_expected = standardization.unstandardize(W, b, mean, scale)
    np.testing.assert_array_equal(W_built, W_expected)  # bit for bit: the same float64 multiply
    np.testing.assert_array_equal(b_built, b_expected)
    assert W_built.flags.f_contiguous == feature_major and W_built is got["W"]


def test_the_build_takes_one_delivery_and_a_later_one_arrives_as_sent():
    from svb_spark.core import standardization

    W1, W2 = np.ones((2, 3), np.float32), np.full((2, 3), 2.0, np.float32)
    b, scale = np.zeros(2, np.float32), np.array([1.0, 2.0, 3.0])
    build = ModelBuild(2, 3, scale, None)
    first = _deliver(build, {"W": W1, "b": b}, (), "first")
    second = _deliver(build, {"W": W2, "b": b}, (), "second")  # a retried stage's
    assert second["W"].dtype == np.float32  # as sent: the buffer already holds the first
    W, _ = build.finish(second["W"], second["b"])
    np.testing.assert_array_equal(W, standardization.unstandardize(W2, b, None, scale)[0])
    assert not np.shares_memory(W, first["W"])


def test_class_sharded_blocks_are_built_in_place_into_one_model(monkeypatch):
    from svb_spark.control import delivery
    from svb_spark.core import standardization
    from svb_spark.core.loop import TrainingResult
    from svb_spark.spark.contract import stored_arrays

    monkeypatch.setattr(delivery, "_BUILD_CHUNK_BYTES", 2 * 7 * 4)  # 2 storage rows at a time
    rng = np.random.default_rng(1)
    W = rng.normal(size=(9, 7)).astype(np.float32)
    b = rng.normal(size=9).astype(np.float32)
    scale, mean = rng.uniform(0.5, 2, 7), rng.normal(size=7)
    build = ModelBuild(9, 7, scale, mean)
    inbox = ModelInbox("127.0.0.1", "s3cret", build=build)
    blocks = []
    try:
        # Rank 0 holds classes 0-4 class-major, rank 1 classes 5-8 feature-major (sparse rows).
        for rank, (first, block) in enumerate(((0, W[:5]), (5, np.asfortranarray(W[5:])))):
            result = TrainingResult(W=block, b=b[first : first + len(block)],
                                    objective_history=[], steps=0, converged=True)  # fmt: skip
            stored, shapes = stored_arrays(result, f".{rank}")
            flipped = tuple(name for name, (*_, t) in shapes.items() if t)
            assert send_arrays(inbox.address, "s3cret", f"t{rank}", stored, transposed=flipped,
                               first_rows={f"W.{rank}": first}, attempt="a")  # fmt: skip
            blocks.append(inbox.take(f"t{rank}")[f"W.{rank}"])
        whole = inbox.stacked(blocks)
        assert whole is not None and whole.shape == (9, 7) and whole.dtype == np.float64
        W_built, b_built = build.finish(whole, b)
        assert W_built is whole  # no second copy
        W_expected, b_expected = standardization.unstandardize(W, b, mean, scale)
        np.testing.assert_array_equal(W_built, W_expected)
        np.testing.assert_allclose(b_built, b_expected, rtol=1e-12)
        # A retried stage's blocks arrive as sent: the model never mixes two attempts.
        stored, _ = stored_arrays(result, ".1")
        assert send_arrays(inbox.address, "s3cret", "t9", stored, transposed=flipped,
                           first_rows={"W.1": 5}, attempt="b")  # fmt: skip
        again = inbox.take("t9")["W.1"]
        assert again.dtype == np.float32 and inbox.stacked([blocks[0], again]) is None
    finally:
        inbox.close()


def test_a_sender_gone_mid_array_delivers_nothing():
    import socket

    from svb_spark.control.signing import sign

    build = ModelBuild(2, 3, np.ones(3), None)
    inbox = ModelInbox("127.0.0.1", "s3cret", build=build)
    try:
        header = {"token": "cut", "arrays": [["W", "<f4", [2, 3]]], "transposed": []}
        with socket.create_connection(inbox.address) as connection:
            connection.sendall(sign("s3cret", header) + np.ones(4, np.float32).tobytes())
        time.sleep(0.5)
        assert inbox.take("cut") is None
    finally:
        inbox.close()
