"""Joins: nodes that put back together what a split took apart, or pair two streams by key.

A join node takes everything its inbox holds as it arrives, whichever branch it came
from, and keeps what it cannot emit yet in its own buffer; it never waits for one
particular branch. That is what keeps a split that rejoins free of deadlock: a branch
that runs ahead only fills the join's buffer, and the split upstream blocks on the
slower branch's bounded inbox, so the buffer holds at most the items in flight on the
branches (their inboxes and the batches their workers hold).

- `SequenceJoin` sits below a broadcast: the split numbers each item, every branch
  passes the number on with its answer, or with a tombstone if it dropped the item,
  and the join emits one combined output per number once every branch has answered.
- `OrderedMerge` sits below any split and emits the branches' outputs in the order
  the split numbered them, so a partition or round-robin fan-out keeps input order.
- `KeyJoin` pairs two streams by a key (an enrich-from-two-services join), with a
  bounded buffer and a stated policy for keys whose partner never comes.

Every join runs one worker (its buffer is its state), receives `(edge, item)` pairs
from the graph (edge: the position of the input in the node's `after`; a numbered
join gets `(edge, sequence, copies, value)`, see `Numbered`), and is told of
the end of its input through `finish()` (called by the engine's `flush()`), which may
emit what is left. Each `GraphPipeline` runs its own copy of the graph's joins
(`JoinStage.copy_for_pipeline`), so pipelines built from one graph run side by side.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any, Final, Literal, Self, TypeVar

from pipeline._checks import positive_int
from pipeline.errors import short_repr
from pipeline.stage import ItemFailed, PipelineStage

__all__ = [
    "MISSING",
    "JoinStage",
    "KeyJoin",
    "Numbered",
    "OrderedMerge",
    "SequenceJoin",
]

Out = TypeVar("Out")

logger = logging.getLogger(__name__)


class _Missing:
    """The type of `MISSING`."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""Stands for a part that never came: a branch dropped the item, or a key's partner."""


Numbered = tuple[int, int, Any]
"""An item numbered at a split, on its way through a branch to a join: (sequence
number, copies, value). `copies` is how many branches the split sent it to (all of
them for a broadcast, one for a partition); `value` is the branch's answer, or
`MISSING` (a tombstone) when the branch dropped the item. Plain tuples, because one
is made per item per branch."""


class JoinStage(PipelineStage[Any, Out]):
    """A node that receives `(edge, item)` pairs and buffers them; runs one worker.

    Subclasses fill in `accept` (one arrival, returning the outputs it completes),
    `finish` (the end of the input) and `reset` (an empty buffer). The buffer lives on
    the join and is reset in `setup`, so a join can be run again, but serves one run at
    a time: `GraphPipeline` therefore runs a copy of each join of the graph, its own
    (`copy_for_pipeline`), and a join object that is started in a second run while a
    first is going fails in `setup` instead of mixing buffers.
    """

    kind: str = "join"
    numbered: bool = False
    """Whether the join pairs items by the number a split gave them (then the graph
    checks that its inputs come from one split, and numbers that split's items)."""

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, workers=1)
        self.inputs: tuple[str, ...] = ()
        # Guards the figures read by statistics() from other threads.
        self._figures = threading.Lock()
        self._in_use = False
        self.buffered = 0
        self.high_water_mark = 0
        self.dropped = 0

    def bind(self, inputs: tuple[str, ...]) -> None:
        """Learn the names of the inputs, in edge order; `GraphPipeline` binds its copy."""
        self.inputs = inputs

    def copy_for_pipeline(self) -> Self:
        """Return a copy of this join with an empty buffer and figures of its own.

        `GraphPipeline` runs such a copy, so every pipeline built from one graph has its
        own joins. The copy is shallow: it shares the join's functions and settings, and
        gets its own buffer from `reset()`, which is where a subclass sets up its state.
        """
        twin = copy.copy(self)
        twin.local = threading.local()
        twin._figures = threading.Lock()
        twin._in_use = False
        twin.buffered = twin.high_water_mark = twin.dropped = 0
        twin.reset()
        return twin

    def setup(self) -> None:
        if not self.inputs:
            raise RuntimeError(
                f"join {self.name!r} is not a node of a graph: its inputs are a graph's "
                "edges, so add it to a Graph and run graph.build()"
            )
        with self._figures:
            if self._in_use:
                raise RuntimeError(
                    f"join {self.name!r} is already running in another pipeline; a join's "
                    "buffer serves one run at a time (Graph.build() gives each pipeline "
                    "its own copy of the graph's joins)"
                )
            self._in_use = True
            self.buffered = self.high_water_mark = self.dropped = 0
        self.reset()

    def teardown(self) -> None:
        with self._figures:
            self._in_use = False

    def reset(self) -> None:
        """Give the join an empty buffer of its own: when copied, and in the worker's setup."""

    def accept(self, edge: int, item: Any) -> list[Out]:
        """Take one arrival from input `edge`; return the outputs it completes."""
        raise NotImplementedError

    def finish(self) -> list[Out]:
        """Return what is left to emit once every input has ended; may raise."""
        return []

    def flush(self) -> list[Out]:
        """Emit what `finish` returns; the engine calls it once the input has ended."""
        outputs = self.finish()
        self._note_size()
        return outputs

    def size(self) -> int:
        """Return how many items the buffer holds now."""
        raise NotImplementedError

    def process_batch(self, items: list[Any]) -> list[Out]:
        outputs: list[Out] = []
        for index, (edge, item) in enumerate(items):
            try:
                outputs.extend(self.accept(edge, item))
            except _HeldItemFailed as failed:  # on an item the arrival pushed out
                raise ItemFailed(failed.item, index, outputs) from failed.__cause__
            except BaseException as exc:
                raise ItemFailed(item, index, outputs) from exc
        self._note_size()
        return outputs

    def _note_size(self, dropped: int = 0) -> None:
        size = self.size()
        with self._figures:
            self.buffered = size
            self.high_water_mark = max(self.high_water_mark, size)
            self.dropped += dropped


