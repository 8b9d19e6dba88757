"""Retry the calls that fail for a moment, and collect the items that fail for good.

`lookup` stands in for a service: one key in four fails twice with a `ConnectionError`
(a blip: worth retrying), and key 13 is bad data that fails with a `ValueError` every
time (never worth retrying). `ResilientStage` retries the first kind with a full-jitter
exponential backoff and hands the second to its error policy: under "collect" the item
and its exception go to the stage's dead letters, and the run goes on. Nothing is lost:
every input is either an output or a dead letter.

Run: .venv/bin/python examples/retries.py
"""

from __future__ import annotations

import random
import threading

from pipeline import Pipeline
from pipeline.resilience import ResilientStage, RetryPolicy
from pipeline.stages import FunctionStage

KEYS = range(20)
BAD_KEY = 13
failures: dict[int, int] = {}
failures_lock = threading.Lock()  # the stage's two workers count into one dict


def lookup(key: int) -> str:
    """Return the record of `key`, as a flaky service would."""
    if key == BAD_KEY:
        raise ValueError(f"key {key} is malformed")
    with failures_lock:
        failed = failures.get(key, 0)
        if key % 4 == 0 and failed < 2:  # a blip: fails twice, then answers
            failures[key] = failed + 1
            raise ConnectionError("connection reset by peer")
    return f"record-{key}"


def main() -> int:
    stage = ResilientStage(
        FunctionStage(lookup, name="lookup", workers=2),
        on_error="collect",
        retry=RetryPolicy(
            max_attempts=3,
            base_delay=0.005,
            max_delay=0.05,
            retry_on=(ConnectionError,),  # a ValueError is not retried: it would fail again
            rng=random.Random(0),
        ),
    )
    assert stage.dead_letters is not None
    records = Pipeline(stage).run(KEYS)
    statistics = stage.statistics()
    print(f"{len(records)} records, in input order: {records[:3]} ...")
    print(f"retries: {statistics.retries} (keys {sorted(failures)} failed twice, then answered)")
    for letter in stage.dead_letters:
        print(f"dead letter: {letter.item!r} after {letter.attempts} attempt: {letter.error!r}")
    assert records == [f"record-{key}" for key in KEYS if key != BAD_KEY]
    assert len(records) + len(stage.dead_letters) == len(KEYS)
    print(f"{len(KEYS)} keys in = {len(records)} records + {len(stage.dead_letters)} dead letter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
