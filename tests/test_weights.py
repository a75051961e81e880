"""ReplicaWeights: one owner for the layout, the L2 factor and the optimizer state."""

import numpy as np
import pytest

from svb_spark.core.weights import ReplicaWeights


@pytest.mark.parametrize("feature_major", [False, True])
def test_flat_round_trip_covers_weights_factor_and_optimizer_state(feature_major):
    rng = np.random.default_rng(0)
    source = ReplicaWeights(3, 5, np.float32, feature_major)
    source.start_from(rng.normal(size=(3, 5)), rng.normal(size=3))
    source.state["A"] = rng.normal(size=(3, 5)).astype(np.float32)
    source.factor = 0.5
    target = ReplicaWeights(3, 5, np.float32, feature_major)
    target.state["A"] = np.zeros((3, 5), np.float32)
    assert target.digest() != source.digest()
    target.load_flat(source.flat(), source.factor)
    assert target.digest() == source.digest()
    np.testing.assert_array_equal(target.W, source.W)
    np.testing.assert_array_equal(target.state["A"], source.state["A"])
    assert target.feature_major == feature_major == (not target.W.flags.c_contiguous)


def test_the_digest_sees_the_factor_and_every_array():
    weights = ReplicaWeights(2, 2, np.float64)
    weights.state["A"] = np.zeros((2, 2))
    before = weights.digest()
    weights.state["A"][1, 1] = 1e-12
    changed_state = weights.digest()
    weights.factor = 0.999
    assert len({before, changed_state, weights.digest()}) == 3


def test_loading_values_of_another_shape_is_refused():
    weights = ReplicaWeights(2, 3, np.float64)
    with pytest.raises(ValueError, match="cannot load 5 values"):
        weights.load_flat(np.zeros(5), 1.0)


def test_folding_the_factor_keeps_the_model():
    weights = ReplicaWeights(2, 3, np.float64, feature_major=True)
    weights.start_from(np.arange(6.0).reshape(2, 3), np.zeros(2))
    weights.factor = 0.5
    weights.fold_factor()
    assert weights.factor == 1.0
    np.testing.assert_array_equal(weights.W, 0.5 * np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("feature_major", [False, True])
def test_successive_checks_cover_every_value_of_the_replica_within_one_cycle(feature_major):
    block = 40  # bytes: the 4 x 7 float64 W, b and state take several blocks
    weights = ReplicaWeights(4, 7, np.float64, feature_major)
    weights.state["A"] = np.zeros((4, 7))
    cycle = weights.digest_blocks(block)
    assert cycle == -(-(2 * 4 * 7 + 4) * 8 // block)
    before = [weights.digest(check, block) for check in range(cycle)]
    for array in weights.arrays().values():
        for index in np.ndindex(array.shape):
            array[index] += 1.0
            after = [weights.digest(check, block) for check in range(cycle)]
            array[index] -= 1.0
            # Exactly one check of the cycle sees a change of any one value (b: every check).
            changed = sum(a != b for a, b in zip(before, after))
            assert changed == (cycle if array is weights.b else 1)
    weights.factor = 0.5
    assert all(a != weights.digest(check, block) for check, a in enumerate(before))
    # Check n and check n + cycle hash the same block.
    assert weights.digest(cycle + 2, block) == weights.digest(2, block) != weights.digest(3, block)


def test_one_check_hashes_one_block_of_the_replica_and_no_more(monkeypatch):
    import zlib

    from svb_spark.core import weights as module

    hashed = []

    class CountingZlib:
        @staticmethod
        def crc32(data, value=0):
            hashed.append(memoryview(data).nbytes)
            return zlib.crc32(data, value)

    monkeypatch.setattr(module, "zlib", CountingZlib)
    block = 16 << 10
    weights = ReplicaWeights(64, 1024, np.float32, feature_major=True)  # 256 KiB of W
    total = sum(array.nbytes for array in weights.arrays().values())
    assert weights.digest_blocks(block) == -(-total // block) == 17
    weights.digest(5, block)
    # The factor, b, and one block of the arrays' bytes.
    assert sum(hashed) == 8 + weights.b.nbytes + block
    hashed.clear()
    weights.digest()
    assert sum(hashed) == 8 + weights.b.nbytes + total
    # The default block: a 256 MiB replica is checked 4 MiB at a time.
    large = ReplicaWeights(256, 2**18, np.float32, feature_major=True)
    assert large.digest_blocks() == 65  # 64 blocks of W, and b (1 KiB) starts one more


def test_a_check_copies_no_state_array_made_like_a_feature_major_w():
    from svb_spark.core.weights import _bytes_of

    weights = ReplicaWeights(64, 1024, np.float32, feature_major=True)
    best = weights.state["best_W"] = np.zeros_like(weights.W)  # Fortran-ordered, as W's view
    assert best.flags.f_contiguous and not best.flags.c_contiguous
    view = np.frombuffer(_bytes_of(best), dtype=np.float32)
    assert np.shares_memory(view, best)  # read in place, not copied
    before = weights.digest()
    best[3, 7] = 1.0
    assert weights.digest() != before
