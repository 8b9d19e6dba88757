"""Tests of the batch-size policies: `AdaptiveBatcher` on simulated cost models, no sleeping."""

from __future__ import annotations

import random
import threading

import pytest

from pipeline.batching import AdaptiveBatcher


def simulate(
    batcher: AdaptiveBatcher, cost: float, per_item: float, batches: int, noise: float = 0.0
) -> list[int]:
    """Feed `batcher` the latency of a write costing `cost + per_item * size` seconds."""
    rng = random.Random(7)
    sizes = []
    for _ in range(batches):
        size = batcher.plan_batch(1_000_000)
        sizes.append(size)
        latency = (cost + per_item * size) * (1 + rng.uniform(-noise, noise))
        batcher.record_batch(size, latency)
    return sizes


def test_converges_under_the_objective_on_a_fixed_cost_plus_per_item_workload() -> None:
    # 100 us + 2 us per item, a 1 ms objective: 450 items would meet it exactly, and
    # the batcher aims at 90% of it (400 items).
    batcher = AdaptiveBatcher(0.001)
    sizes = simulate(batcher, 100e-6, 2e-6, 100)
    first_over = next(index for index, size in enumerate(sizes) if size > 400)
    assert first_over < 30  # +16 a batch from 1
    stats = batcher.statistics()
    assert stats.window == 50
    assert stats.batches == 100
    assert 350 <= stats.mean_size <= 420
    assert stats.over_target == 0.0  # the saw-tooth stays under the objective itself
    assert all(350 <= size <= 417 for size in sizes[40:])


def test_noisy_latencies_rarely_pass_the_objective() -> None:
    batcher = AdaptiveBatcher(0.001)
    simulate(batcher, 100e-6, 2e-6, 400, noise=0.1)
    stats = batcher.statistics()
    assert 300 <= stats.mean_size <= 450
    assert stats.over_target <= 0.15  # aiming at the objective itself: see the next test


@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_aiming_at_the_objective_itself_passes_it_a_quarter_of_the_time(noise: float) -> None:
    batcher = AdaptiveBatcher(0.001, headroom=1.0)
    simulate(batcher, 100e-6, 2e-6, 400, noise=noise)
    assert batcher.statistics().over_target == pytest.approx(0.24)


def test_aiming_at_the_objective_itself_passes_it_more_often() -> None:
    under = AdaptiveBatcher(0.001)
    exact = AdaptiveBatcher(0.001, headroom=1.0)
    simulate(under, 100e-6, 2e-6, 400, noise=0.1)
    simulate(exact, 100e-6, 2e-6, 400, noise=0.1)
    assert exact.statistics().over_target > under.statistics().over_target


def test_follows_a_slower_sink_down_and_back_up() -> None:
    batcher = AdaptiveBatcher(0.001, initial=400)
    simulate(batcher, 100e-6, 20e-6, 60)  # ten times the cost per item: 40 items fit
    assert 30 <= batcher.size <= 47
    simulate(batcher, 100e-6, 2e-6, 60)
    assert batcher.size > 350


def test_clamps_to_its_bounds() -> None:
    batcher = AdaptiveBatcher(1.0, maximum=50)
    simulate(batcher, 0.0, 1e-6, 20)
    assert batcher.size == 50
    batcher = AdaptiveBatcher(1e-6, minimum=5, initial=100)
    simulate(batcher, 1.0, 0.0, 100)
    assert batcher.size == 5


def test_plan_batch_never_exceeds_what_is_pending() -> None:
    batcher = AdaptiveBatcher(0.01, initial=100)
    assert batcher.plan_batch(30) == 30
    assert batcher.plan_batch(0) == 0
    assert batcher.plan_batch(500) == 100


def test_a_short_batch_under_the_aim_does_not_grow_the_size() -> None:
    batcher = AdaptiveBatcher(0.01, initial=100)
    batcher.record_batch(30, 0.0001)
    assert batcher.size == 100
    batcher.record_batch(100, 0.0001)
    assert batcher.size == 116
    batcher.record_batch(10, 0.5)  # over the aim, however small: shrink
    assert batcher.size == 104


def test_statistics_before_any_batch() -> None:
    stats = AdaptiveBatcher(0.01).statistics()
    assert (stats.size, stats.batches, stats.window, stats.mean_size) == (1, 0, 0, 0.0)


def test_threads_sharing_a_batcher_count_every_batch() -> None:
    batcher = AdaptiveBatcher(0.001)
    start = threading.Barrier(4)

    def write() -> None:
        start.wait(5)
        for _ in range(500):
            batcher.record_batch(batcher.plan_batch(1000), 0.0005)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert batcher.statistics().batches == 2000


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"target_seconds": 0}, ValueError, "target_seconds must be > 0, got 0"),
        ({"target_seconds": "1"}, TypeError, "target_seconds must be a number, got str"),
        ({"minimum": 0}, ValueError, "minimum must be >= 1, got 0"),
        ({"maximum": 2, "minimum": 3}, ValueError, "maximum must be >= minimum (3), got 2"),
        ({"decrease": 1.0}, ValueError, "decrease must be between 0 and 1 (exclusive), got 1.0"),
        ({"headroom": 0}, ValueError, "headroom must be in (0, 1], got 0"),
        ({"increase": 1.5}, TypeError, "increase must be an int, got float"),
        ({"window": 0}, ValueError, "window must be >= 1, got 0"),
    ],
)
def test_rejects_bad_arguments(arguments: dict[str, object], error: type, message: str) -> None:
    arguments = {"target_seconds": 0.01, **arguments}
    with pytest.raises(error) as caught:
        AdaptiveBatcher(**arguments)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_rejects_bad_records() -> None:
    batcher = AdaptiveBatcher(0.01)
    with pytest.raises(ValueError, match=r"^size must be >= 1, got 0$"):
        batcher.record_batch(0, 0.1)
    with pytest.raises(ValueError, match=r"^latency must be >= 0, got -1$"):
        batcher.record_batch(1, -1)
    with pytest.raises(ValueError, match=r"^pending must be >= 0, got -1$"):
        batcher.plan_batch(-1)
