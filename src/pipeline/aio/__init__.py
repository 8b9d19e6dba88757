"""asyncio stages: coroutines on one event loop per stage, and async iterables as sources.

- `AsyncStage`: subclass it and write `async def process_async(self, item)`;
- `AsyncFunctionStage(async_function)`: the same from an `async def` function;
- `iterate_async(async_iterable)`: read an async iterable as a pipeline's source.
"""

from __future__ import annotations

from pipeline.aio.stage import AsyncFunctionStage, AsyncStage, iterate_async

__all__ = ["AsyncFunctionStage", "AsyncStage", "iterate_async"]
