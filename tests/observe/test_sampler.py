"""Tests for the shared monitor thread that samples a pipeline's statistics."""

from __future__ import annotations

import logging
import threading

import pytest

from pipeline import Pipeline
from pipeline.observe import sampler
from pipeline.observe.sampler import THREAD_NAME, SampleCallback, Subscription, subscribe
from pipeline.stages import FunctionStage
from pipeline.stats import PipelineStatistics

WAIT = 5.0


def sampler_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == THREAD_NAME)


def finished_pipeline() -> Pipeline[int, int]:
    pipeline = Pipeline(FunctionStage[int, int](abs))
    pipeline.run(range(10))
    return pipeline


def test_subscribers_of_one_pipeline_share_a_thread_that_the_last_one_joins() -> None:
    pipeline = finished_pipeline()
    first_sampled, second_sampled = threading.Event(), threading.Event()
    first = subscribe(pipeline, 0.005, lambda at, stats: first_sampled.set())
    second = subscribe(pipeline, 0.01, lambda at, stats: second_sampled.set())
    assert first_sampled.wait(WAIT)
    assert second_sampled.wait(WAIT)
    assert sampler_threads() == 1
    first.close()
    assert sampler_threads() == 1  # the second still uses it
    second.close()
    second.close()  # harmless
    assert sampler_threads() == 0
    again = threading.Event()
    third = subscribe(pipeline, 0.005, lambda at, stats: again.set())  # a fresh thread
    assert again.wait(WAIT)
    third.close()
    assert sampler_threads() == 0


def test_two_pipelines_have_a_thread_each() -> None:
    sampled = [threading.Event(), threading.Event()]

    def setter(done: threading.Event) -> SampleCallback:
        return lambda at, stats: done.set()

    subscriptions = [subscribe(finished_pipeline(), 0.005, setter(done)) for done in sampled]
    assert all(done.wait(WAIT) for done in sampled)
    assert sampler_threads() == 2
    for subscription in subscriptions:
        subscription.close()
    assert sampler_threads() == 0


def test_a_failing_subscriber_is_logged_and_the_others_still_sampled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = finished_pipeline()
    samples: list[PipelineStatistics] = []
    enough = threading.Event()

    def fail(at: float, stats: PipelineStatistics) -> None:
        raise ValueError("a broken view")

    def keep(at: float, stats: PipelineStatistics) -> None:
        samples.append(stats)
        if len(samples) >= 3:
            enough.set()

    with caplog.at_level(logging.ERROR, logger="pipeline.observe.sampler"):
        failing = subscribe(pipeline, 0.005, fail)
        keeping = subscribe(pipeline, 0.005, keep)
        assert enough.wait(WAIT)
        failing.close()
        keeping.close()
    assert "a statistics subscriber failed" in caplog.text
    assert samples[0].items_read == 10


def test_a_subscriber_raising_system_exit_is_logged_and_the_others_still_get_samples(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, SystemExit ended the monitor thread silently: no subscriber got a sample again.
    pipeline = finished_pipeline()
    raised, sampled_after = threading.Event(), threading.Event()

    def exits(at: float, stats: PipelineStatistics) -> None:
        raised.set()
        raise SystemExit(1)

    def watches(at: float, stats: PipelineStatistics) -> None:
        if raised.is_set():
            sampled_after.set()

    with caplog.at_level(logging.ERROR, logger="pipeline.observe.sampler"):
        failing = subscribe(pipeline, 0.005, exits)
        watching = subscribe(pipeline, 0.005, watches)
        try:
            assert sampled_after.wait(WAIT)
        finally:
            failing.close()
            watching.close()
    assert sampler_threads() == 0
    assert "a statistics subscriber failed" in caplog.text
    assert "SystemExit: 1" in caplog.text


def test_close_waits_for_a_stuck_subscriber_only_up_to_its_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, close() joined the monitor thread for as long as the callback ran.
    monkeypatch.setattr(sampler, "CLOSE_TIMEOUT", 0.2)
    pipeline = finished_pipeline()
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()

    def stuck(at: float, stats: PipelineStatistics) -> None:
        entered.set()
        release.wait(30.0)  # beyond every other bound: the test releases it itself
        returned.set()

    subscription = subscribe(pipeline, 0.005, stuck)
    try:
        assert entered.wait(WAIT)
        with caplog.at_level(logging.WARNING, logger="pipeline.observe.sampler"):
            subscription.close()
        assert not returned.is_set()  # close() returned while the callback still ran
        assert "still in a subscriber's callback after 0.2 s" in caplog.text
    finally:
        release.set()
        for thread in threading.enumerate():
            if thread.name == THREAD_NAME:
                thread.join(WAIT)
    assert returned.is_set()
    assert sampler_threads() == 0


def test_a_subscriber_may_close_its_own_subscription(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = finished_pipeline()
    closed = threading.Event()
    holder: list[Subscription] = []

    def once(at: float, stats: PipelineStatistics) -> None:
        holder[0].close()
        closed.set()

    with caplog.at_level(logging.WARNING, logger="pipeline.observe.sampler"):
        holder.append(subscribe(pipeline, 0.005, once))
        assert closed.wait(WAIT)
        holder[0].close()
        for thread in threading.enumerate():
            if thread.name == THREAD_NAME:
                thread.join(WAIT)
    assert caplog.text == ""
    assert sampler_threads() == 0


def test_a_subscriber_that_keeps_failing_is_logged_as_an_error_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, every sample logged a traceback: ten a second for a progress bar's lifetime.
    pipeline = finished_pipeline()
    calls: list[float] = []
    enough = threading.Event()

    def fail(at: float, stats: PipelineStatistics) -> None:
        calls.append(at)
        if len(calls) >= 5:
            enough.set()
        raise ValueError("a broken view")

    with caplog.at_level(logging.DEBUG, logger="pipeline.observe.sampler"):
        failing = subscribe(pipeline, 0.005, fail)
        try:
            assert enough.wait(WAIT)
        finally:
            failing.close()
    errors = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage() for record in errors] == [
        "a statistics subscriber failed; its later failures are logged at debug level"
    ]
    assert len(caplog.records) == len(calls)
