"""Run random fault scenarios and report hangs, leaked threads, and lost or duplicated items.

Each scenario builds a random chain of `ResilientStage`s (1 to 4 stages, 1 to 4
workers each, a random error policy, random faults, some healed by retries, some behind
a circuit breaker or a per-item timeout), feeds it a random source (which may fail),
and consumes it in a random way (`run`, `stream` with a `break`, or `close()` from
another thread). Adversarial faults come on top: exceptions whose `__str__`
and `__repr__` raise, `BaseException` subclasses, `close()` called from inside a stage
or from another thread at a random moment, a real SIGINT at a random moment (sent to
the main thread, or to another thread, so that it wakes no wait: a lost wake-up, see
`pipeline._interrupts`) while the main thread runs or streams the pipeline, and
iterators abandoned in a reference cycle while the garbage collector runs every few
allocations (so it may finalize them in any thread, the run's own included). Then it
checks:

- hangs: a watchdog thread dumps every thread's stack with `faulthandler` if a scenario
  runs past `--bound` seconds, and gives up on the whole run if it is still stuck after
  three times that;
- leaked threads: no thread of the run is alive once it has returned;
- lost or duplicated items: for a run that completes, inputs == outputs + skipped +
  dead letters, exactly, with no item twice; where the faults are deterministic, the
  outputs are exactly the expected ones, in order; for a run that stops, the outputs
  are an ordered run of inputs with no item twice, and the right error came out.

    python benchmarks/stress_faults.py --scenarios 1000 --seed 1

Exit status 0 when every count is zero. A failing scenario is reported with the seed
that replays it alone: `--seed S --scenarios 1`.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline import Pipeline, PipelineClosed, PipelineStage, StageError
from pipeline.errors import describe
from pipeline.resilience import CircuitOpen, FailureBudgetExceeded, ItemTimeout
from pipeline.resilience.breaker import CircuitBreaker
from pipeline.resilience.policy import DeadLetters, ErrorPolicy, FailureBudget
from pipeline.resilience.resilient import ResilientStage
from pipeline.resilience.retry import RetryPolicy


class Boom(Exception):
    """An injected fault."""


class UnprintableBoom(Boom):
    """An injected fault whose `__str__` and `__repr__` raise."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


class BaseBoom(BaseException):
    """An injected fault that is not an `Exception`: no error policy may swallow it."""


class Interrupts:
    """Real SIGINTs for the scenarios that ask for one, ignored between scenarios."""

    def __init__(self) -> None:
        self.armed = False
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.armed:
            raise KeyboardInterrupt

    def press_later(
        self, seconds: float, done: threading.Event, *, elsewhere: bool = False
    ) -> threading.Thread:
        """Send SIGINT after `seconds`, unless `done` is set first.

        To the main thread, or with `elsewhere` to this helper thread: the handler is then
        due on the main thread, but no wait of the main thread is interrupted.
        """
        main = threading.main_thread().ident or 0
        started = threading.Event()

        def press() -> None:
            # Not before start() has returned: a Ctrl-C inside Thread.start() would
            # interrupt this harness's own call into threading, not the pipeline.
            if started.wait() and not done.wait(seconds):
                signal.pthread_kill(threading.get_ident() if elsewhere else main, signal.SIGINT)

        thread = threading.Thread(target=press, name="stress-ctrl-c")
        thread.start()
        started.set()
        return thread


class FaultyStage(PipelineStage[int, int]):
    """Pass items through; fail the items in `faults` (only once each, if `flaky`).

    The item in `stuck` overruns: it waits up to `stuck_seconds` (a slow call).
    """

    def __init__(
        self,
        name: str,
        faults: frozenset[int],
        *,
        flaky: bool,
        stuck: int | None,
        stuck_seconds: float,
        workers: int,
        fault_kind: str = "plain",
        close_at: int | None = None,
    ) -> None:
        super().__init__(name, workers=workers)
        self.faults = faults
        self.fault_kind = fault_kind
        self.close_at = close_at
        self.pipeline: Pipeline[int, int] | None = None
        self.flaky = flaky
        self.stuck = stuck
        self.stuck_seconds = stuck_seconds
        self.never = threading.Event()
        self.lock = threading.Lock()
        self.failed_once: set[int] = set()

    def process(self, item: int) -> int:
        if item == self.close_at and self.pipeline is not None:
            self.pipeline.close()
        if item == self.stuck:
            self.never.wait(self.stuck_seconds)
        if item in self.faults:
            with self.lock:
                first_time = item not in self.failed_once
                self.failed_once.add(item)
            if first_time or not self.flaky:
                if self.fault_kind == "unprintable":
                    raise UnprintableBoom
                if self.fault_kind == "base":
                    raise BaseBoom(f"{self.name} failed on {item}")
                raise Boom(f"{self.name} failed on {item}")
        return item


