"""The cost model that ``exchange="auto"`` consults: bytes and seconds per step of each mode."""

import pytest

from svb_spark.core.modes import choose_exchange, predicted_step_seconds


def shape(K, D, B, P=2, nnz=None):
    return dict(num_workers=P, batch_size=B, num_classes=K, num_features=D, itemsize=4,
                nonzeros_per_row=nnz)  # fmt: skip


@pytest.mark.parametrize(
    "dims, fastest",
    [
        # Many classes and features, small batches: sufficient vectors are fewer bytes.
        ((60, 300, 8), "p2p"),
        # Few classes, large batches: the K x (D + 1) gradient is smaller and cheaper to apply.
        ((4, 1000, 512), "dense"),
        # A large model: the dense gradient's 16 MB a step cost more than p2p's extra GEMM.
        ((1000, 4096, 32), "p2p"),
    ],
)
def test_auto_takes_the_mode_with_the_fastest_predicted_step(dims, fastest):
    chosen, sent, seconds = choose_exchange(**shape(*dims))
    assert chosen == fastest
    assert seconds[fastest] == min(seconds[m] for m in ("p2p", "dense"))
    assert set(sent) == set(seconds) == {"p2p", "dense", "broadcast", "sharded"}


def test_small_sgd_steps_stay_replicated_for_the_sharded_steps_overhead():
    # Measured by benchmarks.exchange: at this shape p2p's step was the fastest.
    assert choose_exchange(("p2p", "dense", "sharded"), **shape(60, 300, 8))[0] == "p2p"


def test_sharded_is_predicted_two_thirds_of_a_replicated_step_for_large_models():
    big = shape(1000, 4096, 32)
    ratio = predicted_step_seconds("sharded", **big) / predicted_step_seconds("p2p", **big)
    assert ratio == pytest.approx(2 / 3, abs=0.05)
    assert choose_exchange(("p2p", "dense", "sharded"), **big)[0] == "sharded"
    # One worker: nothing to split, and the replicated step streams less.
    assert choose_exchange(("p2p", "dense", "sharded"), **shape(1000, 4096, 32, P=1))[0] == "p2p"


def test_float64_steps_take_longer_and_sparse_rows_cost_their_nonzeros():
    dense = shape(100, 2**15, 32)
    assert predicted_step_seconds("p2p", **{**dense, "itemsize": 8}) > predicted_step_seconds(
        "p2p", **dense
    )
    assert predicted_step_seconds("p2p", **shape(100, 2**15, 32, nnz=50)) < (
        predicted_step_seconds("p2p", **dense) / 50
    )


@pytest.mark.parametrize("K, fastest", [(200, "p2p"), (1000, "sharded")])
def test_sparse_steps_shard_from_about_600_classes_at_28_nonzeros_a_row(K, fastest):
    # A sparse product streams a K-wide replica row per non-zero, and a p2p worker applies
    # all P B rows where a sharded one applies them to its K / P classes. On generated text
    # (datasets.tagged_text, 2^14 features, 28 non-zeros a row, 40k rows, two workers) the
    # p2p fit was faster at 200 classes and the sharded one at 1,000, with equal accuracy.
    chosen, _, seconds = choose_exchange(("p2p", "dense", "sharded"), **shape(K, 2**14, 32, nnz=28))
    assert chosen == fastest
    if fastest == "sharded":
        assert seconds["sharded"] < 0.9 * seconds["p2p"]
