"""Benchmark the classic 3-stage chain (x*2 -> x+10 -> keep evens) against its baselines.

Every row is measured in the same run, so the ratios hold on a noisy shared machine:
- a plain sequential generator chain (the speed a pipeline must come close to);
- hand-written threads passing one item at a time through `queue.Queue` (the classic
  tutorial pipeline, and what most libraries do per item);
- `Pipeline` with the classic stages, and with `FunctionStage`s built from lambdas
  (`FunctionStage(x*2) >> FunctionStage(x+10) >> PredicateStage(even)`), through
  `run()` and through `stream()`;
- those three function stages' batch loops called one after the other in one thread,
  on batches of the pipeline's size: the work the threads do between them, without
  threads or handoffs (what remains of the gap to the generator chain once the
  threading costs nothing);
- `Pipeline` with the classic stages and its statistics off: the statistics are always
  on, so the "off" row replaces `WorkerCounters.record_batch` with a no-op for its runs.
  The on and off rows alternate run by run, so drift on the machine hits both alike.

The rows take turns, one run each per round, `--repeat` rounds; a row's rate is its best
run, and its ratio to the sequential chain is taken round by round (min / median / max
printed below the table), so drift on the machine hits every row alike. The
item-at-a-time threaded chain runs on fewer items (`--threaded-items`) because it is two
orders of magnitude slower; its rate is per item all the same. Then the latency of an
early `break` (from the break to the stream's close returning, every thread joined) and
of a failure (from the raise in a stage to the caller catching the `StageError`).

Run: .venv/bin/python benchmarks/bench_chain.py [--items N] [--repeat K] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from unittest import mock

from pipeline import Pipeline, StageError
from pipeline.demos import AddStage, FilterStage, MultiplyStage
from pipeline.stage import filter_items, map_items
from pipeline.stages import FunctionStage, PredicateStage
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


def function_chain() -> Pipeline[int, int]:
    return Pipeline(
        FunctionStage[int, int](lambda x: x * 2)
        >> FunctionStage[int, int](lambda x: x + 10)
        >> PredicateStage[int](lambda x: x % 2 == 0)
    )


def function_pipeline(items: Iterable[int]) -> list[int]:
    return function_chain().run(items)


def function_pipeline_streamed(items: Iterable[int]) -> list[int]:
    return list(function_chain().stream(items))


def stage_loops_in_one_thread(items: Iterable[int]) -> list[int]:
    """The function stages' batch loops, one after the other, on batches of 4,096 items."""
    outputs: list[int] = []
    pending = iter(items)
    double, add, even = (lambda x: x * 2), (lambda x: x + 10), (lambda x: x % 2 == 0)
    while batch := list(itertools.islice(pending, 4096)):
        outputs.extend(filter_items(even, map_items(add, map_items(double, batch))))
    return outputs


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


def rounds(
    runs: dict[str, Callable[[Iterable[int]], list[int]]], items: int, repeat: int
) -> dict[str, list[float]]:
    """Return each run's seconds per round, taking the runs in turn `repeat` times."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            seconds[name].append(timed_run(run, items))
    return seconds


def early_break_seconds(outputs_before_break: int) -> float:
    """Return the seconds from a `break` out of a stream to its close returning."""
    with contextlib.closing(function_chain().stream(itertools.count())) as stream:
        for count, _ in enumerate(stream, start=1):
            if count == outputs_before_break:
                break
        started = time.perf_counter()
    return time.perf_counter() - started


def failure_seconds(bad_item: int) -> float:
    """Return the seconds from a stage raising on `bad_item` to the caller catching it."""
    raised_at = 0.0

    def fail_on_bad_item(x: int) -> int:
        nonlocal raised_at
        if x == bad_item:
            raised_at = time.perf_counter()
            raise ValueError(x)
        return x

    pipeline = Pipeline(FunctionStage(fail_on_bad_item) >> FunctionStage[int, int](abs))
    try:
        pipeline.run(itertools.count())
    except StageError:
        return time.perf_counter() - raised_at
    raise AssertionError("the failing stage did not fail the run")


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


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
        "--repeat", type=int, default=5, help="rounds; a row's best run counts (default 5)"
    )
    parser.add_argument("--quick", action="store_true", help="200,000 items, 3 rounds")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.repeat, args.threaded_items = 200_000, 3, 20_000

    runs: dict[str, Callable[[Iterable[int]], list[int]]] = {
        "sequential generator chain": sequential_chain,
        "Pipeline, classic stages": classic_pipeline,
        "Pipeline, classic stages, statistics off*": classic_pipeline_without_statistics,
        "Pipeline, FunctionStage lambdas, run()": function_pipeline,
        "Pipeline, FunctionStage lambdas, stream()": function_pipeline_streamed,
        "FunctionStage loops in one thread**": stage_loops_in_one_thread,
    }
    seconds = rounds(runs, args.items, args.repeat)
    threaded_seconds = min(
        timed_run(item_at_a_time_threads, args.threaded_items)
        for _ in range(max(1, args.repeat // 2))
    )
    rates = {name: args.items / min(times) for name, times in seconds.items()}
    threaded = args.threaded_items / threaded_seconds
    sequential = seconds["sequential generator chain"]
    ratios = {
        name: [base / own for base, own in zip(sequential, times, strict=True)]
        for name, times in seconds.items()
    }
    print(f"{'chain':42} {'items/s':>14} {'vs sequential':>14} {'vs item-at-a-time':>18}")
    table = {**rates, "threads + queue.Queue, item at a time": threaded}
    for name, rate in table.items():
        ratio = (
            statistics.median(ratios[name])
            if name in ratios
            else threaded / rates["sequential generator chain"]
        )
        print(f"{name:42} {rate:14,.0f} {ratio:13.2f}x {rate / threaded:17.1f}x")
    print(
        "* statistics off: WorkerCounters.record_batch replaced by a no-op for those runs "
        "(the statistics are always on)"
    )
    print(
        "** the function stages' three batch loops run one after the other in one thread: "
        "the threads' work without threads"
    )
    print(f"ratio to the sequential chain, round by round (min / median / max of {args.repeat}):")
    for name in runs:
        if name != "sequential generator chain":
            print(f"  {name:44} {spread(ratios[name])}")
    breaks = [early_break_seconds(50_000) * 1000 for _ in range(5)]
    failures = [failure_seconds(50_000) * 1000 for _ in range(5)]
    print(f"early break, ms (min / median / max of 5): {spread(breaks)}")
    print(f"failure to the caller, ms (min / median / max of 5): {spread(failures)}")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {
                    "items": args.items,
                    "rates": table,
                    "ratios_to_sequential": ratios,
                    "early_break_ms": breaks,
                    "failure_ms": failures,
                },
                file,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
