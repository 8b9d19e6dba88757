"""A script for the Ctrl-C test of async sources: a source that goes quiet after 4 items.

It prints "ready" once the stage has had the 4 items and the source is waiting for a
fifth that never comes; on KeyboardInterrupt it prints how many times the source's
`finally` ran, in which thread, and how many threads are left, and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator

from pipeline import Pipeline
from pipeline.aio import iterate_async
from pipeline.stages import FunctionStage

seen = 0
closed_in: list[str] = []


async def four_then_silence() -> AsyncIterator[int]:
    try:
        for item in range(4):
            yield item
        await asyncio.sleep(3600)  # a socket with nothing more to say
    finally:
        await asyncio.sleep(0)
        closed_in.append(threading.current_thread().name)


def count(item: int) -> int:
    global seen
    seen += 1
    if seen == 4:
        print("ready", flush=True)
    return item


if __name__ == "__main__":
    try:
        Pipeline(FunctionStage(count), batch_size=1).run(iterate_async(four_then_silence()))
    except KeyboardInterrupt:
        left = threading.active_count() - 1
        print(f"interrupted; finally ran in {closed_in}; threads left: {left}")
        sys.exit(0)
    sys.exit(1)
