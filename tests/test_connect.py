"""Spark Connect parity: the p2p fit, transform, save and load need no SparkContext."""

import pytest

from tests.support.jobs import run_job


@pytest.mark.spark_connect
def test_fit_transform_save_load_over_spark_connect():
    out = run_job("connect", timeout=240)
    assert out["task_slots"] is None and out["default_parallelism"] == 2
    history = out["history"]
    assert len(history) == 3 and history[-1] < history[0]
    assert out["accuracy"] > 0.7
    assert out["same_coefficients"] and out["same_predictions"]
    assert out["evaluate_accuracy"] == pytest.approx(out["accuracy"])
    assert out["block_same_predictions"]
    assert any("Spark Connect has no broadcast" in w for w in out["block_warnings"])
    assert out["warm_first_objective"] < history[0]
    assert "classic SparkSession" in out["to_mllib_error"]
    assert "needs a SparkContext" in out["broadcast_error"]
