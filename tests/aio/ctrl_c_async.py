"""A script for the Ctrl-C test of asyncio stages: coroutines awaiting for an hour.

It prints "ready" once four coroutines are waiting; on KeyboardInterrupt it prints how
many of their `finally` blocks ran and how many threads are left, and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import threading

from pipeline import Pipeline
from pipeline.aio import AsyncFunctionStage

waiting = 0
cleaned = 0


async def wait_an_hour(item: int) -> int:
    global waiting, cleaned
    try:
        waiting += 1
        if waiting == 4:
            print("ready", flush=True)
        await asyncio.sleep(3600)
        return item
    finally:
        cleaned += 1


if __name__ == "__main__":
    try:
        Pipeline(AsyncFunctionStage(wait_an_hour, concurrency=4), batch_size=1).run(range(100))
    except KeyboardInterrupt:
        left = threading.active_count() - 1
        print(f"interrupted; finally ran {cleaned} times; threads left: {left}")
        sys.exit(0)
    sys.exit(1)
