"""The benchmarks' pure parts: held-out accuracy, the speed claims' comparisons and their
table, the data sets, the studies' tables, and the profiler's hooks into the driver.

No benchmark runs here and nothing is timed: the speed claims are checked for comparing like
with like, and made-up figures stand in for the studies' results.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from benchmarks import micro, peers

PHASES = ("compute", "encode", "exchange", "decode", "apply")


def test_held_out_accuracy_of_dense_and_csr_rows():
    from scipy import sparse

    W = np.array([[1.0, 0.0], [0.0, 1.0]])
    X = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    assert peers.held_out_accuracy(W, np.zeros(2), X, np.array([0, 1, 1])) == pytest.approx(2 / 3)
    W = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    X = sparse.csr_matrix(np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 5.0, 1.0]]))
    assert peers.held_out_accuracy(W, np.zeros(2), X, np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_loop_seconds_counts_the_loop_phases_only():
    timings = {"compute": 0.5, "apply": 0.5, "train": 9.0, "load": 3.0}
    assert peers.loop_seconds(timings) == pytest.approx(1.0)


def test_the_sparse_text_set_is_csr_text_like_data():
    from benchmarks import workloads

    w = workloads.sparse_text(10, 1 << 12, 800, 200)
    assert w.sparse and hasattr(w.X_test, "indptr")
    d = w.describe()
    assert d["num_features"] == 1 << 12 == w.X_train.shape[1]
    assert 40 < d["nonzeros_per_row"] < 57
    assert (d["train_rows"], d["test_rows"]) == (800, 200)
    assert "D=2^12" in d["title"]
    assert "nonzeros_per_row" not in workloads.w2_digits().describe()


def test_jvm_failure_reason_is_the_jvms_own_reason():
    trace = (
        "An error occurred while calling o1666.fit.\n: java.lang.OutOfMemoryError: Java heap "
        "space\n\tat java.base/java.util.Arrays.copyOfRange(Arrays.java:4038)\n"
    )
    assert peers.jvm_failure_reason(RuntimeError(trace)).startswith("java.lang.OutOfMemoryError")
    assert peers.jvm_failure_reason(RuntimeError("plain")) == "plain"


def test_the_rebuild_claim_compares_two_ways_of_making_the_same_update():
    calls, models = micro.rebuild_calls(20, 32, rows=16)
    for _ in range(3):
        for call in calls.values():
            call()
    (W, b), (W_naive, b_naive) = models["library"], models["naive"]
    assert np.abs(W).max() > 0
    np.testing.assert_allclose(W, W_naive, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b, b_naive, rtol=1e-5, atol=1e-7)


def test_the_sparse_layout_claim_compares_the_same_step_on_both_layouts():
    calls, replicas, shape = micro.sparse_layout_calls(20, 1 << 12, 8, batches=3)
    assert 30 < shape["nonzeros_per_row"] < 57
    feature_major, class_major = replicas["feature_major"], replicas["class_major"]
    assert feature_major.T.flags.c_contiguous and class_major.flags.c_contiguous
    forward = {layout: call() for layout, call in calls["forward"].items()}
    np.testing.assert_array_equal(forward["feature_major"][0], forward["class_major"][0])
    for _ in range(4):  # more calls than batches: the calls cycle through them
        for call in calls["apply"].values():
            call()
    assert np.abs(class_major).max() > 0
    np.testing.assert_array_equal(feature_major, class_major)


def test_every_speed_claim_reports_its_shape_and_its_ratio_of_the_two_times():
    claims = micro.speed_claims([(20, 32, 8)], [(20, 1 << 12, 8)])
    (rebuild,), (layout,) = claims["rebuild"], claims["sparse_layout"]
    shape = ("num_classes", "num_features", "batch_size", "workers")
    assert tuple(rebuild[k] for k in shape) == (20, 32, 8, 2)
    assert rebuild["speedup"] == pytest.approx(rebuild["naive_s"] / rebuild["library_s"])
    assert tuple(layout[k] for k in shape) == (20, 1 << 12, 8, 2)
    for part in ("apply", "forward"):
        times = layout[part]
        assert times["speedup"] == pytest.approx(times["class_major"] / times["feature_major"])


def tables(text: str) -> list[list[dict]]:
    """Every markdown table of ``text``: its rows as {header cell: cell}."""

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if i and line.startswith("| ---") and lines[i - 1].startswith("|"):
            rows = []
            for body in lines[i + 1 :]:
                if not body.startswith("|"):
                    break
                rows.append(dict(zip(cells(lines[i - 1]), cells(body))))
            found.append(rows)
    return found


def number(cell: str) -> float:
    """The first number of a table cell ("1,234.5 s (3 it.)" -> 1234.5)."""
    return float(re.search(r"\d[\d,]*(\.\d+)?", cell).group().replace(",", ""))


def table(text: str, column: str) -> list[dict]:
    """The first markdown table of ``text`` with a ``column``."""
    return next(t for t in tables(text) if t and column in t[0])


def test_the_claims_table_shows_every_measured_time_and_ratio():
    claims = {
        "rebuild": [{"num_classes": 1000, "num_features": 2048, "batch_size": 32,
                     "workers": 2, "library_s": 0.002, "naive_s": 0.003, "speedup": 1.5}],
        "sparse_layout": [{"num_classes": 500, "num_features": 1 << 18, "batch_size": 16,
                           "workers": 2, "nonzeros_per_row": 48.2,
                           "apply": {"feature_major": 0.002, "class_major": 0.03, "speedup": 15.0},
                           "forward": {"feature_major": 0.001, "class_major": 0.01,
                                       "speedup": 10.0}}],
    }  # fmt: skip
    (layout,) = claims["sparse_layout"]
    measured = [(r["library_s"], r["naive_s"], r["speedup"]) for r in claims["rebuild"]]
    measured += [(t["feature_major"], t["class_major"], t["speedup"])
                 for t in (layout["apply"], layout["forward"])]  # fmt: skip
    text = micro.claims_table(claims)
    rows = table(text, "claim")
    assert len(rows) == len(measured)
    for row, (library, alternative, speedup) in zip(rows, measured):
        assert number(row["library ms"]) == pytest.approx(1000 * library, abs=5e-4)
        assert number(row["alternative ms"]) == pytest.approx(1000 * alternative, abs=5e-4)
        assert number(row["speedup"]) == pytest.approx(speedup, abs=5e-3)
    assert "D=2^18, 2 x 16 rows, 48 nnz/row" in text


def test_the_profiler_times_the_drivers_steps_and_puts_them_back():
    from benchmarks import profile

    steps = profile.driver_steps()
    originals = {key: getattr(*key) for key in steps}  # every step exists under its name
    marks: dict = {}
    with profile.driver_phases(marks):
        for (owner, name), phase in steps.items():
            wrapper = getattr(owner, name)
            assert wrapper is not originals[owner, name]
            try:
                wrapper(object())  # the original's error: still timed, under its phase
            except Exception:
                pass
            assert marks[phase] >= 0 and f"{phase}_end" in marks
    assert all(getattr(*key) is original for key, original in originals.items())


def test_phase_clock_charges_laps_and_only_the_time_spent_making_items(monkeypatch):
    from svb_spark.spark import task

    now = [100.0]

    class Clock:
        @staticmethod
        def perf_counter():
            return now[0]

        @staticmethod
        def time():
            return 1e9 + now[0]

    monkeypatch.setattr(task, "time", Clock)
    clock = task.PhaseClock()
    now[0] += 2.0
    clock.lap("load")

    def slow_items():
        for item in range(3):
            now[0] += 1.0  # making an item
            yield item

    for _ in clock.timed("encode", slow_items()):
        now[0] += 5.0  # the consumer's time is not the producer's
    now[0] += 0.5
    clock.lap("after")
    assert clock.phases == {"load": 2.0, "encode": 3.0, "after": 0.5}
    assert clock.started_at == 1e9 + 100.0


def test_text_like_rows_are_hashed_counts_of_generated_documents():
    from benchmarks import workloads

    X, y = workloads.text_like_rows(4000, 200, 1 << 10, seed=3)
    again, other = (workloads.text_like_rows(4000, 200, 1 << 10, seed=s) for s in (3, 4))
    assert (X != again[0]).nnz == 0 and (y == again[1]).all()  # deterministic for a seed
    assert (X != other[0]).nnz > 0
    assert hasattr(X, "indptr") and X.has_canonical_format and X.shape == (4000, 1 << 10)
    tokens = np.asarray(X.sum(axis=1)).ravel()
    assert tokens.min() >= 10 and tokens.max() <= 100 and (X.data == np.round(X.data)).all()
    sizes = np.sort(np.bincount(y, minlength=200))
    assert sizes[-1] > 4 * sizes[0]  # a long tail of class sizes
    words = np.arange(50_000)
    columns = workloads.hashed_columns(words, 1 << 10)
    np.testing.assert_array_equal(columns, workloads.hashed_columns(words, 1 << 10))
    assert np.bincount(columns).min() > 0 and columns.max() < 1 << 10  # every column is used


def test_text_like_rows_are_not_separable_until_the_class_words_say_everything():
    import warnings

    from sklearn.linear_model import LogisticRegression

    from benchmarks import workloads

    def accuracies(**knobs):
        X, y = workloads.text_like_rows(2000, 50, 1 << 12, seed=5, **knobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no convergence within max_iter: not the point
            model = LogisticRegression(C=1e4, max_iter=50).fit(X[:1500], y[:1500])
        return model.score(X[:1500], y[:1500]), model.score(X[1500:], y[1500:])

    train, test = accuracies()
    assert train > test + 0.1  # it fits its training rows far better than new ones
    _, words_only = accuracies(mix=(0.0, 0.0, 1.0), label_noise=0.0)
    assert words_only > test + 0.1
    _, background_only = accuracies(mix=(1.0, 0.0, 0.0))
    assert background_only < test - 0.3


def test_the_dense_many_class_set_is_a_mixture_nearest_means_half_solve():
    from benchmarks import workloads

    w = workloads.many_classes_dense(num_classes=50, num_features=64, train=3000, test=1000)
    assert w.X_train.shape == (3000, 64) and w.X_test.shape == (1000, 64) and not w.sparse
    means = np.stack([w.X_train[w.y_train == k].mean(axis=0) for k in range(50)])
    nearest = ((w.X_test[:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    accuracy = (nearest == w.y_test).mean()
    assert 0.2 < accuracy < 0.95  # learnable, not separable
    again = workloads.many_classes_dense(num_classes=50, num_features=64, train=3000, test=1000)
    assert np.array_equal(again.X_train, w.X_train)


def test_the_stopping_table_shows_every_fit_and_its_held_out_curve():
    from benchmarks import stopping

    timings = dict.fromkeys(PHASES, 0.01)
    fit = {"seconds": 12.5, "accuracy": 0.81, "extra": {"epochs": 4, "stop_reason": "holdout",
           "validation_accuracy": [0.83, 0.82], "timings": timings, "steps": 10}}  # fmt: skip
    fixed = {**fit, "extra": {**fit["extra"], "stop_reason": "maxIter", "validation_accuracy": []}}
    text = stopping.table({"fits": {"default": fit, "2 epochs": fixed}})
    assert "| default | 12.5 | 4 | holdout | 0.8100 | 0.830 0.820 | 1.00 / 1.00" in text
    assert "| 2 epochs | 12.5 | 4 | maxIter | 0.8100 | - |" in text


def test_a_result_file_holds_numpy_values_as_plain_numbers(tmp_path):
    from benchmarks import session

    path = session.write({"a": np.float32(1.5), "b": np.arange(2)}, tmp_path / "r" / "x.json")
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1]}


def test_the_exchange_tables_show_every_point_and_auto_s_choice():
    from benchmarks import exchange

    point = {"epoch_seconds": 0.4, "payload_per_step": 500.0, "predicted_bytes_per_step": 525.0,
             "framing_per_exchange": 30.0}  # fmt: skip
    points = {"sharded P=2": point, "sharded P=4": {"epoch_seconds": 0.6}}
    sharded = {"dense": {"points": points, "sharded_over_replicated_at_2": 0.67,
                         "sharded_2_over_1": 0.52}}  # fmt: skip
    auto = {"large": {"epoch_seconds": {"p2p": 0.8, "dense": 2.08, "sharded": 0.31},
                      "auto_chose": "sharded", "measured_fastest": "sharded",
                      "auto_over_p2p": 0.29}}  # fmt: skip
    text = exchange.tables(sharded, auto)
    assert "| dense | sharded P=2 | 0.40 | 500 (525) | 30 |" in text
    assert "| dense | sharded P=4 | 0.60 | - | - |" in text
    assert "sharded / replicated at P=2 0.67" in text
    assert "| large | 0.80 | 2.08 | 0.31 | sharded | sharded | 0.29 |" in text


def test_the_extreme_benchmark_reads_the_peak_rss_of_this_process():
    from benchmarks.extreme import peak_rss

    peaks = peak_rss()
    assert len(peaks["driver"]) == 1 and peaks["driver"][0] > 10  # MB: Python and numpy


def test_the_extreme_benchmark_records_fasttexts_failure_and_goes_on(monkeypatch):
    import sys
    import types

    from scipy import sparse

    from benchmarks import extreme

    tried = []

    def train_supervised(path, lr, **kwargs):
        tried.append(lr)
        raise RuntimeError("Encountered NaN.\nmore")

    monkeypatch.setitem(
        sys.modules, "fasttext", types.SimpleNamespace(train_supervised=train_supervised)
    )
    X = sparse.csr_matrix(np.eye(3, dtype=np.float32))
    point = extreme.fasttext(X, np.arange(3), X, np.arange(3), "hs")
    assert point["fit"] == "fastText hs" and point["outcome"] == "Encountered NaN."
    assert len(tried) == 4 and "top1" not in point  # every learning rate, then the record


def test_the_long_tail_set_has_a_handful_of_rows_for_most_classes():
    from svb_spark.datasets import tagged_text

    FEATURES = 1 << 14

    draw = tagged_text(2000, np.random.default_rng(0), num_features=FEATURES)
    X, y = draw(8000)
    X_test, y_test = draw(1000)
    assert X.shape == (8000, FEATURES) and X_test.shape == (1000, FEATURES)
    counts = np.bincount(y, minlength=2000)
    assert counts[:10].min() > 4 * np.median(counts)  # a head of frequent classes...
    assert np.median(counts) <= 4  # ... and a long tail of a few rows each
    assert np.diff(X.indptr).max() <= 30 and X.data.sum() == 8000 * 30


def test_the_multilabel_benchmark_scores_label_sets_as_their_definitions():
    from benchmarks.multilabel import micro_f1, ranking_metrics

    sets = [[0, 2], [1], []]
    assert micro_f1([[0], [1, 3], []], sets) == pytest.approx(2 * 2 / (3 + 3))
    top = np.array([[2, 1, 3, 4, 5], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    metrics = ranking_metrics(top, sets)
    assert metrics == {
        "precision_at_1": pytest.approx(1 / 3),
        "precision_at_5": pytest.approx(2 / 15),
    }


def test_the_tagged_set_has_a_zipfian_head_and_one_to_ten_labels_a_row():
    from svb_spark.datasets import tagged_labels

    X, sets = tagged_labels(500, np.random.default_rng(0), num_features=1 << 14)(4000)
    sizes = np.array([len(s) for s in sets])
    assert X.shape == (4000, 1 << 14) and sizes.min() == 1 and sizes.max() <= 10
    assert all(len(set(s)) == len(s) for s in sets)  # a label at most once a row
    counts = np.bincount([k for s in sets for k in s], minlength=500)
    assert counts[:5].min() > 4 * np.median(counts) and np.median(sizes) <= 2


def test_recorded_points_are_written_after_each_so_a_failure_keeps_the_earlier(tmp_path):
    from benchmarks import session

    def fails():
        raise RuntimeError("the JVM died")

    path = tmp_path / "result.json"
    with pytest.raises(RuntimeError):
        session.record_points([lambda: {"fit": "a"}, fails], path, {"rows": 3})
    written = json.loads(path.read_text())
    assert written["rows"] == 3 and written["points"] == [{"fit": "a"}]