@dataclass
class Scenario:
    """One random scenario, and what its run should produce when faults are deterministic."""

    seed: int
    items: int
    stages: list[ResilientStage[int, int]]
    letters: DeadLetters
    source_fails_at: int | None
    consumer: str  # "run", "break", "close", "close-anytime", "abandon", "interrupt",
    # "interrupt-stream"
    stop_after: int
    queue_size: int
    batch_size: int
    ordered: bool
    deterministic: bool
    expected_outputs: list[int] = field(default_factory=list)
    expected_error_stage: str | None = None
    description: str = ""
    fail_fast: bool = False
    delay: float = 0.0  # for "close-anytime" and the interrupts: when, in seconds
    interrupt_elsewhere: bool = False  # the SIGINT goes to another thread than the main one
    closing_stage: FaultyStage | None = None


def make_scenario(seed: int) -> Scenario:
    rng = random.Random(seed)
    items = rng.choice([0, 1, 2, 10, 50, 100, 300])
    letters = DeadLetters()
    stages: list[ResilientStage[int, int]] = []
    budget = (
        FailureBudget(max_failures=rng.randint(0, 5), max_fraction=0.5, min_items=20)
        if rng.random() < 0.1
        else None
    )
    deterministic = budget is None
    failed: set[int] = set()
    error_stage: str | None = None
    parts = []
    for index in range(rng.randint(1, 4)):
        name = f"s{index}"
        policy: ErrorPolicy = rng.choice(["raise", "skip", "collect"])
        workers = rng.randint(1, 4)
        fault_count = rng.choice([0, 0, 1, 3, 20]) if items else 0
        faults = frozenset(rng.sample(range(items), min(fault_count, items)))
        flaky = rng.random() < 0.3
        retry = (
            RetryPolicy(max_attempts=2, base_delay=rng.choice([0.0, 0.0005]), retry_on=Boom)
            if flaky
            else None
        )
        breaker = None
        if policy != "raise" and rng.random() < 0.1:
            breaker = CircuitBreaker(failure_threshold=2, reset_timeout=0.001, name=name)
            deterministic = False  # which items fail fast depends on timing
        timeout = None
        stuck = None
        if items and rng.random() < 0.05:
            timeout, stuck = 0.02, rng.randrange(items)
            deterministic = False  # a slow machine may time out other items too
        fault_kind = rng.choices(["plain", "unprintable", "base"], weights=[8, 1, 1])[0]
        if fault_kind == "base" and faults:
            deterministic = False  # a BaseException passes every policy: the run stops
        stage = FaultyStage(
            name,
            faults,
            flaky=flaky,
            stuck=stuck,
            stuck_seconds=0.1,
            workers=workers,
            fault_kind=fault_kind,
        )
        stages.append(
            ResilientStage(
                stage,
                on_error=policy,
                retry=retry,
                breaker=breaker,
                timeout=timeout,
                budget=budget if policy != "raise" else None,
                dead_letters=letters if policy == "collect" else None,
            )
        )
        parts.append(
            f"{name}(w={workers}, {policy}, faults={len(faults)} {fault_kind}"
            + (", flaky" if flaky else "")
            + (", breaker" if breaker else "")
            + (", timeout" if timeout else "")
            + ")"
        )
        if not flaky:
            new = faults - failed
            if policy == "raise" and new and error_stage is None:
                error_stage = name
            failed |= new
    source_fails_at = rng.randrange(items + 1) if rng.random() < 0.1 else None
    consumer = rng.choices(
        [
            *("run", "break", "close", "close-inside", "close-anytime", "abandon"),
            *("interrupt", "interrupt-stream"),
        ],
        weights=[10, 3, 2, 1, 1, 2, 1, 1],
    )[0]
    closing_stage: FaultyStage | None = None
    if consumer == "close-inside":
        if items:
            inner = stages[rng.randrange(len(stages))].inner
            assert isinstance(inner, FaultyStage)
            closing_stage = inner
            closing_stage.close_at = rng.randrange(items)
        deterministic = False
    if consumer in {"close-anytime", "interrupt", "interrupt-stream", "abandon"}:
        deterministic = False
    scenario = Scenario(
        seed=seed,
        items=items,
        stages=stages,
        letters=letters,
        source_fails_at=source_fails_at,
        consumer=consumer,
        stop_after=rng.randint(0, max(items - 1, 0)),
        queue_size=rng.choice([1, 2, 8, 64, 8192]),
        batch_size=rng.choice([1, 4, 64, 4096]),
        ordered=rng.random() < 0.9,
        deterministic=deterministic,
        expected_outputs=[item for item in range(items) if item not in failed],
        expected_error_stage=error_stage,
        fail_fast=rng.random() < 0.2,
        delay=rng.choice([0.0, 0.0001, 0.001, 0.005]),
        interrupt_elsewhere=rng.random() < 0.5,
        closing_stage=closing_stage,
    )
    scenario.description = (
        f"items={items} q={scenario.queue_size} b={scenario.batch_size} "
        f"ordered={scenario.ordered} fail_fast={scenario.fail_fast} consumer={consumer} "
        f"interrupt_elsewhere={scenario.interrupt_elsewhere} "
        f"source_fails_at={source_fails_at} budget={budget is not None}: " + " >> ".join(parts)
    )
    return scenario


