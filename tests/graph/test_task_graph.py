"""Tests for task graphs: dependencies, criticality order, failure policies, retries, breakers."""

from __future__ import annotations

import random
import textwrap
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support import WAIT, Boom, interrupt_when_ready, press_from_another_thread, sigint_setting

from pipeline.graph import GraphError, TaskGraph, TaskGraphFailed, TaskGraphResult
from pipeline.graph.metrics import register_task_metrics
from pipeline.queues import Priority
from pipeline.resilience import CircuitBreaker, CircuitOpen, RetryPolicy


def constant(value: Any) -> Any:
    return lambda *_: value


def test_each_task_gets_its_dependencies_results_in_order() -> None:
    graph = (
        TaskGraph()
        .add("a", constant(2))
        .add("b", constant(3))
        .add("power", lambda a, b: a**b, after=["a", "b"])
        .add("minus", lambda b, power: power - b, after=["b", "power"])
    )
    result = graph.run(workers=3)
    assert result.ok
    assert result.succeeded == {"a": 2, "b": 3, "power": 8, "minus": 5}
    assert result.started.index("power") > max(result.started.index("a"), result.started.index("b"))


def test_a_critical_task_ready_later_runs_before_a_low_one_waiting() -> None:
    graph = (
        TaskGraph()
        .add("low", constant(None), criticality=Priority.LOW)
        .add("gate", constant(None), criticality=Priority.HIGH)
        .add("critical", constant(None), after="gate", criticality=Priority.CRITICAL)
        .add("deferred", constant(None), criticality=Priority.DEFERRED)
        .add("blocker", constant(None), criticality=Priority.BLOCKER)
    )
    result = graph.run(workers=1)
    # "low" was ready from the start; "critical" only once "gate" was done.
    assert result.started == ("blocker", "gate", "critical", "low", "deferred")


def test_equal_criticalities_run_in_the_order_they_became_ready() -> None:
    graph = TaskGraph()
    for index in range(20):
        graph.add(f"t{index}", constant(index), criticality=7)
    assert graph.run(workers=1).started == tuple(f"t{index}" for index in range(20))


def test_independent_tasks_run_side_by_side() -> None:
    everyone = threading.Barrier(4, timeout=WAIT)
    graph = TaskGraph()
    for index in range(4):
        graph.add(f"t{index}", lambda: everyone.wait())
    assert graph.run(workers=4).ok


def test_a_failure_skips_only_its_dependents_by_default() -> None:
    def boom() -> None:
        raise Boom("down")

    graph = (
        TaskGraph()
        .add("fails", boom)
        .add("child", constant(1), after="fails")
        .add("grandchild", constant(2), after="child")
        .add("independent", constant(3))
        .add("after_independent", lambda value: value + 1, after="independent")
    )
    result = graph.run(workers=2, raise_on_failure=False)
    assert set(result.failed) == {"fails"}
    assert isinstance(result.failed["fails"], Boom)
    assert result.skipped == {
        "child": "it depends on task 'fails', which failed",
        "grandchild": "it depends on task 'fails', which failed",
    }
    assert result.succeeded == {"independent": 3, "after_independent": 4}


def test_the_all_policy_starts_nothing_more_after_a_failure() -> None:
    def boom() -> None:
        raise Boom("down")

    graph = (
        TaskGraph()
        .add("fails", boom, criticality=Priority.BLOCKER)
        .add("later", constant(1), criticality=Priority.LOW)
        .add("child", constant(2), after="fails")
    )
    result = graph.run(workers=1, on_failure="all", raise_on_failure=False)
    assert set(result.failed) == {"fails"}
    assert result.succeeded == {}
    assert result.skipped == {
        "later": "the run stopped after task 'fails' failed",
        "child": "the run stopped after task 'fails' failed",
    }


def test_run_raises_task_graph_failed_with_the_result_and_the_cause() -> None:
    def boom() -> None:
        raise Boom("down")

    graph = TaskGraph().add("fails", boom).add("child", constant(1), after="fails")
    with pytest.raises(TaskGraphFailed) as caught:
        graph.run()
    assert str(caught.value) == "task 'fails' failed: Boom: down; 1 skipped, 0 succeeded"
    assert isinstance(caught.value.__cause__, Boom)
    assert set(caught.value.result.skipped) == {"child"}  # type: ignore[attr-defined]


def test_a_task_is_retried_by_its_policy() -> None:
    attempts = 0

    def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("try again")
        return "done"

    retry = RetryPolicy(max_attempts=3, base_delay=0.001, rng=random.Random(1))
    result = TaskGraph().add("flaky", flaky, retry=retry).run()
    assert result.succeeded == {"flaky": "done"}
    assert attempts == 3


