"""The order of a graph's names: who comes after whom, and an order that respects it.

Shared by `graph.build` (nodes joined by queues) and `graph.tasks` (tasks run once
each): both name their parts, list for each the names it comes after, and refuse a
cycle by showing one. The order itself is the standard library's
`graphlib.TopologicalSorter`; this module feeds it the names in the order they were
added (so that order decides among names that could go either way) and turns its
`CycleError` into the package's `GraphError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from graphlib import CycleError, TopologicalSorter

from pipeline.graph.errors import GraphError
from pipeline.stage import PipelineStage

__all__ = ["names_after", "prepared_sorter", "successors_of", "topological_order"]


def names_after(after: object, kind: str) -> tuple[str, ...]:
    """Return `after`, one name or an iterable of names, as a tuple of names.

    Args:
        after: what `add(after=...)` was given.
        kind: what the names name, for the message ("node", "task").

    Raises:
        TypeError: `after` is not a name nor an iterable of names; the message says
            what it got (for a stage, to give its name instead).
    """
    if isinstance(after, str):
        return (after,)
    expected = f"after must be a {kind} name or a sequence of names, got"
    if isinstance(after, PipelineStage):
        raise TypeError(
            f"{expected} {type(after).__name__} {after.name!r}; give its name, {after.name!r}"
        )
    if isinstance(after, bytes) or not isinstance(after, Iterable):
        raise TypeError(f"{expected} {type(after).__name__}")
    names = tuple(after)
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"{expected} {after!r}")
    return names


def successors_of(after: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Return, for each name, the names that come after it, in the order they were added."""
    successors: dict[str, list[str]] = {name: [] for name in after}
    for name, before in after.items():
        for earlier in before:
            successors[earlier].append(name)
    return successors


def prepared_sorter(after: Mapping[str, Sequence[str]], what: str) -> TopologicalSorter[str]:
    """Return a `TopologicalSorter` of the names, prepared: `get_ready()` gives the first.

    Every name is added before any edge, so the names ready together come out in the
    order of `after`, and so do the names one `done()` makes ready.

    Args:
        after: for each name, the names it comes after (every one of them a key).
        what: the graph, for the message ("the graph", "the task graph").

    Raises:
        GraphError: there is a cycle; the message shows one, from the name of it
            added first, back to that name.
    """
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name in after:
        sorter.add(name)
    for name, before in after.items():
        sorter.add(name, *before)
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle = _from_the_first_added(exc.args[1], after)
        raise GraphError(f"{what} has a cycle: {' -> '.join(cycle)}") from exc
    return sorter


def topological_order(after: Mapping[str, Sequence[str]], what: str) -> list[str]:
    """Return the names in an order where each comes after the names it follows.

    Among names that could go either way, the one added first goes first, level by
    level (Kahn's order).

    Raises:
        GraphError: there is a cycle; the message shows one (see `prepared_sorter`).
    """
    sorter = prepared_sorter(after, what)
    order: list[str] = []
    while sorter.is_active():
        ready = sorter.get_ready()
        order.extend(ready)
        sorter.done(*ready)
    return order


def _from_the_first_added(cycle: list[str], after: Mapping[str, Sequence[str]]) -> list[str]:
    """Return `CycleError`'s cycle (first name repeated last) from its name added first."""
    ring = cycle[:-1]
    added = {name: position for position, name in enumerate(after)}
    start = min(range(len(ring)), key=lambda index: added[ring[index]])
    ring = ring[start:] + ring[:start]
    return [*ring, ring[0]]
