"""Stages built from plain functions: map, filter and flat-map without writing a class.

Each passes its function straight to the core's batch loops (`map_items`,
`filter_items`, `flat_map_items`), so a function stage costs one Python call per item
and nothing more.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TypeVar

from pipeline.stage import (
    FilteringStage,
    FlatMapStage,
    PipelineStage,
    filter_items,
    flat_map_items,
    map_items,
)

__all__ = ["FlatMapFunctionStage", "FunctionStage", "PredicateStage"]

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")


class FunctionStage(PipelineStage[In, Out]):
    """A stage that maps each item through `function`; named after the function."""

    def __init__(
        self,
        function: Callable[[In], Out],
        *,
        name: str | None = None,
        workers: int = 1,
        latency_target: float | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        if inspect.isgeneratorfunction(function):
            raise TypeError(
                f"{_name_of(function)} uses yield, so FunctionStage would pass generator "
                "objects downstream; use FlatMapFunctionStage to emit its items"
            )
        super().__init__(name, workers=workers, latency_target=latency_target)
        if name is None:
            self.name = _name_of(function)
        self.function = function

    def process(self, item: In) -> Out:
        return self.function(item)

    def process_batch(self, items: list[In]) -> list[Out]:
        return map_items(self.function, items)


class PredicateStage(FilteringStage[T]):
    """A stage that keeps the items for which `predicate(item)` is true."""

    def __init__(
        self,
        predicate: Callable[[T], bool],
        *,
        name: str | None = None,
        workers: int = 1,
        latency_target: float | None = None,
    ) -> None:
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
        super().__init__(name, workers=workers, latency_target=latency_target)
        if name is None:
            self.name = _name_of(predicate)
        self.predicate = predicate

    def keep(self, item: T) -> bool:
        return self.predicate(item)

    def process_batch(self, items: list[T]) -> list[T]:
        return filter_items(self.predicate, items)


class FlatMapFunctionStage(FlatMapStage[In, Out]):
    """A stage that replaces each item with the items of `function(item)`."""

    def __init__(
        self,
        function: Callable[[In], Iterable[Out]],
        *,
        name: str | None = None,
        workers: int = 1,
        latency_target: float | None = None,
    ) -> None:
        if not callable(function):
            raise TypeError(f"function must be callable, got {type(function).__name__}")
        super().__init__(name, workers=workers, latency_target=latency_target)
        if name is None:
            self.name = _name_of(function)
        self.function = function

    def expand(self, item: In) -> Iterable[Out]:
        return self.function(item)

    def process_batch(self, items: list[In]) -> list[Out]:
        return flat_map_items(self.function, items)


def _name_of(function: Callable[..., object]) -> str:
    return getattr(function, "__name__", type(function).__name__)
