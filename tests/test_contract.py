"""The result rows a barrier task sends home and their decoding on the driver."""

import json

import numpy as np
import pyarrow as pa
import pytest

from svb_spark.core import standardization
from svb_spark.core.loop import TrainingResult
from svb_spark.spark import contract


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
        W0, b0 = standardization.unstandardize(W, b, mean, scale)
        expected = W.astype(np.float64) * scale
        np.testing.assert_array_equal(W0, expected)
        np.testing.assert_allclose(b0, b - expected @ mean)
        assert W0.dtype == np.float64 and W0.flags.f_contiguous == W.flags.f_contiguous


def test_a_delivered_model_is_taken_from_the_inbox_not_the_rows():
    from svb_spark.control.delivery import ModelInbox, send_arrays

    W = np.arange(12, dtype=np.float32).reshape(4, 3).T  # feature-major: 3 x 4 of 4 x 3 storage
    result = TrainingResult(
        W=W, b=np.ones(3, np.float32), objective_history=[1.0], steps=1, converged=False
    )
    stored, layout = contract.stored_arrays(result)
    assert layout["W"][2] and stored["W"].shape == (4, 3)
    inbox = ModelInbox("127.0.0.1", "s")
    try:
        assert send_arrays(inbox.address, "s", "tok", stored, transposed=("W",))
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

    from svb_spark.core.partition import prepare_partition
    from svb_spark.spark.task import rendezvous
    from svb_spark.transport.local import LocalExchangeGroup
    from tests.support.data import blobs, training_config

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


def _rows_by_partition(frame, *columns):
    from pyspark.sql import functions as F

    rows = frame.select(F.spark_partition_id().alias("pid"), *columns).collect()
    return [[tuple(r)[1:] for r in rows if r.pid == p] for p in range(frame.rdd.getNumPartitions())]


def test_the_training_frame_keeps_even_input_partitions_that_a_barrier_stage_can_run_on(spark):
    from pyspark.sql import functions as F

    from svb_spark.spark.inspection import inspect_training_data
    from tests.support.data import planted_frame

    def frame(df, stats=None):
        return contract.training_frame(df, "features", "label", "weight", 2, stats=stats)

    df = planted_frame(spark).cache()  # the weights tell the rows apart
    stats = inspect_training_data(df, "features", "label", "weight", 0)
    assert stats.partition_rows == (200, 200)
    inputs = _rows_by_partition(df, "weight")
    # Each worker gets its input partition as it is, in order, and row ids that grow along it.
    kept = frame(df, stats)
    assert _rows_by_partition(kept, contract.WEIGHT) == inputs
    assert all(ids == sorted(ids) for ids in _rows_by_partition(kept, contract.ROW_ID))
    # Without the pre-pass's word, or with partitions too uneven, rows are hashed on the id.
    uneven = df.filter(F.monotonically_increasing_id() < (1 << 33) + 150)  # 200 and 150 rows
    uneven_stats = inspect_training_data(uneven, "features", "label", "weight", 0)
    assert uneven_stats.partition_rows == (200, 150)
    for source, hashed in ((df, frame(df)), (uneven, frame(uneven, uneven_stats))):
        given, got = _rows_by_partition(source, "weight"), _rows_by_partition(hashed, "weight")
        assert [sorted(part) for part in got] != [sorted(part) for part in given]
        assert sorted(sum(got, [])) == sorted(sum(given, []))


def test_the_barrier_check_refuses_what_spark_refuses_coalesced_and_union_inputs(spark):
    from svb_spark.spark.session import barrier_stage_keeps_partitions
    from tests.support.data import planted_frame

    base = planted_frame(spark).cache()
    frames = {  # name: (frame, its partitions, whether a barrier stage can run on them)
        "cached": (base, 2, True),
        "selected": (base.select("features", "label"), 2, True),
        # Spark refuses a barrier stage over these (and Spark 4.3 then stops the SparkContext):
        # their lineage holds RDDs of other sizes, 4 then 2 partitions, and 2 then 4.
        "coalesced": (base.repartition(4).cache().coalesce(2), 2, False),
        "union": (base.union(base).cache(), 4, False),
    }
    for name, (frame, partitions, runs) in frames.items():
        frame.count()
        assert frame.rdd.getNumPartitions() == partitions, name
        assert barrier_stage_keeps_partitions(frame, partitions) == runs, name
        if runs:
            frame.mapInArrow(lambda batches: batches, frame.schema, barrier=True).count()
        assert not barrier_stage_keeps_partitions(frame, partitions + 1)
    # Spark Connect DataFrames have no JVM plan: the check says no, and the rows are hashed.
    assert not barrier_stage_keeps_partitions(object(), 2)


