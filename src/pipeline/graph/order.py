"""The order of a graph's names: who comes after whom, and an order that respects it.

Shared by `graph.build` (nodes joined by queues) and `graph.tasks` (tasks run once
each): both name their parts, list for each the names it comes after, and refuse a
cycle by showing one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from pipeline.graph.errors import GraphError
from pipeline.stage import PipelineStage

__all__ = ["names_after", "successors_of", "topological_order"]


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


def topological_order(
    after: Mapping[str, Sequence[str]], successors: Mapping[str, Sequence[str]], what: str
) -> list[str]:
    """Return the names in an order where each comes after the names it follows (Kahn).

    Args:
        after: for each name, the names it comes after (every one of them a key).
        successors: `successors_of(after)`.
        what: the graph, for the message ("the graph", "the task graph").

    Raises:
        GraphError: there is a cycle; the message shows one.
    """
    waiting = {name: len(before) for name, before in after.items()}
    ready = deque(name for name, count in waiting.items() if count == 0)
    order: list[str] = []
    while ready:
        name = ready.popleft()
        order.append(name)
        for successor in successors[name]:
            waiting[successor] -= 1
            if waiting[successor] == 0:
                ready.append(successor)
    if len(order) == len(after):
        return order
    # Every name left is on a cycle or below one; walk back until one repeats.
    left = {name for name in after if name not in order}
    path = [next(name for name in after if name in left)]
    while True:
        back = next(name for name in after[path[-1]] if name in left)
        if back in path:
            cycle = [*path[path.index(back) :], back]
            cycle.reverse()
            raise GraphError(f"{what} has a cycle: {' -> '.join(cycle)}")
        path.append(back)
