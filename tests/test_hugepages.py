"""Large zeroed arrays on transparent huge pages."""

import mmap

import numpy as np
import pytest

from svb_spark import hugepages


def _memory(array: np.ndarray):
    """What finally holds ``array``'s memory: a map, or the array that owns it."""
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array.obj if isinstance(array, memoryview) else array  # newer numpy wraps the map


def test_a_large_array_is_a_zeroed_writable_map_released_with_the_array(monkeypatch):
    if hugepages._ADVICE is None:
        pytest.skip("this platform has no MADV_HUGEPAGE")
    monkeypatch.setattr(hugepages, "HUGE_BYTES", 1 << 20)
    array = hugepages.zeros((512, 1024), np.float32)  # 2 MiB
    assert isinstance(_memory(array), mmap.mmap)
    assert array.shape == (512, 1024) and array.dtype == np.float32 and array.flags.c_contiguous
    assert not array.any()
    array[3, 5] = 7.0
    assert array.sum() == 7.0
    memory = _memory(array)
    del array
    memory.close()  # refused while an array still exports the map


def test_small_arrays_and_platforms_without_the_advice_get_plain_zeros(monkeypatch):
    assert not isinstance(_memory(hugepages.zeros((4, 4), np.float64)), mmap.mmap)
    monkeypatch.setattr(hugepages, "HUGE_BYTES", 0)
    monkeypatch.setattr(hugepages, "_ADVICE", None)
    array = hugepages.zeros((4, 4), np.float64)
    assert array.base is None and not array.any()


@pytest.mark.parametrize("feature_major", [False, True])
def test_zeros_like_keeps_the_memory_order(monkeypatch, feature_major):
    monkeypatch.setattr(hugepages, "HUGE_BYTES", 0)
    storage = np.ones((6, 4), np.float32)
    like = hugepages.zeros_like(storage.T if feature_major else storage)
    assert like.shape == ((4, 6) if feature_major else (6, 4)) and not like.any()
    assert like.flags.f_contiguous == feature_major and like.dtype == np.float32


@pytest.mark.parametrize("feature_major", [False, True])
def test_a_large_replica_lives_on_huge_pages(monkeypatch, feature_major):
    from svb_spark.weights import ReplicaWeights

    if hugepages._ADVICE is None:
        pytest.skip("this platform has no MADV_HUGEPAGE")
    monkeypatch.setattr(hugepages, "HUGE_BYTES", 0)
    weights = ReplicaWeights(5, 7, np.float32, feature_major=feature_major)
    assert isinstance(_memory(weights.W), mmap.mmap) and weights.W.shape == (5, 7)
    assert weights.feature_major == feature_major and not weights.W.any()
