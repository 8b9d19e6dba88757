"""Fork-merge and mixed pools: two stage shapes that asyncio pipeline libraries offer.

- `fork_merge(functions, merge)`: every item goes to each of N functions, which run
  side by side on a batch (one thread per function, per worker), and `merge` turns the
  N results of an item into its output. Good for asking several services about the
  same item.
- `mix_pool(functions)`: a stage with one worker per function, reading one shared
  inbox; each item is handled by whichever worker takes it, with that worker's
  function. Good for spreading one stream over unlike resources (two API keys, a
  GPU and a CPU path) that compute the same thing. Inside a `ProcessStage` each
  worker process takes the function of its number among the processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pipeline.stage import ItemFailed, PipelineStage, map_items

__all__ = ["ForkMergeStage", "MixPoolStage", "fork_merge", "mix_pool"]


def _functions(value: object) -> tuple[Callable[[Any], Any], ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise TypeError(f"functions must be a non-empty sequence of callables, got {value!r}")
    for function in value:
        if not callable(function):
            raise TypeError(f"functions must hold callables, got {type(function).__name__}")
    return tuple(value)


class ForkMergeStage(PipelineStage[Any, Any]):
    """Give every item to each function, side by side, and merge their results.

    Each worker owns a thread pool with one thread per function (made in `setup`,
    joined in `teardown`); a batch is handed to every function at once, and the stage
    waits for all of them. If functions fail, the failure at the earliest item is
    raised for that item, after the merged outputs of the items before it.
    """

    def __init__(
        self,
        functions: Sequence[Callable[[Any], Any]],
        merge: Callable[..., Any],
        *,
        name: str | None = None,
        workers: int = 1,
    ) -> None:
        self.functions = _functions(functions)
        if not callable(merge):
            raise TypeError(f"merge must be callable, got {type(merge).__name__}")
        self.merge = merge
        super().__init__(name or "fork_merge", workers=workers)

    def setup(self) -> None:
        self.local.pool = ThreadPoolExecutor(
            len(self.functions), thread_name_prefix=f"pipeline-{self.name}-fork"
        )

    def teardown(self) -> None:
        pool: ThreadPoolExecutor | None = getattr(self.local, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)

    def process_batch(self, items: list[Any]) -> list[Any]:
        pool: ThreadPoolExecutor = self.local.pool
        futures = [pool.submit(map_items, function, items) for function in self.functions]
        results: list[list[Any]] = []
        first: ItemFailed | None = None
        for future in futures:
            try:
                results.append(future.result())
            except ItemFailed as failed:
                results.append(failed.outputs)
                if first is None or failed.index < first.index:
                    first = failed
        merged: list[Any] = []
        for index in range(len(items) if first is None else first.index):
            try:
                merged.append(self.merge(*(result[index] for result in results)))
            except BaseException as exc:
                raise ItemFailed(items[index], index, merged) from exc
        if first is not None:
            raise ItemFailed(first.item, first.index, merged) from first.__cause__
        return merged


class MixPoolStage(PipelineStage[Any, Any]):
    """Run one worker per function on a shared inbox; each item meets one of the functions.

    In threads, each worker takes the next function in turn in `setup`; in the worker
    processes of a `ProcessStage`, where each process holds its own copy of the stage,
    each takes the function of its process number (`set_process_number`).
    """

    def __init__(
        self, functions: Sequence[Callable[[Any], Any]], *, name: str | None = None
    ) -> None:
        self.functions = _functions(functions)
        super().__init__(name or "mix_pool", workers=len(self.functions))
        # Guards _handed: how many workers have been given their function this run.
        self._lock = threading.Lock()
        self._handed = 0

    def __getstate__(self) -> dict[str, Any]:
        """Return the state to pickle: all but the lock and `local`, which belong to one process."""
        return {key: value for key, value in vars(self).items() if key not in {"_lock", "local"}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self.local = threading.local()

    def set_process_number(self, number: int) -> None:
        """Take the function of worker process `number`; a `ProcessStage` calls it there."""
        self._handed = number

    def setup(self) -> None:
        with self._lock:
            index = self._handed % len(self.functions)
            self._handed += 1
        self.local.function = self.functions[index]

    def process_batch(self, items: list[Any]) -> list[Any]:
        function: Callable[[Any], Any] = self.local.function
        return map_items(function, items)


def fork_merge(
    functions: Sequence[Callable[[Any], Any]],
    merge: Callable[..., Any],
    *,
    name: str | None = None,
    workers: int = 1,
) -> ForkMergeStage:
    """Return a stage giving each item to every function and `merge(*results)` as its output."""
    return ForkMergeStage(functions, merge, name=name, workers=workers)


def mix_pool(functions: Sequence[Callable[[Any], Any]], *, name: str | None = None) -> MixPoolStage:
    """Return a stage with one worker per function, all reading one shared inbox."""
    return MixPoolStage(functions, name=name)
