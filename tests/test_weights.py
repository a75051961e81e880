"""ReplicaWeights: one owner for the layout, the L2 factor and the optimizer state."""

import numpy as np
import pytest

from svb_spark.weights import ReplicaWeights


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