def source(items: int, fails_at: int | None) -> Iterator[int]:
    for item in range(items):
        if item == fails_at:
            raise Boom(f"source failed at {item}")
        yield item


@dataclass
class Outcome:
    outputs: list[int]
    error: BaseException | None
    stopped_early: bool


def run_scenario(scenario: Scenario, interrupts: Interrupts) -> Outcome:
    pipeline = Pipeline(
        scenario.stages,
        queue_size=scenario.queue_size,
        batch_size=scenario.batch_size,
        ordered=scenario.ordered,
        fail_fast=scenario.fail_fast,
    )
    if scenario.closing_stage is not None:
        scenario.closing_stage.pipeline = pipeline
    outputs: list[int] = []
    data = source(scenario.items, scenario.source_fails_at)
    helper: threading.Thread | None = None
    done = threading.Event()
    try:
        if scenario.consumer.startswith("interrupt"):
            interrupts.armed = True
            helper = interrupts.press_later(
                scenario.delay, done, elsewhere=scenario.interrupt_elsewhere
            )
        elif scenario.consumer == "close-anytime":

            def close_later() -> None:
                if not done.wait(scenario.delay):
                    pipeline.close()

            helper = threading.Thread(target=close_later, name="stress-closer")
            helper.start()
        if scenario.consumer in {"run", "close-inside", "close-anytime", "interrupt"}:
            try:
                outputs = pipeline.run(data)
            finally:
                # First, before any call: a press after the run has returned or raised
                # would otherwise land in this harness's own code.
                interrupts.armed = False
            done.set()
            return Outcome(outputs, None, stopped_early=False)
        if scenario.consumer == "abandon":
            return abandon(pipeline, data, scenario.stop_after)
        if scenario.consumer == "interrupt-stream":
            try:
                for output in pipeline.stream(data):
                    outputs.append(output)
            finally:
                interrupts.armed = False  # first, as above
            done.set()
            return Outcome(outputs, None, stopped_early=False)
        closer: threading.Thread | None = None
        stream = pipeline.stream(data)
        try:
            for output in stream:
                outputs.append(output)
                if len(outputs) > scenario.stop_after:
                    if scenario.consumer == "break":
                        return Outcome(outputs, None, stopped_early=True)
                    if closer is None:
                        closer = threading.Thread(target=pipeline.close, name="stress-closer")
                        closer.start()
        finally:
            del stream  # a break closes the generator now, not at collection
            if closer is not None:
                closer.join()
        return Outcome(outputs, None, stopped_early=closer is not None)
    except PipelineClosed as error:
        return Outcome(outputs, error, stopped_early=True)
    except StageError as error:
        return Outcome(outputs, error, stopped_early=True)
    except KeyboardInterrupt as error:
        return Outcome(outputs, error, stopped_early=True)
    except BaseException as error:  # noqa: BLE001 - reported as wrong by check()
        return Outcome(outputs, error, stopped_early=True)
    finally:
        interrupts.armed = False  # first: a Ctrl-C inside Event.set() could leave its lock taken
        done.set()
        if helper is not None:
            helper.join()
        pipeline.close()  # after close-inside or abandon, whatever the run left to join


