"""Shared test fixtures: every test fails if it leaves a thread running.

Tests of the compiled C stage are marked `c_stage`. Where the package was installed
without it on purpose (`PIPELINE_NATIVE=skip`, the pure-Python install), they are
skipped; anywhere else a missing C stage fails them, so a broken build is never a skip.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from support import PURE_RUN

# Every test of this module needs the C stage: it imports pipeline.native.compiled.
collect_ignore = ["native/test_native.py"] if PURE_RUN else []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "c_stage: needs the compiled C stage (skipped only with PIPELINE_NATIVE=skip)"
    )
    if PURE_RUN:  # DataPipeline's default says once that it runs the reference instead
        config.addinivalue_line(
            "filterwarnings", "ignore:pipeline.native. the C stage is not built:RuntimeWarning"
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not PURE_RUN:
        return
    skip = pytest.mark.skip(reason="the C stage is not built (PIPELINE_NATIVE=skip)")
    for item in items:
        if item.get_closest_marker("c_stage") is not None:
            item.add_marker(skip)


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
