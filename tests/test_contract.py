"""The result rows a barrier task sends home and their decoding on the driver."""

import json

import numpy as np
import pyarrow as pa
import pytest

from svb_spark import contract, solver
from svb_spark.training import TrainingResult


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("as_arrow", [False, True])
def test_the_model_decodes_from_arrow_or_rows_in_any_order_and_layout(
    monkeypatch, feature_major, as_arrow
):
    monkeypatch.setattr(contract, "_CHUNK_BYTES", 1000)  # W travels in 9 chunks
    storage = np.arange(3 * 700, dtype=np.float32).reshape((700, 3) if feature_major else (3, 700))
    W = storage.T if feature_major else storage
    result = TrainingResult(
        W=W, b=np.ones(3, np.float32), objective_history=[1.0], steps=1, converged=False,
        workers=[{"rank": 0}, {"rank": 1}],
    )  # fmt: skip
    batches = [*contract.encode_result(result)]
    for rank in (0, 1):
        batches += contract.result_rows(f"worker{rank}", json.dumps({"pid": rank}).encode())
    assert sum(b.column("part")[0].as_py() == "W" for b in batches) == 9
    batches = batches[::-1]  # shuffle output comes in no fixed order
    if as_arrow:
        rows = pa.Table.from_batches(batches)
    else:
        rows = [tuple(b.column(i)[0].as_py() for i in range(3)) for b in batches]
    decoded = contract.decode_result(rows)
    np.testing.assert_array_equal(decoded.W, W)
    assert decoded.W.flags.f_contiguous == feature_major
    np.testing.assert_array_equal(decoded.b, result.b)
    assert [w["pid"] for w in decoded.workers] == [0, 1]


def test_unstandardize_in_either_layout_matches_the_float64_formula():
    rng = np.random.default_rng(0)
    storage = rng.normal(size=(50, 4)).astype(np.float32)
    scale, mean, b = rng.uniform(0.5, 2, 50), rng.normal(size=50), rng.normal(size=4)
    for W in (storage.T, np.ascontiguousarray(storage.T)):
        W0, b0 = solver.unstandardize(W, b, mean, scale)
        expected = W.astype(np.float64) * scale
        np.testing.assert_array_equal(W0, expected)
        np.testing.assert_allclose(b0, b - expected @ mean)
        assert W0.dtype == np.float64 and W0.flags.f_contiguous == W.flags.f_contiguous


def test_a_delivered_model_is_taken_from_the_inbox_not_the_rows():
    from svb_spark.delivery import ModelInbox, send_arrays

    W = np.arange(12, dtype=np.float32).reshape(4, 3).T  # feature-major: 3 x 4 of 4 x 3 storage
    result = TrainingResult(
        W=W, b=np.ones(3, np.float32), objective_history=[1.0], steps=1, converged=False
    )
    stored, layout = contract.stored_arrays(result)
    assert layout["W"][2] and stored["W"].shape == (4, 3)
    inbox = ModelInbox("127.0.0.1", "s")
    try:
        assert send_arrays(inbox.address, "s", "tok", stored)
        batches = list(contract.encode_result(result, delivered="tok"))
        assert {b.column("part")[0].as_py() for b in batches} == {"layout", "summary"}
        decoded = contract.decode_result(pa.Table.from_batches(batches), inbox)
        np.testing.assert_array_equal(decoded.W, W)
        with pytest.raises(RuntimeError, match="never came"):
            contract.decode_result(pa.Table.from_batches(batches), inbox)  # taken once
    finally:
        inbox.close()


def test_the_rendezvous_swaps_hellos_while_the_rows_load():
    import threading
    import time

    from common_data import blobs, training_config

    from svb_spark.exchange.local import LocalExchangeGroup
    from svb_spark.task import rendezvous
    from svb_spark.training import prepare_partition

    group = LocalExchangeGroup(2)
    barrier = threading.Barrier(2)
    hellos: list = [None, None]
    config = training_config(blobs())

    def all_gather(rank):
        def gather(message):
            hellos[rank] = message
            time.sleep(0.5)  # allGather's latency
            barrier.wait()
            return list(hellos)

        return gather

    def load(rank):
        def rows():
            time.sleep(0.5)  # decoding the rows
            X = np.full((3 + rank, 6), float(rank + 1))
            return prepare_partition(X, np.zeros(3 + rank, int), np.ones(3 + rank), config)

        return rows

    met = [None, None]
    exchanges = [group.member(rank) for rank in (0, 1)]

    def worker(rank):
        exchange = exchanges[rank]
        exchange.location = f"local://{rank}"
        exchange.connect = lambda locations: None
        met[rank] = rendezvous(all_gather(rank), exchange, load(rank), config)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - start < 0.9  # overlapped, not 0.5 + 0.5
    for rank in (0, 1):
        assert [p["rows"] for p in met[rank].peers] == [3, 4]
        assert [p["location"] for p in met[rank].peers] == ["local://0", "local://1"]
        assert met[rank].plan.steps_per_epoch == met[0].plan.steps_per_epoch
        assert met[rank].data.rows == 3 + rank
        assert exchanges[rank].sent_per_exchange == []  # not counted as training bytes
