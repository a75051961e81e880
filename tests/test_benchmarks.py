"""The benchmark harness's pure parts: cost model, time-to-target search, report generation.

No benchmark runs here: a fake result stands in for ``python -m benchmarks run``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import costmodel, machine, peers, report  # noqa: E402
from benchmarks.run import refresh_model, regenerate  # noqa: E402

CALIBRATION = costmodel.Calibration(
    gemm_flops=50e9,
    elementwise_s=1e-9,
    overhead_s={"compute": 1e-4, "encode": 5e-5, "apply": 5e-5},
    codec_s_per_byte=1e-9,
    decode_s=4e-5,
    latency_s=1e-3,
    loopback_s_per_byte=1e-9,
    spark_job_s=0.25,
    jvm_gemm_flops=20e9,
    cores=2,
)
SHAPE = costmodel.Shape(rows=10_000, num_classes=200, num_features=256, batch_size=32)


def test_svb_step_phases_follow_the_formulas():
    one = costmodel.svb_step(CALIBRATION, SHAPE, 1)
    two = costmodel.svb_step(CALIBRATION, SHAPE, 2)
    assert one["exchange"] == 0.0
    m = 32 * (200 + 256) * 4
    assert two["exchange"] == pytest.approx(1e-3 + m * 1e-9)
    assert two["encode"] == pytest.approx(5e-5 + m * 1e-9)
    # The rebuild GEMM grows with P: 2 P B K D flops.
    gemm = 2 * 32 * 200 * 256 / 50e9
    assert two["apply"] - one["apply"] == pytest.approx(gemm + 32 * 456 * 1e-9)
    assert two["step"] == pytest.approx(sum(two[p] for p in costmodel.PHASES))
    # Four workers on two cores: every phase takes twice as long.
    four = costmodel.svb_step(CALIBRATION, SHAPE, 4)
    assert four["compute"] == pytest.approx(2 * one["compute"])
    assert four["exchange"] == pytest.approx(2 * (1e-3 + 3 * m * 1e-9))


def test_bandwidth_and_dense_exchange():
    slow = costmodel.dense_step(CALIBRATION, SHAPE, 8, gbit_per_s=1.0)
    fast = costmodel.dense_step(CALIBRATION, SHAPE, 8, gbit_per_s=100.0)
    assert slow["exchange"] > fast["exchange"] > 0
    gradient = 200 * 257 * 4
    # Eight workers on two cores: everything stretches by 4.
    assert slow["exchange"] == pytest.approx(4 * (1e-3 + 7 * gradient * (1e-9 + 8 / 1e9)))
    # A ring sends 2 (P - 1) / P gradients but pays 2 (P - 1) latencies.
    ring = costmodel.dense_step(CALIBRATION, SHAPE, 8, gbit_per_s=1.0, ring=True)
    assert ring["exchange"] == pytest.approx(4 * (14e-3 + 14 / 8 * gradient * (1e-9 + 8 / 1e9)))
    assert costmodel.svb_epoch_bytes(SHAPE, 2) == 157 * 32 * 456 * 4
    assert costmodel.dense_epoch_bytes(SHAPE, 2) == 157 * gradient
    assert costmodel.tree_aggregate_epoch_bytes(SHAPE, 1) == 0.0


def test_tree_aggregate_iteration_pays_a_job_and_a_full_pass():
    it = costmodel.tree_aggregate_iteration(CALIBRATION, SHAPE, 2)
    assert it["job"] == 0.25
    assert it["compute"] == pytest.approx(4 * 5000 * 200 * 256 / 20e9)
    # With 16 workers a depth-2 tree has 4 reducers of 4 gradients each.
    wide = costmodel.tree_aggregate_iteration(CALIBRATION, SHAPE, 16)
    assert wide["exchange"] == pytest.approx(5 * 200 * 257 * 8 * 1e-9)


def test_projection_covers_every_method_worker_count_and_bandwidth():
    rows = costmodel.project(CALIBRATION, SHAPE, [2, 4, 8], [1.0, 10.0])
    assert len(rows) == len(costmodel.METHODS) * 3 * 2
    svb = {(r["workers"], r["gbit_per_s"]): r for r in rows if r["method"] == "svb"}
    assert svb[(2, 1.0)]["epoch_s"] == pytest.approx(svb[(2, 1.0)]["step_s"] * 157)
    tree = [r for r in rows if r["method"] == "treeAggregate"]
    assert all(r["epoch_s"] == r["step_s"] for r in tree)
    # Projected workers have a core each: 8 workers are not stretched by this machine's 2 cores.
    eight = costmodel.svb_step(costmodel.replace(CALIBRATION, cores=8), SHAPE, 8, 1.0)["step"]
    assert svb[(8, 1.0)]["step_s"] == pytest.approx(eight)


def test_calibration_round_trip_and_small_helpers():
    assert costmodel.Calibration.from_dict(CALIBRATION.to_dict()) == CALIBRATION
    assert costmodel.relative_error(1.2, 1.0) == pytest.approx(0.2)
    assert costmodel.relative_error(1.0, 0.0) == float("inf")
    flops = (2 * 32 * 200 * 256 + 2 * 2 * 32 * 200 * 256) * 157
    assert costmodel.gemm_lower_bound_s(SHAPE, 2, 1e9) == pytest.approx(flops / 1e9)
    assert SHAPE.steps_per_epoch(4) == 79


def test_time_to_target_ladder_then_bisection():
    # Accuracy grows with iterations; each fit takes 1 s per iteration plus 2 s of setup.
    calls = []

    def fit(k):
        calls.append(k)
        return peers.FitPoint(k, 2.0 + k, min(1.0, 0.5 + 0.01 * k))

    final = peers.FitPoint(60, 62.0, 1.0)
    found = peers.time_to_target(fit, final, target=0.7, ladder=peers.doubling_ladder(60))
    # Ladder 1, 2, 4, 8, 16, 32: 32 is the first at or above 0.7 (k >= 20); then 24, 20.
    assert calls == [1, 2, 4, 8, 16, 32, 24, 20]
    assert found["iterations"] == 20 and found["seconds"] == 22.0
    assert found["bracket"] == 16
    assert [p["iterations"] for p in found["curve"]] == [1, 2, 4, 8, 16, 20, 24, 32, 60]


def test_time_to_target_not_reached_and_final_only():
    final = peers.FitPoint(3, 5.0, 0.4)
    missed = peers.time_to_target(lambda k: peers.FitPoint(k, k, 0.1), final, 0.5, [1, 2])
    assert missed["seconds"] is None and missed["iterations"] is None
    reached = peers.time_to_target(lambda k: peers.FitPoint(k, k, 0.1), final, 0.3, [1, 2])
    assert reached["iterations"] == 3 and reached["seconds"] == 5.0


def test_held_out_accuracy():
    import numpy as np

    W = np.array([[1.0, 0.0], [0.0, 1.0]])
    X = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    assert peers.held_out_accuracy(W, np.zeros(2), X, np.array([0, 1, 1])) == pytest.approx(2 / 3)


def _point(iterations, seconds, accuracy, **extra):
    return peers.FitPoint(iterations, seconds, accuracy, extra).to_dict()


def fake_result() -> dict:
    """A result shaped like ``python -m benchmarks run`` writes, with made-up figures."""
    timings = {"compute": 0.5, "encode": 0.1, "exchange": 0.2, "decode": 0.05, "apply": 0.4}
    svb_extra = {"bytes_per_step": 60_000.0, "steps": 1000}
    workload = {
        "describe": {"title": "fake planted", "train_rows": 1000, "test_rows": 200,
                     "num_classes": 10, "num_features": 8},
        "target_accuracy": 0.895,
        "methods": {
            "mllib": {
                "final": _point(50, 40.0, 0.9),
                "time_to_target": {"seconds": 30.0, "iterations": 32, "curve": [
                    _point(16, 15.0, 0.8), _point(32, 30.0, 0.9), _point(50, 40.0, 0.9)]},
            },
            "svb-p2p": {
                "final": _point(10, 8.0, 0.91, **svb_extra),
                "time_to_target": {"seconds": 4.0, "iterations": 2, "curve": [
                    _point(1, 3.0, 0.85), _point(2, 4.0, 0.9), _point(10, 8.0, 0.91)]},
            },
            "svb-dense": {"final": _point(2, 6.0, 0.9, bytes_per_step=800_000.0),
                          "time_to_target": {"seconds": 6.0, "iterations": 2}, "note": "same SGD"},
            "svb-broadcast": {"skipped": "too many rounds for --quick"},
            "sklearn": {"final": _point(100, 1.0, 0.92)},
        },
        "bytes": [{"config": "p2p, batchSize 32", "measured": 60_000.0, "predicted": 58_000.0}],
        "batch16_bytes": {"p2p": 30_000.0, "dense": 800_000.0},
        "breakdown": {"svb-p2p": {"measured": {p: v / 1000 for p, v in timings.items()},
                                  "model": costmodel.svb_step(CALIBRATION, SHAPE, 2)}},
        "efficiency": {"epoch_s": 1.2, "bound_s": 1.0, "ratio": 1.2, "bound_peak_s": 0.5,
                       "ratio_peak": 2.4, "peak_gflops": 50.0},
        "validation": [{"workload": "W1", "method": "svb", "workers": 2, "how": "cluster",
                        "measured_ms": 1.0, "predicted_ms": 1.3, "error": 0.3}],
    }  # fmt: skip
    result = {
        "name": "fake",
        "mode": "quick",
        "started": "2026-01-01T00:00:00",
        "duration_s": 300.0,
        "machine": {
            "cpu": "Test CPU", "cores": 2, "numpy_blas": [{"internal_api": "openblas"}],
            "load_start": [1.0, 1.0, 1.0], "load_end": [2.0, 2.0, 2.0],
            "executor_blas_failures": [],
            "spark": {"spark": "4.x", "master": "local-cluster[2,1,2048]", "executors": 2,
                      "executor_memory": "1g", "java": "17",
                      "jvm_blas": {"blas": "dev.ludovic.netlib.blas.JNIBLAS"}},
        },
        "calibration": CALIBRATION.to_dict(),
        "micro": {"p2p_tiny_ms": 1.2, "p2p_large_ms": 8.0, "all_gather_ms": 1000.0,
                  "spark_job_ms": 250.0},
        "workloads": {"W1": workload},
        "skipped": {"W3": "needs sparse input"},
        "projection": {
            "workers": [2, 4],
            "gbit_per_s": [1.0, 10.0],
            "shapes": {"W1": {"title": "W1", "rows": 10_000, "num_classes": 200,
                              "num_features": 256, "batch_size": 32}},
            "rows": {"W1": costmodel.project(CALIBRATION, SHAPE, [2, 4], [1.0, 10.0])},
        },
    }  # fmt: skip
    result["targets"] = report.evaluate_targets(result)
    return result


def test_targets_are_judged_from_the_figures():
    targets = {t["name"]: t for t in fake_result()["targets"]}
    assert targets["W1 time to target"]["value"] == pytest.approx(4.0 / 30.0)
    assert targets["W1 time to target"]["met"] is True
    assert targets["W2 time to target"]["met"] is None  # W2 was not run
    assert targets["W1 bytes per step, batchSize 16"]["met"] is True
    assert targets["W1 time per epoch vs GEMM lower bound"]["met"] is True
    assert targets["tiny p2p exchange at P=2"]["met"] is True
    assert targets["cost model vs measured step time"]["met"] is False


def test_refresh_model_recomputes_predictions_not_measurements():
    result = fake_result()
    result["workloads"]["W1"]["describe"].update(train_rows=10_000, num_classes=200,
                                                 num_features=256)  # fmt: skip
    refresh_model(result)
    (row,) = result["workloads"]["W1"]["validation"]
    expected = 1000 * costmodel.svb_step(CALIBRATION, SHAPE, 2)["step"]
    assert row["measured_ms"] == 1.0 and row["predicted_ms"] == pytest.approx(expected)
    assert row["error"] == pytest.approx(expected - 1.0)


def test_readme_section_replaced_between_markers_only():
    text = "# Project\n\nintro\n\n<!-- benchmarks:start -->\nold\n<!-- benchmarks:end -->\n\ntail\n"
    replaced = report.replace_section(text, f"{report.START_MARKER}\nnew\n{report.END_MARKER}")
    assert "old" not in replaced and "new" in replaced
    assert replaced.startswith("# Project\n\nintro\n") and replaced.endswith("\n\ntail\n")
    appended = report.replace_section(
        "# Project\n", f"{report.START_MARKER}\nx\n{report.END_MARKER}"
    )
    assert appended == "# Project\n\n<!-- benchmarks:start -->\nx\n<!-- benchmarks:end -->\n"


def test_regenerate_writes_readmes_and_plots(tmp_path):
    result = fake_result()
    plots, bench_readme, readme = tmp_path / "plots", tmp_path / "BENCH.md", tmp_path / "README.md"
    readme.write_text("# svb_spark\n\nkeep me\n")
    regenerate(result, plots, bench_readme, readme)
    bench = bench_readme.read_text()
    assert "| W1 time to target | SVB p2p <= 1/5 of MLlib's wall time |" in bench
    assert "4.0 s vs MLlib 30.0 s = 0.13x" in bench
    assert "too many rounds for --quick" in bench and "needs sparse input" in bench
    assert "(plots/W1_time_to_accuracy.png)" in bench
    top = readme.read_text()
    assert top.startswith("# svb_spark\n\nkeep me\n")
    assert top.count(report.START_MARKER) == 1 and "benchmarks/plots/" in top
    for name in ("W1_time_to_accuracy", "W1_step_breakdown", "bytes_per_step",
                 "scaling_projection"):  # fmt: skip
        assert (plots / f"{name}.png").stat().st_size > 1000
    # Regenerating from the same result gives the same text.
    drawn = {name: f"plots/{name}.png" for name in ("W1_time_to_accuracy", "scaling_projection")}
    assert report.replace_section(top, report.readme_section(result, drawn)) == top


def test_machine_info_names_spark_and_the_jvm_blas(spark):
    info = machine.spark_info(spark)
    assert info["spark"] == spark.version
    assert info["jvm_blas"]["blas"].startswith("dev.ludovic.netlib.blas.")
    assert machine.python_machine()["cores"] >= 1
