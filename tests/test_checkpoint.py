"""Checkpoints: atomic files through pyarrow.fs, and a resumed fit equal to an uninterrupted one."""

import os

import numpy as np
import pyarrow as pa
import pytest
from scipy import sparse

from svb_spark.core.config import make_plan
from svb_spark.core.partition import prepare_partition
from svb_spark.core.solvers.stochastic import SgdSolver
from svb_spark.spark import checkpoint
from svb_spark.spark.checkpoint import (
    checkpoint_steps,
    read_checkpoint,
    worker_memory_steps,
    write_checkpoint,
)
from svb_spark.testing import train_in_process
from tests.support.data import blobs, training_config


def _sparse_blobs():
    """The same problem with most features zeroed, as CSR rows."""
    parts = []
    for X, y, w in blobs(rows=(90, 70)):
        X = X * (np.random.default_rng(3).random(X.shape) < 0.3)
        parts.append((sparse.csr_matrix(X), y, w))
    return parts


def _sparse_config(parts, **overrides):
    dense = [(X.toarray(), y, w) for X, y, w, *_ in parts]
    std = np.concatenate([X for X, _, _ in dense]).std(axis=0, ddof=1)
    return training_config(
        dense, scale=1 / std, mean=None, sparse=True, reg_param=0.05, **overrides
    )