def test_an_even_split_is_one_partition_per_worker_within_a_tenth_of_a_share():
    assert contract.evenly_split((100, 100), 2)
    assert contract.evenly_split((109, 91), 2)
    assert not contract.evenly_split((111, 89), 2)
    assert not contract.evenly_split((100, 100, 100), 2)
    assert not contract.evenly_split((0, 0), 2)


def test_arrow_batches_are_capped_for_the_block_only(spark):
    from svb_spark.spark.session import ARROW_BATCH_BYTES, arrow_batch_bytes

    key = "spark.sql.execution.arrow.maxBytesPerBatch"
    assert spark.conf.get(key, None) is None
    with arrow_batch_bytes(spark):
        assert int(spark.conf.get(key)) == ARROW_BATCH_BYTES
    assert spark.conf.get(key, None) is None
    for before, inside in (("64m", str(ARROW_BATCH_BYTES)), ("1m", "1m")):
        spark.conf.set(key, before)
        try:
            with arrow_batch_bytes(spark):
                assert spark.conf.get(key) == inside
            assert spark.conf.get(key) == before
        finally:
            spark.conf.unset(key)


def test_the_training_frame_is_sql_text_with_the_held_out_rows_the_seed_hashes(spark, monkeypatch):
    # On Spark 4 every call of a pyspark Column function records its call site in the JVM, and
    # the first imports IPython where it is installed: 0.4 s of a spark-submit job's first fit.
    from pyspark.sql import Column
    from pyspark.sql import functions as F

    df = spark.range(4_000).selectExpr("id AS `my features`", "0.0 AS label")
    with monkeypatch.context() as patched:
        for name in ("col", "lit", "monotonically_increasing_id", "pmod", "xxhash64"):
            patched.setattr(F, name, lambda *a, name=name: pytest.fail(f"F.{name} called"))
        for name in ("alias", "cast"):
            patched.setattr(Column, name, lambda *a, name=name: pytest.fail(f"{name} called"))
        frame = contract.training_frame(df, "my features", "label", None, 2, holdout=0.1, seed=3)
    rows = frame.collect()
    bucket = F.pmod(F.xxhash64(F.col(contract.ROW_ID), F.lit(3)), F.lit(1 << 20))
    expected = frame.select(bucket < F.lit(int(0.1 * (1 << 20)))).collect()
    assert [r[contract.HELD_OUT] for r in rows] == [e[0] for e in expected]
    assert 300 < sum(r[contract.HELD_OUT] for r in rows) < 500
    assert sorted(r[contract.FEATURES] for r in rows) == list(range(4_000))


def test_columns_named_with_dots_spaces_and_backticks_train_like_any_other(spark):
    # A column's name is the schema's, as check_columns reads it: "f.x" is not field x of f.
    from pyspark.sql import functions as F

    from svb_spark import SVBLogisticRegression
    from tests.support.data import planted_frame

    df = planted_frame(spark).withColumn("valid", F.col("weight") > 1.8)
    odd = {"features": "f.x `1`", "label": "y.0 z", "weight": "w`", "valid": "v.al"}
    renamed = df.toDF(*[odd[c] for c in df.columns])

    def coefficients(frame, names):
        estimator = SVBLogisticRegression(
            maxIter=3, seed=5, featuresCol=names["features"], labelCol=names["label"],
            weightCol=names["weight"], validationIndicatorCol=names["valid"],
        )  # fmt: skip
        return estimator.fit(frame).coefficientMatrix.toArray()

    plain = coefficients(df, {c: c for c in odd})
    np.testing.assert_array_equal(coefficients(renamed, odd), plain)


def test_a_model_scores_columns_named_with_dots_and_backticks_and_keeps_their_names(spark):
    from svb_spark import SVBLogisticRegression
    from tests.support.data import planted_frame

    df = planted_frame(spark)
    model = SVBLogisticRegression(maxIter=2, seed=5).fit(df)
    odd = df.toDF(*["f.x `1`" if c == "features" else f"{c}.1" for c in df.columns])
    scored = model.copy({model.featuresCol: "f.x `1`"}).transform(odd)
    assert scored.columns == [*odd.columns, "rawPrediction", "probability", "prediction"]
    expected = model.transform(df).select("rawPrediction", "prediction").collect()
    assert scored.select("rawPrediction", "prediction").collect() == expected
    with pytest.raises(ValueError, match=r"The features column 'features' does not exist.*f\.x"):
        model.transform(odd)


def test_the_fit_never_computes_a_column_it_does_not_read(spark):
    # A Pipeline's frame carries columns the fit never reads, some of them costly to compute.
    from svb_spark import SVBLogisticRegression
    from tests.support.data import planted_frame

    df = planted_frame(spark).selectExpr("*", "raise_error('computed') AS `not read`")
    model = SVBLogisticRegression(maxIter=2, weightCol="weight").fit(df)
    assert model.numClasses >= 2