def test_an_open_breaker_fails_a_task_fast_without_calling_it() -> None:
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=60, name="service")
    graph = (
        TaskGraph()
        .add("first", down, breaker=breaker, criticality=Priority.BLOCKER)
        .add("second", down, breaker=breaker)
    )
    result = graph.run(workers=1, raise_on_failure=False)
    assert calls == 1
    assert isinstance(result.failed["second"], CircuitOpen)


class CountingBreaker(CircuitBreaker):
    """A breaker that counts how often it is asked to admit a call."""

    def __init__(self) -> None:
        super().__init__(failure_threshold=1, reset_timeout=60, name="service")
        self.asked = 0

    def try_admit(self) -> Any:
        self.asked += 1
        return super().try_admit()


@pytest.mark.parametrize("retry_on", [Exception, (ConnectionError, CircuitOpen)])
def test_an_open_breaker_is_never_retried_the_task_fails_at_once(retry_on: Any) -> None:
    calls = 0

    def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    breaker = CountingBreaker()
    retry = RetryPolicy(max_attempts=4, base_delay=0.001, retry_on=retry_on, rng=random.Random(1))
    graph = (
        TaskGraph()
        .add("first", down, breaker=breaker, criticality=Priority.BLOCKER)
        .add("second", down, breaker=breaker, retry=retry)
    )
    result = graph.run(workers=1, raise_on_failure=False)
    assert calls == 1  # "first" opened the circuit; "second" was never called
    assert isinstance(result.failed["second"], CircuitOpen)
    assert breaker.asked == 2  # once per task: an open circuit says "do not call", once
    stats = graph.statistics()
    assert stats is not None
    assert stats.failed == 2


def test_missing_dependencies_and_cycles_are_refused_when_checked() -> None:
    with pytest.raises(GraphError, match=r"^task 'b' depends on 'x', which is not in the graph$"):
        TaskGraph().add("a", constant(1)).add("b", constant(1), after="x").run()
    graph = TaskGraph().add("a", constant(1), after="c").add("b", constant(1), after="a")
    graph.add("c", constant(1), after="b")
    with pytest.raises(GraphError, match=r"^the task graph has a cycle: a -> b -> c -> a$"):
        graph.check()
    with pytest.raises(GraphError, match=r"^the task graph has no tasks$"):
        TaskGraph().run()


def test_bad_task_arguments_name_the_parameter() -> None:
    with pytest.raises(TypeError, match=r"^function must be callable, got int$"):
        TaskGraph().add("a", 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^criticality must be a Criticality or an int"):
        TaskGraph().add("a", constant(1), criticality="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^on_failure must be 'dependents' or 'all'"):
        TaskGraph().add("a", constant(1)).run(on_failure="some")  # type: ignore[arg-type]
    with pytest.raises(GraphError, match=r"^a task named 'a' is already in the graph$"):
        TaskGraph().add("a", constant(1)).add("a", constant(1))


def test_an_after_that_is_no_task_name_is_refused_saying_what_it_got() -> None:
    def first() -> int:
        return 1

    graph = TaskGraph().add("first", first)
    message = r"^after must be a task name or a sequence of names, got function$"
    with pytest.raises(TypeError, match=message):
        graph.add("second", constant(2), after=first)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got NoneType$"):
        graph.add("second", constant(2), after=None)  # type: ignore[arg-type]


def test_a_base_exception_in_a_task_fails_it_without_hanging() -> None:
    def exits() -> None:
        raise SystemExit(3)

    result = TaskGraph().add("exits", exits).add("ok", constant(1)).run(raise_on_failure=False)
    assert isinstance(result.failed["exits"], SystemExit)
    assert result.succeeded == {"ok": 1}


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
def test_a_task_raising_an_interrupt_or_exit_fails_once_and_is_raised_chained(
    kind: type[BaseException],
) -> None:
    calls = 0

    def stops() -> None:
        nonlocal calls
        calls += 1
        raise kind()

    breaker = CircuitBreaker(failure_threshold=1, name="service")
    retry = RetryPolicy(max_attempts=3, base_delay=0, retry_on=kind)
    graph = (
        TaskGraph()
        .add("stops", stops, retry=retry, breaker=breaker)
        .add("after", constant(1), after="stops")
        .add("apart", constant(2))
    )
    with pytest.raises(TaskGraphFailed) as caught:
        graph.run(workers=1)
    assert isinstance(caught.value.__cause__, kind)
    assert calls == 1  # not the task's answer: never retried
    result = caught.value.result
    assert isinstance(result, TaskGraphResult)
    assert result.succeeded == {"apart": 2}
    assert result.skipped == {"after": "it depends on task 'stops', which failed"}
    assert breaker.state.value == "closed"  # an interrupted call is no verdict on the service


def test_a_worker_failing_outside_any_task_is_raised_to_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.graph import tasks

    def broken(*_: Any, **__: Any) -> None:
        raise Boom("the bookkeeping failed")

    monkeypatch.setattr(tasks._TaskRun, "_settle", broken)
    graph = TaskGraph().add("a", constant(1)).add("b", constant(2), after="a")
    with pytest.raises(
        TaskGraphFailed, match=r"^a worker of the task graph failed: Boom: the "
    ) as caught:
        graph.run(workers=2, raise_on_failure=False)
    assert isinstance(caught.value.__cause__, Boom)
    result = caught.value.result
    assert isinstance(result, TaskGraphResult)
    assert result.skipped == {"a": "a worker of the run failed", "b": "a worker of the run failed"}


def test_statistics_and_metrics_show_active_tasks_and_latencies() -> None:
    inside = threading.Event()
    release = threading.Event()

    def wait() -> None:
        inside.set()
        release.wait(WAIT)

    graph = TaskGraph().add("wait", wait).add("quick", constant(1))
    registry = CollectorRegistry()
    register_task_metrics(graph, registry, name="jobs")
    runner = threading.Thread(target=graph.run, kwargs={"workers": 2})
    runner.start()
    try:
        assert inside.wait(WAIT)
        running = graph.statistics()
        assert running is not None
        assert running.active == 1
        assert _sample(registry, "pipeline_tasks_active") == 1
    finally:
        release.set()
        runner.join(WAIT)
    done = graph.statistics()
    assert done is not None
    assert (done.active, done.succeeded, sum(done.latency_counts)) == (0, 2, 2)
    assert _sample(registry, "pipeline_tasks_active") == 0
    assert _sample(registry, "pipeline_task_latency_seconds_count") == 2


def _sample(registry: CollectorRegistry, name: str) -> float:
    from prometheus_client import generate_latest

    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"no sample {name}")


