"""What a sink gets when its consumer is SIGKILLed again and again: the two delivery promises.

`benchmarks/crash_queues.py` kills a `run_resumable` consumer process at random moments
and resumes it; here a short run of it, for both sinks:
- a sink in the same file as the source (outputs and ack in one transaction): exactly
  once, nothing lost and nothing duplicated;
- a separate sink (the outputs committed, then the ack): at least once, nothing lost,
  and at most one batch's outputs duplicated per kill.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

CRASH = Path(__file__).resolve().parents[2] / "benchmarks" / "crash_queues.py"
BATCH = 40  # inputs leased per commit; each input makes 2 outputs


@pytest.fixture(scope="module")
def crash_queues() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_queues", CRASH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_queues"] = module
    spec.loader.exec_module(module)
    return module


def test_a_same_file_sink_loses_and_duplicates_nothing_under_repeated_kills(
    crash_queues: ModuleType,
) -> None:
    counts = crash_queues.crash_run(together=True, items=2000, kills=4, batch=BATCH, seed=3)
    assert counts == {"lost": 0, "duplicated": 0, "killed": 4}


def test_a_separate_sink_loses_nothing_and_duplicates_at_most_a_batch_per_kill(
    crash_queues: ModuleType,
) -> None:
    counts = crash_queues.crash_run(together=False, items=2000, kills=4, batch=BATCH, seed=3)
    assert counts["killed"] == 4
    assert counts["lost"] == 0
    assert counts["duplicated"] <= counts["killed"] * BATCH * 2