class SequenceJoin(JoinStage[Out]):
    """Combine the answers of every branch of a broadcast, item by item.

    It emits an item once its last answer arrives. In an ordered run every branch
    keeps its input order, so items complete, and are emitted, in the split's order.

    Args:
        combine: called with one answer per branch (in the order of the join's inputs)
            and returns the output; by default the answers as a tuple.
        name: the node's name; defaults to "SequenceJoin".
        keep_partial: when a branch dropped an item, still emit it, with `MISSING` for
            that branch's answer; by default the item is dropped (an inner join) and
            counted in the join's `dropped`.
    """

    kind = "sequence join"
    numbered = True

    def __init__(
        self,
        combine: Callable[..., Out] | None = None,
        *,
        name: str | None = None,
        keep_partial: bool = False,
    ) -> None:
        if combine is not None and not callable(combine):
            raise TypeError(f"combine must be callable or None, got {type(combine).__name__}")
        if not isinstance(keep_partial, bool):
            raise TypeError(f"keep_partial must be a bool, got {type(keep_partial).__name__}")
        super().__init__(name)
        self.combine = combine
        self.keep_partial = keep_partial
        self._parts: dict[int, list[Any]] = {}

    def reset(self) -> None:
        self._parts = {}

    def process_batch(self, items: list[tuple[int, int, int, Any]]) -> list[Out]:
        # One loop with local names: this runs once per branch answer, the join's hot path.
        # Per sequence number: [answers still to come, tombstones, answer of input 0, ...].
        waiting = self._parts
        count = len(self.inputs)
        blank: list[Any] = [count, 0, *([MISSING] * count)]
        combine = self.combine
        keep_partial = self.keep_partial
        outputs: list[Out] = []
        dropped = 0
        for index, (edge, number, _, value) in enumerate(items):
            parts = waiting.get(number)
            if parts is None:
                parts = waiting[number] = blank.copy()
            if value is MISSING:
                parts[1] += 1
            else:
                parts[edge + 2] = value
            parts[0] -= 1
            if parts[0]:
                continue
            del waiting[number]
            if parts[1] and not keep_partial:
                dropped += 1
                continue
            answers = parts[2:]
            if combine is None:
                outputs.append(tuple(answers))  # type: ignore[arg-type]  # Out is the tuple
                continue
            try:
                outputs.append(combine(*answers))
            except BaseException as exc:
                raise ItemFailed(tuple(answers), index, outputs) from exc
        self._note_size(dropped)
        return outputs

    def finish(self) -> list[Out]:
        if self._parts:
            waiting = sorted(self._parts)[:5]
            raise RuntimeError(
                f"{len(self._parts)} items never got an answer from every branch "
                f"(sequence numbers {waiting}...); a branch lost them"
            )
        return []

    def size(self) -> int:
        return len(self._parts)


class OrderedMerge(JoinStage[Any]):
    """Emit the outputs of a split's branches in the order the split numbered the items.

    Below a partition or round-robin split each item comes back from the one branch
    it went to; below a broadcast, from every branch, and the answers of one item are
    emitted together in the order of the merge's inputs. An item a branch dropped
    (a tombstone) is skipped without holding up the ones after it.
    """

    kind = "ordered merge"
    numbered = True

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self._waiting: dict[int, list[Any]] = {}
        self._unanswered: dict[int, int] = {}
        self._next = 0

    def reset(self) -> None:
        self._waiting = {}
        self._unanswered = {}
        self._next = 0

    def process_batch(self, items: list[tuple[int, int, int, Any]]) -> list[Any]:
        waiting = self._waiting
        unanswered = self._unanswered
        count = len(self.inputs)
        outputs: list[Any] = []
        for edge, number, copies, value in items:
            parts = waiting.get(number)
            if parts is None:
                parts = waiting[number] = [MISSING] * count
                unanswered[number] = copies
            parts[edge] = value
            unanswered[number] -= 1
            while unanswered.get(self._next) == 0:
                parts = waiting.pop(self._next)
                del unanswered[self._next]
                outputs.extend(part for part in parts if part is not MISSING)
                self._next += 1
        self._note_size()
        return outputs

    def finish(self) -> list[Any]:
        if self._waiting:
            raise RuntimeError(
                f"{len(self._waiting)} items are still waiting for item {self._next}, "
                "which never came back from its branch"
            )
        return []

    def size(self) -> int:
        return len(self._waiting)


