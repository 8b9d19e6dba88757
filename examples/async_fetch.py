"""Overlap many slow requests on one event loop: an asyncio stage and an async source.

`fetch` stands in for an HTTP request made with an async client: it waits 50 ms without
holding a thread. `AsyncFunctionStage(fetch, concurrency=20)` runs up to 20 of those
coroutines at once on the stage's own event loop, so 100 requests take about five
waits, not a hundred; the pages still come out in input order. `iterate_async` turns
an async generator (an async database cursor, a message consumer) into the source.

Run: .venv/bin/python examples/async_fetch.py
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from pipeline import Pipeline
from pipeline.aio import AsyncFunctionStage, iterate_async

REQUESTS = 100
WAIT_SECONDS = 0.05
CONCURRENCY = 20


async def fetch(page: int) -> str:
    """Return page `page`, as an async HTTP client would after a 50 ms round trip."""
    await asyncio.sleep(WAIT_SECONDS)
    return f"page {page}"


async def page_numbers() -> AsyncIterator[int]:
    """Yield the pages to fetch, as an async source (a cursor, a queue consumer) would."""
    for page in range(REQUESTS):
        await asyncio.sleep(0)
        yield page


def main() -> int:
    stage = AsyncFunctionStage(fetch, concurrency=CONCURRENCY)
    started = time.perf_counter()
    pages = Pipeline(stage).run(iterate_async(page_numbers()))
    elapsed = time.perf_counter() - started
    assert pages == [f"page {page}" for page in range(REQUESTS)], "in input order"
    one_at_a_time = REQUESTS * WAIT_SECONDS
    print(f"{len(pages)} requests of {WAIT_SECONDS * 1000:.0f} ms, {CONCURRENCY} at a time")
    print(f"took {elapsed:.2f} s; one at a time they would take {one_at_a_time:.1f} s")
    print(f"first and last: {pages[0]!r}, {pages[-1]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