def abandon(pipeline: Pipeline[int, int], data: Iterator[int], stop_after: int) -> Outcome:
    """Take some outputs, then drop the iterator in a reference cycle, never closing it.

    The garbage collector runs every few allocations meanwhile, so it may finalize the
    iterator in any thread: this one, or one of the run's own.
    """
    outputs: list[int] = []
    thresholds = gc.get_threshold()
    gc.set_threshold(5, 1, 1)
    try:

        class Cycle:
            pass

        holder = Cycle()
        holder.self = holder  # type: ignore[attr-defined]
        holder.stream = pipeline.stream(data)  # type: ignore[attr-defined]
        try:
            for output in holder.stream:  # type: ignore[attr-defined]
                outputs.append(output)
                if len(outputs) > stop_after:
                    break
        except (StageError, PipelineClosed) as error:
            return Outcome(outputs, error, stopped_early=True)
        del holder
        gc.collect()
    finally:
        gc.set_threshold(*thresholds)
    return Outcome(outputs, None, stopped_early=True)


def check(scenario: Scenario, outcome: Outcome) -> tuple[str, str] | None:
    """Return (kind, detail) for a problem found, or None.

    The kind is "lost", "duplicated" or "wrong" (an unexpected error, order or result).
    """
    outputs = outcome.outputs
    letters = [_as_int(letter.item) for letter in scenario.letters]
    counts = Counter([*outputs, *letters])
    duplicates = [item for item, count in counts.items() if count > 1]
    if duplicates:
        return "duplicated", f"items seen twice: {sorted(duplicates)[:10]}"
    if scenario.ordered and outputs != sorted(outputs):
        return "wrong", f"outputs out of order: {outputs[:20]}"
    if not set(outputs) <= set(range(scenario.items)):
        return "wrong", "outputs that were never input"
    error = outcome.error
    if isinstance(error, StageError):
        cause = error.__cause__
        allowed = (Boom, BaseBoom, ItemTimeout, CircuitOpen, FailureBudgetExceeded)
        if not isinstance(cause, allowed):
            return "wrong", f"unexpected cause {cause!r} of {error}"
        if error.stage == "source" and scenario.source_fails_at is None:
            return "wrong", f"a source error without a source fault: {error}"
        can_fail = scenario.source_fails_at is not None or scenario.expected_error_stage
        if scenario.deterministic and not can_fail:
            return "wrong", f"an error in a run that should complete: {error}"
        return None
    if error is not None and not isinstance(error, PipelineClosed | KeyboardInterrupt):
        where = "".join(traceback.format_exception(error)[-12:])
        return "wrong", f"unexpected {type(error).__name__}: {describe(error)}\n{where}"
    if isinstance(error, PipelineClosed | KeyboardInterrupt) or outcome.stopped_early:
        return None
    # The run completed: every input must be accounted for, exactly.
    if scenario.source_fails_at is not None and scenario.source_fails_at < scenario.items:
        return "wrong", "the run completed although its source failed"
    skipped = sum(stage.statistics().items_skipped for stage in scenario.stages)
    accounted = len(outputs) + skipped + len(letters)
    if accounted < scenario.items:
        return "lost", f"{scenario.items - accounted} of {scenario.items} items unaccounted for"
    if accounted > scenario.items:
        return "duplicated", f"{accounted} outcomes for {scenario.items} items"
    if scenario.deterministic:
        if scenario.expected_error_stage is not None:
            return "wrong", f"no error although {scenario.expected_error_stage} must fail"
        if sorted(outputs) != scenario.expected_outputs:
            return "wrong", f"outputs differ from the expected {scenario.expected_outputs[:20]}"
    return None


