"""Run random ordered pipelines and check every run's outputs against a plain loop, exactly.

Each run builds a random chain of 1 to 4 stages (1 to 8 workers each) that map, filter
or flat-map (0 to 3 outputs per item), with random per-item delays of 0 to 200
microseconds (`Event.wait`, so threads really interleave), random batch and queue
sizes (1 to 64), a random thread switch interval, stages whose `flush()` emits one
item per worker (with a single worker, how many items it saw), and sometimes a
failure at a random position (of a stage's input or of the source). It then compares
what `stream()` delivered with the same computation done by a plain lazy loop:

- no failure: the outputs are exactly the loop's outputs, in order;
- a failure: the outputs are exactly the loop's outputs before the loop raised, then
  the `StageError` names the same stage (or the source) and the same item;

and that no thread of the run is left behind. A run that takes longer than `--bound`
seconds is reported with its seed and every thread's stack, and the process exits with
status 2 (a hang).

    python benchmarks/stress_order.py --runs 3000 --seed 1

Exit status 0 when every run matched. A failing run is reported with the seed that
replays it alone: `--seed S --runs 1`.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.stage import flat_map_items

Item = tuple[int, ...]

_never = threading.Event()


class Injected(Exception):
    """The fault a stage or the source raises at its chosen position."""


@dataclass(frozen=True)
class Spec:
    """What one stage does to an item: how many outputs, and whether it fails there."""

    index: int
    workers: int
    kind: str  # "map", "filter" or "flat"
    salt: int
    fail_at: Item | None
    delay: float  # the most seconds an item waits
    flushes: bool

    def outputs(self, item: Item) -> list[Item]:
        """Return the stage's outputs for `item` (a pure function), or raise `Injected`."""
        if item == self.fail_at:
            raise Injected(f"stage {self.index} at {item}")
        return self.produce(item)

    def flushed(self, seen: int) -> list[Item]:
        """Return what one worker's `flush()` emits: the count it saw if it is the only one."""
        if not self.flushes:
            return []
        return [(-1 - self.index, seen)] if self.workers == 1 else [(-1 - self.index,)]

    def produce(self, item: Item) -> list[Item]:
        """Return the stage's outputs for `item` when it does not fail."""
        mixed = hash((self.salt, item))
        if self.kind == "map":
            return [(*item, self.index)]
        if self.kind == "filter":
            return [item] if mixed % 3 else []
        return [(*item, self.index, copy) for copy in range(mixed % 4)]


class Stage(PipelineStage[Item, Item]):
    """A stage doing what its `Spec` says, with the spec's random delays."""

    def __init__(self, spec: Spec) -> None:
        super().__init__(f"s{spec.index}", workers=spec.workers)
        self.spec = spec

    def setup(self) -> None:
        self.local.seen = 0
        self.local.random = random.Random()

    def process_batch(self, items: list[Item]) -> list[Item]:
        return flat_map_items(self._one, items)

    def _one(self, item: Item) -> list[Item]:
        if self.spec.delay:
            _never.wait(self.local.random.uniform(0, self.spec.delay))
        self.local.seen += 1
        return self.spec.outputs(item)

    def flush(self) -> list[Item]:
        return self.spec.flushed(self.local.seen)


class Failed(Exception):
    """The plain loop met an injected failure: where, and at which item."""

    def __init__(self, where: str, item: object) -> None:
        super().__init__(where, item)
        self.where = where
        self.item = item


def plain_loop(source: list[Item], source_fails_at: int | None, specs: list[Spec]) -> Any:
    """Return (outputs, failure or None) of the chain computed lazily, one item at a time."""
    outputs: list[Item] = []
    seen = [0] * len(specs)

    def push(index: int, item: Item) -> None:
        if index == len(specs):
            outputs.append(item)
            return
        seen[index] += 1
        try:
            produced = specs[index].outputs(item)
        except Injected:
            raise Failed(f"s{index}", item) from None
        for output in produced:
            push(index + 1, output)

    try:
        for position, item in enumerate(source):
            if position == source_fails_at:
                raise Failed("source", None)
            push(0, item)
        if source_fails_at == len(source):
            raise Failed("source", None)
        for index, spec in enumerate(specs):
            for _ in range(spec.workers if spec.flushes else 0):
                for output in spec.flushed(seen[index]):
                    push(index + 1, output)
    except Failed as failed:
        return outputs, failed
    return outputs, None


