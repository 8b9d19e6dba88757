"""Benchmark the classic 3-stage chain (x*2 -> x+10 -> keep evens) against its baselines.

Every row is measured in the same run, so the ratios hold on a noisy shared machine:
- a plain sequential generator chain (the speed a pipeline must come close to);
- hand-written threads passing one item at a time through `queue.Queue` (the classic
  tutorial pipeline, and what most libraries do per item);
- `Pipeline` with the classic stages, and with `FunctionStage`s built from lambdas;
- `Pipeline` with the classic stages and its statistics off: the statistics are always
  on, so the "off" row replaces `WorkerCounters.record_batch` with a no-op for its runs.
  The on and off rows alternate run by run, so drift on the machine hits both alike.

Each row is the best of `--repeat` runs. The item-at-a-time threaded chain runs on
fewer items (`--threaded-items`) because it is two orders of magnitude slower; its
rate is per item all the same.

Run: .venv/bin/python benchmarks/bench_chain.py [--items N] [--repeat K]
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from collections.abc import Callable, Iterable
from unittest import mock

from pipeline import AddStage, FilterStage, FunctionStage, MultiplyStage, Pipeline, PredicateStage
from pipeline.stats import WorkerCounters

_DONE = object()


def sequential_chain(items: Iterable[int]) -> list[int]:
    doubled = (x * 2 for x in items)
    added = (x + 10 for x in doubled)
    return [x for x in added if x % 2 == 0]


def item_at_a_time_threads(items: Iterable[int], queue_size: int = 1000) -> list[int]:
    """Three stage threads joined by bounded queue.Queue, one item per handoff."""
    links: list[queue.Queue[object]] = [queue.Queue(queue_size) for _ in range(4)]

    def stage(
        inbox: queue.Queue[object], outbox: queue.Queue[object], work: Callable[[int], int | None]
    ) -> None:
        while (item := inbox.get()) is not _DONE:
            assert isinstance(item, int)
            result = work(item)
            if result is not None:
                outbox.put(result)
        outbox.put(_DONE)

    works: list[Callable[[int], int | None]] = [
        lambda x: x * 2,
        lambda x: x + 10,
        lambda x: x if x % 2 == 0 else None,
    ]
    threads = [
        threading.Thread(target=stage, args=(links[i], links[i + 1], works[i])) for i in range(3)
    ]
    for thread in threads:
        thread.start()

    def feed() -> None:
        for item in items:
            links[0].put(item)
        links[0].put(_DONE)

    feeder = threading.Thread(target=feed)
    feeder.start()
    results: list[int] = []
    while (item := links[3].get()) is not _DONE:
        assert isinstance(item, int)
        results.append(item)
    feeder.join()
    for thread in threads:
        thread.join()
    return results


def classic_pipeline(items: Iterable[int]) -> list[int]:
    return Pipeline(MultiplyStage() >> AddStage() >> FilterStage()).run(items)


def function_pipeline(items: Iterable[int]) -> list[int]:
    chain = (
        FunctionStage[int, int](lambda x: x * 2)
        >> FunctionStage[int, int](lambda x: x + 10)
        >> PredicateStage[int](lambda x: x % 2 == 0)
    )
    return Pipeline(chain).run(items)


def classic_pipeline_without_statistics(items: Iterable[int]) -> list[int]:
    """The classic pipeline with `record_batch` (the per-batch statistics) doing nothing."""
    with mock.patch.object(WorkerCounters, "record_batch", _record_nothing):
        return classic_pipeline(items)


def _record_nothing(
    self: WorkerCounters, items_in: int, items_out: int, starved: float, busy: float, blocked: float
) -> None:
    """Stand in for `WorkerCounters.record_batch`, to time the pipeline without statistics."""


def timed_run(run: Callable[[Iterable[int]], list[int]], items: int) -> float:
    """Return the seconds one run over `items` items takes, checking its output."""
    started = time.perf_counter()
    outputs = run(range(items))
    elapsed = time.perf_counter() - started
    # every x*2+10 is even, so all items come out
    if len(outputs) != items or outputs[-1] != (items - 1) * 2 + 10:
        raise AssertionError(f"{run.__name__} produced a wrong result")
    return elapsed


def best_rate(run: Callable[[Iterable[int]], list[int]], items: int, repeat: int) -> float:
    """Return the best items/s over `repeat` runs, checking the output each time."""
    return items / min(timed_run(run, items) for _ in range(repeat))


def best_rates_alternating(
    runs: list[Callable[[Iterable[int]], list[int]]], items: int, repeat: int
) -> list[float]:
    """Return each run's best items/s, taking the runs in turn `repeat` times."""
    best = [float("inf")] * len(runs)
    for _ in range(repeat):
        for index, run in enumerate(runs):
            best[index] = min(best[index], timed_run(run, items))
    return [items / seconds for seconds in best]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--items", type=int, default=1_000_000, help="items per run (default 1,000,000)"
    )
    parser.add_argument(
        "--threaded-items", type=int, default=100_000, help="items for the item-at-a-time threads"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="runs per row; the best counts (default 5)"
    )
    args = parser.parse_args(argv)

    with_statistics, without_statistics = best_rates_alternating(
        [classic_pipeline, classic_pipeline_without_statistics], args.items, args.repeat
    )
    rates = {
        "sequential generator chain": best_rate(sequential_chain, args.items, args.repeat),
        "threads + queue.Queue, item at a time": best_rate(
            item_at_a_time_threads, args.threaded_items, max(1, args.repeat // 2)
        ),
        "Pipeline, classic stages": with_statistics,
        "Pipeline, classic stages, statistics off*": without_statistics,
        "Pipeline, FunctionStage lambdas": best_rate(function_pipeline, args.items, args.repeat),
    }
    sequential = rates["sequential generator chain"]
    threaded = rates["threads + queue.Queue, item at a time"]
    print(f"{'chain':42} {'items/s':>14} {'vs sequential':>14} {'vs item-at-a-time':>18}")
    for name, rate in rates.items():
        print(f"{name:42} {rate:14,.0f} {rate / sequential:13.2f}x {rate / threaded:17.1f}x")
    overhead = without_statistics / with_statistics - 1
    print(
        "* statistics off: WorkerCounters.record_batch replaced by a no-op for those runs "
        "(the statistics are always on)"
    )
    print(
        f"statistics on vs off: {overhead:+.1%} time on the classic pipeline "
        f"(best of {args.repeat} alternating runs each)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