IncompletePolicy = Literal["fail", "drop", "emit"]


class _HeldItemFailed(Exception):
    """Raised by `accept` when a failure belongs to a held item the arrival pushed out.

    `JoinStage.process_batch` turns it into the `ItemFailed` of that item, so the run's
    error names the item that failed; the failure itself is its `__cause__`.
    """

    def __init__(self, item: object) -> None:
        super().__init__(item)
        self.item = item


class KeyJoin(JoinStage[Out]):
    """Pair the items of two inputs that share a key, as an enrich-from-two-sources join.

    Each key is expected once on each input. The buffer holds the items still waiting
    for their partner. While every key completes, it holds at most the items one input
    can run ahead of the other: the items in flight above the join, already inside the
    run's bound (`GraphPipeline.max_items_in_flight`). A key whose partner never comes
    stays until the end of the input, so on a long stream where keys can go missing set
    `max_pending`: the buffer then holds at most that many keys, and the oldest goes
    when it is full (choose it above the items in flight above the join, or keys still
    on their way are given up too). A key whose partner never comes is handled by
    `incomplete`, when the buffer is full and at the end of the input (every key left):
    - "fail" (the default): fail the run, naming the join, the key and the input;
    - "drop": drop the item, counted in the join's `dropped` and logged once per run;
    - "emit": emit it anyway, with `MISSING` for the partner.

    Args:
        key: returns an item's key (hashable); called in the join's worker thread.
        combine: called as `combine(left, right)` for a pair; by default the pair as a tuple.
        max_pending: the most keys the buffer holds; None (the default): no fixed bound.
        incomplete: the policy above.
        name: the node's name; defaults to "KeyJoin".
    """

    kind = "key join"

    def __init__(
        self,
        key: Callable[[Any], Hashable],
        *,
        combine: Callable[[Any, Any], Out] | None = None,
        max_pending: int | None = None,
        incomplete: IncompletePolicy = "fail",
        name: str | None = None,
    ) -> None:
        if not callable(key):
            raise TypeError(f"key must be callable, got {type(key).__name__}")
        if combine is not None and not callable(combine):
            raise TypeError(f"combine must be callable or None, got {type(combine).__name__}")
        if incomplete not in ("fail", "drop", "emit"):
            raise ValueError(f"incomplete must be 'fail', 'drop' or 'emit', got {incomplete!r}")
        super().__init__(name)
        self.key = key
        self.combine = combine
        self.max_pending = None if max_pending is None else positive_int("max_pending", max_pending)
        self.incomplete: IncompletePolicy = incomplete
        self._pending: dict[Hashable, tuple[int, Any]] = {}
        self._warned = False

    def reset(self) -> None:
        self._pending = {}
        self._warned = False

    def accept(self, edge: int, item: Any) -> list[Out]:
        key = self.key(item)
        waiting = self._pending.pop(key, None)
        if waiting is not None:
            other_edge, other = waiting
            if other_edge == edge:
                raise ValueError(
                    f"key {short_repr(key)} came twice from input {self.inputs[edge]!r} before "
                    "its partner; a key join expects each key once per input"
                )
            return [self._pair(other, item) if edge == 1 else self._pair(item, other)]
        outputs: list[Out] = []
        if self.max_pending is not None and len(self._pending) >= self.max_pending:
            oldest = next(iter(self._pending))
            held = self._pending[oldest][1]
            full = f"the buffer is full: max_pending={self.max_pending}"
            try:
                outputs.extend(self._give_up(oldest, full))
            except BaseException as exc:  # the failure is the given-up item's, not the arrival's
                raise _HeldItemFailed(held) from exc
        self._pending[key] = (edge, item)
        return outputs

    def finish(self) -> list[Out]:
        outputs: list[Out] = []
        for key in list(self._pending):
            outputs.extend(self._give_up(key, "the input ended"))
        return outputs

    def size(self) -> int:
        return len(self._pending)

    def _pair(self, left: Any, right: Any) -> Out:
        if self.combine is None:
            return (left, right)  # type: ignore[return-value]  # Out is the tuple then
        return self.combine(left, right)

    def _give_up(self, key: Hashable, why: str) -> list[Out]:
        edge, item = self._pending.pop(key)
        if self.incomplete == "fail":
            raise LookupError(
                f"key {short_repr(key)} from input {self.inputs[edge]!r} never met its partner "
                f"from input {self.inputs[1 - edge]!r} ({why})"
            )
        if self.incomplete == "drop":
            self._note_size(dropped=1)
            if not self._warned:
                self._warned = True
                logger.warning(
                    "key join %r dropped key %s without a partner (%s); later drops are "
                    "counted in its statistics",
                    self.name,
                    short_repr(key),
                    why,
                )
            return []
        return [self._pair(item, MISSING) if edge == 0 else self._pair(MISSING, item)]
