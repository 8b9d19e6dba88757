"""Shared test fixtures: every test fails if it leaves a thread running."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail the test if a thread it started is still alive when it ends."""
    before = set(threading.enumerate())
    yield
    leaked = [thread for thread in threading.enumerate() if thread not in before]
    for thread in leaked:
        thread.join(timeout=5)  # Keep one leak from cascading into the next tests.
    if leaked:
        pytest.fail(f"test leaked threads: {[thread.name for thread in leaked]}")