def test_task_metrics_refuse_a_name_that_is_no_label_when_registered() -> None:
    graph = TaskGraph().add("a", constant(1))
    with pytest.raises(TypeError, match=r"^name must be a str, got int$"):
        register_task_metrics(graph, CollectorRegistry(), name=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^name must not be empty$"):
        register_task_metrics(graph, CollectorRegistry(), name="")


def test_the_pictures_label_each_task_with_its_criticality() -> None:
    graph = TaskGraph().add("a", constant(1), criticality=Priority.HIGH)
    graph.add("b", constant(1), after="a", criticality=9)
    assert graph.to_dot() == (
        "digraph tasks {\n"
        "  rankdir=LR;\n"
        '  n0 [shape=box, label="a\\nhigh"];\n'
        '  n1 [shape=box, label="b\\ncriticality 9"];\n'
        "  n0 -> n1;\n"
        "}\n"
    )
    assert graph.to_mermaid() == (
        'flowchart LR\n  n0["a<br/>high"]\n  n1["b<br/>criticality 9"]\n  n0 --> n1\n'
    )


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    from pipeline.graph import TaskGraph

    stop = threading.Event()
    graph = TaskGraph()
    graph.add("announce", lambda: print("running", flush=True))
    for index in range(50):
        graph.add(f"slow{index}", lambda _: stop.wait(0.05), after="announce")
    try:
        graph.run(workers=2)
    except KeyboardInterrupt:
        stats = graph.statistics()
        print("threads left:", threading.active_count() - 1, stats.skipped > 0, flush=True)
        sys.exit(0)
    sys.exit(3)
    """
)


def test_ctrl_c_stops_a_task_graph_and_leaves_no_thread() -> None:
    returncode, stdout, stderr = interrupt_when_ready(["-c", CTRL_C_SCRIPT], ready="running")
    assert returncode == 0, stderr
    assert stdout.strip() == "threads left: 0 True", (stdout, stderr)


def test_a_ctrl_c_that_wakes_no_wait_still_stops_a_task_graph() -> None:
    """Its wait on the main thread goes in slices (pipeline._interrupts)."""
    pressed = threading.Event()
    started = threading.Event()
    released: list[bool] = []

    def slow(_: object) -> None:
        started.set()
        released.append(pressed.wait(WAIT))

    graph = TaskGraph().add("first", lambda: None)
    for index in range(4):
        graph.add(f"slow{index}", slow, after="first")
    presser = press_from_another_thread(started)
    try:
        with sigint_setting(pressed), pytest.raises(KeyboardInterrupt):
            graph.run(workers=2)
    finally:
        presser.join(WAIT)
    assert released
    assert all(released)  # released by the Ctrl-C, not by the end of WAIT
    statistics = graph.statistics()
    assert statistics is not None
    assert statistics.skipped == 4 - len(released)
    assert not statistics.running