def _as_int(item: object) -> int:
    assert isinstance(item, int), item
    return item


class Watchdog:
    """A thread that dumps every stack if a scenario overruns its bound; exits if it hangs."""

    def __init__(self, bound: float, report: Any) -> None:
        self.bound = bound
        self.report = report
        self.hangs: list[int] = []
        # Guards _armed (the seed of the scenario running, or None) and _closed;
        # `changed` is notified when either changes.
        self._changed = threading.Condition()
        self._armed: int | None = None
        self._generation = 0
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name="stress-watchdog")
        self._thread.start()

    def arm(self, seed: int) -> None:
        with self._changed:
            self._armed = seed
            self._generation += 1
            self._changed.notify_all()

    def disarm(self) -> None:
        with self._changed:
            self._armed = None
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _watch(self) -> None:
        with self._changed:
            while not self._closed:
                if self._armed is None:
                    self._changed.wait()
                    continue
                seed, generation = self._armed, self._generation
                if self._wait_for_change(generation, self.bound):
                    continue
                self.hangs.append(seed)
                print(f"\nHANG: scenario seed {seed} ran past {self.bound} s", file=sys.stderr)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                if not self._wait_for_change(generation, 2 * self.bound):
                    print("still stuck; giving up", file=sys.stderr)
                    self.report(final=True)
                    os._exit(2)  # a thread that never returns cannot be joined

    def _wait_for_change(self, generation: int, seconds: float) -> bool:
        """Wait until the scenario ends or the watchdog closes; return whether it did."""
        deadline = time.monotonic() + seconds
        while self._armed is not None and self._generation == generation and not self._closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.wait(remaining)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=int, default=1000, help="how many (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the first scenario's seed")
    parser.add_argument("--bound", type=float, default=10.0, help="seconds before a hang")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # skips and breaker changes are expected here

    problems: Counter[str] = Counter()
    examples: list[str] = []
    started = time.perf_counter()
    slowest = (0.0, 0)
    done = 0

    def report(final: bool = False) -> None:
        elapsed = time.perf_counter() - started
        print(
            f"scenarios: {done}  hangs: {len(watchdog.hangs)}  "
            f"leaked threads: {problems['leaked']}  lost: {problems['lost']}  "
            f"duplicated: {problems['duplicated']}  wrong: {problems['wrong']}  "
            f"({elapsed:.1f} s; slowest scenario {slowest[0]:.2f} s, seed {slowest[1]})"
        )

    watchdog = Watchdog(args.bound, report)
    interrupts = Interrupts()
    baseline = set(threading.enumerate())
    try:
        for seed in range(args.seed, args.seed + args.scenarios):
            scenario = make_scenario(seed)
            watchdog.arm(seed)
            began = time.perf_counter()
            outcome = run_scenario(scenario, interrupts)
            took = time.perf_counter() - began
            watchdog.disarm()
            slowest = max(slowest, (took, seed))
            leaked = [thread for thread in threading.enumerate() if thread not in baseline]
            for thread in leaked:
                try:
                    thread.join(args.bound)
                except RuntimeError:  # enumerated while still starting
                    examples.append(f"seed {seed}: {thread.name} was starting after the run")
            if leaked:
                problems["leaked"] += len(leaked)
                examples.append(f"seed {seed}: leaked {[t.name for t in leaked]}")
            problem = check(scenario, outcome)
            if problem is not None:
                problems[problem[0]] += 1
                examples.append(
                    f"seed {seed}: {problem[0]}: {problem[1]}\n  {scenario.description}"
                )
            done += 1
    finally:
        watchdog.close()
    report()
    for example in examples[:20]:
        print(example)
    return 1 if watchdog.hangs or sum(problems.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