CASES = {
    "dense": (lambda: blobs(), training_config),
    "dense, syncInterval 3": (
        lambda: blobs(),
        lambda p, **o: training_config(p, sync_interval=3, **o),
    ),
    "sparse, feature-major with L2 factor": (_sparse_blobs, _sparse_config),
    "validation column, with its best model": (
        lambda: [(X, y, w, np.arange(len(y)) % 4 == 0) for X, y, w in blobs()],
        lambda p, **o: training_config(p, validation_tol=0.01, **o),
    ),
    # validation_tol < 0: the held-out rows never stop the fit, which ends with the last
    # pass over them after the 8 epochs (never checkpointed: a retried stage redoes it).
    "held-out rows, with the last pass over them": (
        lambda: [(X, y, w, np.arange(len(y)) % 5 == 0) for X, y, w in blobs()],
        lambda p, **o: training_config(p, validation_tol=-1.0, holdout_fraction=0.2, **o),
    ),
    "held-out sparse rows with L1, with the last pass over them": (
        lambda: [(X, y, w, np.arange(len(y)) % 5 == 0) for X, y, w in _sparse_blobs()],
        lambda p, **o: _sparse_config(
            p, validation_tol=-1.0, holdout_fraction=0.2, elastic_net=0.5, **o
        ),
    ),
    "averaged SGD, with its mean of the iterates": (
        lambda: blobs(),
        lambda p, **o: training_config(p, solver="asgd", **o),
    ),
    "SAGA, with every worker's memory": (
        lambda: blobs(),
        lambda p, **o: training_config(p, solver="saga", **o),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_a_fit_resumed_from_a_checkpoint_ends_where_the_uninterrupted_fit_ends(case, tmp_path):
    make_parts, make_config = CASES[case]
    parts = make_parts()
    directory = str(tmp_path / "fit")
    # Checkpoints after epochs 3 and 6 of 8; the one of epoch 6 is resumed from. SAGA keeps
    # the one of epoch 3 too, in case a worker's memory of epoch 6 had not been written.
    uninterrupted = train_in_process(
        parts, make_config(parts, checkpoint_dir=directory, checkpoint_interval=3)
    )
    assert uninterrupted[0].checkpoints == 2 and uninterrupted[1].checkpoints == 0
    steps = checkpoint_steps(directory)
    step = steps[-1]
    state = read_checkpoint(directory, step)
    assert len(state.history) == 6 and step >= 6 * state.plan["steps_per_epoch"]
    if "SAGA" in case:
        assert len(steps) == 2
        assert [worker_memory_steps(directory, rank) for rank in range(3)] == [steps] * 3
    else:
        assert steps == [step]

    resumed = train_in_process(parts, make_config(parts), resume_from=directory)

    for before, after in zip(uninterrupted, resumed):
        assert after.resumed_from_step == step
        assert after.steps == before.steps
        np.testing.assert_array_equal(after.W, before.W)
        np.testing.assert_array_equal(after.b, before.b)
        assert after.objective_history == before.objective_history


def _replica(parts, config):
    prepared = [prepare_partition(X.copy(), y, w, config) for X, y, w in parts]
    plan = make_plan([p.rows for p in prepared], [p.curvature for p in prepared], config)
    replica = SgdSolver(config, plan)
    rng = np.random.default_rng(0)
    replica.weights.W[...] = rng.normal(size=replica.weights.W.shape)
    replica.weights.b[...] = rng.normal(size=replica.weights.b.shape)
    replica.step, replica.history = 17, [1.5, 1.25]
    return replica


def test_a_checkpoint_restores_every_field_of_the_replica(tmp_path):
    parts = _sparse_blobs()
    config = _sparse_config(parts)
    replica = _replica(parts, config)
    replica.weights.factor = 0.75
    write_checkpoint(str(tmp_path), replica.state())

    restored = SgdSolver(config, replica.plan)
    restored.restore(read_checkpoint(str(tmp_path), 17))
    assert restored.weights.feature_major
    np.testing.assert_array_equal(restored.weights.W, replica.weights.W)
    np.testing.assert_array_equal(restored.weights.b, replica.weights.b)
    assert (restored.weights.factor, restored.step, restored.history) == (0.75, 17, [1.5, 1.25])


def test_only_the_newest_whole_checkpoint_stays_on_disk(tmp_path):
    parts = blobs()
    replica = _replica(parts, training_config(parts))
    for step in (5, 10, 15):
        replica.step = step
        write_checkpoint(str(tmp_path), replica.state())
    assert checkpoint_steps(str(tmp_path)) == [15]
    assert os.listdir(tmp_path) == ["step-000000000015.arrow"]


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    parts = blobs()
    replica = _replica(parts, training_config(parts))
    write_checkpoint(str(tmp_path), replica.state())

    real_stream = pa.ipc.new_stream

    def disk_full(sink, schema):
        real_stream(sink, schema)
        sink.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint.pa.ipc, "new_stream", disk_full)
    replica.step = 30
    with pytest.raises(OSError, match="No space left"):
        write_checkpoint(str(tmp_path), replica.state())
    assert os.listdir(tmp_path) == ["step-000000000017.arrow"]


def test_a_checkpoint_of_another_plan_is_refused(tmp_path):
    parts = blobs()
    config = training_config(parts)
    replica = _replica(parts, config)
    write_checkpoint(str(tmp_path), replica.state())
    other = training_config(parts, batch_size=8)
    fresh = SgdSolver(other, make_plan([130, 101, 77], [1.0, 1.0, 1.0], other))
    with pytest.raises(ValueError, match="remove it or use another checkpointDir"):
        fresh.restore(read_checkpoint(str(tmp_path), 17))


def test_saga_resumes_from_the_older_checkpoint_when_a_worker_memory_of_the_newest_is_missing(
    tmp_path,
):
    parts = blobs()
    directory = str(tmp_path / "fit")
    config = training_config(parts, solver="saga", checkpoint_dir=directory, checkpoint_interval=3)
    uninterrupted = train_in_process(parts, config)
    older, newest = checkpoint_steps(directory)
    # What a worker killed between the replica's write and its own leaves behind.
    os.remove(os.path.join(directory, f"memory-00001-step-{newest:012d}.arrow"))
    resumed = train_in_process(parts, training_config(parts, solver="saga"), resume_from=directory)
    assert resumed[0].resumed_from_step == older
    np.testing.assert_array_equal(resumed[0].W, uninterrupted[0].W)
    assert resumed[0].objective_history == uninterrupted[0].objective_history
