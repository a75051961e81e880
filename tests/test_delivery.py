"""The model's way home: rank 0's arrays straight into the driver's inbox."""

import numpy as np

from svb_spark.delivery import ModelInbox, send_arrays


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