def reaching(source: list[Item], specs: list[Spec], index: int) -> list[Item]:
    """Return the items that reach stage `index` when nothing fails (for choosing a fault)."""
    items = list(source)
    for spec in specs[:index]:
        items = [output for item in items for output in spec.produce(item)]
    return items


def scenario(seed: int) -> tuple[Pipeline[Item, Item], list[Item], int | None, list[Spec]]:
    """Build run `seed`: the pipeline, its source, where the source fails, the stage specs."""
    rng = random.Random(seed)
    source: list[Item] = [(value,) for value in range(rng.randint(0, 200))]
    specs: list[Spec] = []
    for index in range(rng.randint(1, 4)):
        workers = rng.randint(1, 8)
        specs.append(
            Spec(
                index=index,
                workers=workers,
                kind=rng.choice(["map", "filter", "flat"]),
                salt=rng.randrange(1 << 30),
                fail_at=None,
                delay=rng.choice([0.0, 0.00005, 0.0002]),
                flushes=rng.random() < 0.5,
            )
        )
    for index, spec in enumerate(specs):
        if rng.random() < 0.25:
            candidates = reaching(source, specs, index)
            if candidates:
                fail_at = rng.choice(candidates)
                specs[index] = Spec(**{**spec.__dict__, "fail_at": fail_at})
    source_fails_at = rng.randint(0, len(source)) if rng.random() < 0.1 else None
    pipeline = Pipeline(
        [Stage(spec) for spec in specs],
        batch_size=rng.randint(1, 64),
        queue_size=rng.randint(1, 64),
    )
    return pipeline, source, source_fails_at, specs


def feed(source: list[Item], fails_at: int | None) -> Any:
    for position, item in enumerate(source):
        if position == fails_at:
            raise Injected("source")
        yield item
    if fails_at == len(source):
        raise Injected("source")


def run_one(seed: int) -> str | None:
    """Run scenario `seed`; return what went wrong, or None."""
    rng = random.Random(seed ^ 0x5EED)
    sys.setswitchinterval(rng.choice([1e-6, 1e-5, 1e-4, 5e-3]))
    pipeline, source, source_fails_at, specs = scenario(seed)
    expected, failure = plain_loop(source, source_fails_at, specs)
    before = set(threading.enumerate())
    delivered: list[Item] = []
    error: StageError | None = None
    try:
        for output in pipeline.stream(feed(source, source_fails_at)):
            delivered.append(output)
    except StageError as exc:
        error = exc
    leaked = [thread.name for thread in threading.enumerate() if thread not in before]
    if leaked:
        return f"threads left behind: {leaked}"
    if delivered != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(delivered, expected, strict=False)) if a != b),
            min(len(delivered), len(expected)),
        )
        return (
            f"outputs differ at {first}: {len(delivered)} delivered, {len(expected)} expected "
            f"({delivered[first : first + 3]} vs {expected[first : first + 3]})"
        )
    if failure is None:
        return None if error is None else f"unexpected error {error}"
    if error is None:
        return f"no error; expected one in {failure.where} at {failure.item}"
    if error.stage != failure.where or (failure.where != "source" and error.item != failure.item):
        return f"wrong error {error}; expected {failure.where} at {failure.item}"
    return None


def hang_watchdog(seed: int, bound: float) -> threading.Timer:
    """Start a timer that reports run `seed` as a hang, with every thread's stack, and exits."""

    def hang() -> None:
        print(f"seed {seed}: still running after {bound} s (a hang)", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(2)

    timer = threading.Timer(bound, hang)
    timer.daemon = True
    timer.start()
    return timer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3000, help="how many (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="the first run's seed")
    parser.add_argument("--bound", type=float, default=30.0, help="seconds before a hang")
    args = parser.parse_args()
    started = time.perf_counter()
    counts = {"runs": 0, "failing at a position": 0, "wrong": 0}
    items = 0
    for seed in range(args.seed, args.seed + args.runs):
        watchdog = hang_watchdog(seed, args.bound)
        problem = run_one(seed)
        watchdog.cancel()
        watchdog.join()
        counts["runs"] += 1
        _, source, source_fails_at, specs = scenario(seed)
        items += len(source)
        if source_fails_at is not None or any(spec.fail_at is not None for spec in specs):
            counts["failing at a position"] += 1
        if problem is not None:
            counts["wrong"] += 1
            print(f"seed {seed}: {problem}", flush=True)
    elapsed = time.perf_counter() - started
    sys.setswitchinterval(0.005)
    figures = ", ".join(f"{name} {count}" for name, count in counts.items())
    print(f"{figures}; {items} source items; {elapsed:.1f} s")
    return 0 if counts["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
