"""The production pipeline of the classic example, with its hot loop in C.

input -> validation (drop NaN/Inf) -> business filter (drop negatives)
      -> transform (sqrt(x) * 2) -> post-validation (drop non-finite) -> output + stats

``DataPipeline.process(data)`` cuts ``data`` into ``thread_count`` segments
(memoryview slices: no copies) and runs them through a ``Pipeline`` whose one
stage, ``SegmentTransformStage``, has ``thread_count`` workers: each worker
walks one segment in pieces of ``batch_size`` items, each piece one C call with
the GIL released, and writes the results straight into their final place in
one shared output, with no scratch buffer and no copy. How, when nobody knows
in advance how many results a segment keeps? Segments go in pairs around a
meeting point: the first of a pair is walked from its last item to its first
and its results are laid downwards, ending at the meeting point
(``transform_into_end``); the second is walked forwards and its results laid
upwards from the same point (``transform_into``). The two halves of a pair's
results meet without a gap. With two threads that is the whole output; with
more, each further pair's block of results is moved down once, at the end,
next to the one before (``move``, GIL released).

The output is fresh memory from ``buffers.fresh_doubles`` (a private anonymous
mapping on transparent huge pages where the platform has them), allocated once
and never written before the workers write their results into it: the page
faults of the output happen in the workers' C calls, in parallel, with the GIL
released, one per 2 MiB instead of one per 4 KiB where huge pages are on.
(``bytearray(n)`` and ``array * n`` write every byte while holding the GIL:
21-33 ms for 80 MB, longer than the transform itself; docs/gil-free.md has
the measurements.) ``process(data, out=buffer)`` writes to the caller's buffer
instead, so a caller transforming one array after another pays for the pages
once. Either way ``process`` returns a ``memoryview`` of format 'd' over the
kept results (which start at the first pair's meeting point minus the first
segment's results, not necessarily at the output's first item).

``DataPipeline.stream(chunks)`` is the form for inputs larger than memory: one
``TransformResult`` (an ``array('d')`` and its counts) per chunk, in order. Its
Pipeline moves one chunk per handoff and holds at most a small multiple of
``thread_count`` chunks in its queues, which is what keeps its memory flat
however long its input is. Each worker transforms into a scratch buffer of its
own, reused for every chunk (so it stays in cache and is faulted in once), and
copies only the kept results into the right-sized array it hands on.

The implementation (``"native"`` or ``"reference"``, or ``"auto"``, the default,
which is the first when the C core is built, else the second with a one-time
warning) names a module,
``pipeline.native.compiled`` or ``pipeline.native.reference``; both offer
``transform``, ``transform_into``, ``transform_into_end`` and ``move`` with
the same signatures and checks (``TransformModule``), and the stages call
whichever was chosen.
"""

from __future__ import annotations

import array
import time
import warnings
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, TypeAlias

from pipeline._checks import positive_int
from pipeline.native.buffers import (
    Float64Input,
    as_float64_view,
    checked_output,
    fresh_doubles,
    overlap,
)
from pipeline.native.counts import TransformCounts
from pipeline.pipeline import Pipeline
from pipeline.stage import PipelineStage

__all__ = [
    "DataPipeline",
    "DataStats",
    "Implementation",
    "SegmentTransformStage",
    "TransformModule",
    "TransformResult",
    "TransformStage",
    "implementation_module",
    "resolved",
]

Implementation: TypeAlias = Literal["auto", "native", "reference"]
"""Which transform runs: the C core (``pipeline.native.compiled``), the Python reference,
or ``"auto"``: the C core when it is built, else the reference, with a warning."""

REFERENCE_COST = (
    "about 100 times slower: 1,000,000 readings take 1.1 ms in C and 145 ms in Python on one thread"
)
"""What the reference costs against the C core (docs/gil-free.md has the command)."""

_warned_about_the_reference = False


# Chunks held in each queue per worker. One is enough: the ordered stage's reorder
# window (pipeline.worker.REORDER_BATCHES_PER_WORKER) already lets a worker run
# ahead of a slow neighbour, and every further chunk is memory held (measured,
# 10M values in chunks of 65,536 on 2 threads: 8.1-8.3 MB peak with 2, 5.6-6.1 with 1).
_QUEUED_CHUNKS_PER_THREAD = 1


class TransformModule(Protocol):
    """What ``pipeline.native.compiled`` and ``pipeline.native.reference`` both offer."""

    def transform(
        self, values: Float64Input, *, out: object = None
    ) -> tuple[memoryview[float], TransformCounts]:
        """Transform ``values`` into fresh memory or ``out``; see ``compiled.transform``."""

    def transform_into(self, values: Float64Input, output: object) -> TransformCounts:
        """Transform ``values`` into the front of ``output``; see ``compiled.transform_into``."""

    def transform_into_end(self, values: Float64Input, output: object) -> TransformCounts:
        """Transform ``values`` into the end of ``output``; see ``compiled.transform_into_end``."""

    def move(self, source: Float64Input, destination: object) -> None:
        """Copy ``source`` to the front of ``destination``; see ``compiled.move``."""


def implementation_module(implementation: object) -> TransformModule:
    """Return the module ``implementation`` names: "native" (C) or "reference" (Python).

    "auto" is the module ``resolved("auto")`` names.

    Raises:
        ValueError: ``implementation`` is none of "auto", "native" and "reference".
        ImportError: "native" was asked for and the extension is not built.
    """
    if implementation == "auto":
        implementation = resolved("auto")
    if implementation == "native":
        from pipeline.native import compiled  # raises ImportError with build instructions

        return compiled
    if implementation == "reference":
        from pipeline.native import reference

        return reference
    raise ValueError(
        f"implementation must be 'auto', 'native' or 'reference', got {implementation!r}"
    )


def resolved(implementation: Implementation) -> Literal["native", "reference"]:
    """Return what ``implementation`` runs: "auto" is "native" if the C core is built.

    Else "auto" is "reference", and the first time it is, a ``RuntimeWarning`` says so
    and names the cost, so that nothing takes the slow path silently.

    Raises:
        ValueError: ``implementation`` is none of "auto", "native" and "reference".
        ImportError: "native" was asked for and the extension is not built.
    """
    if implementation != "auto":
        implementation_module(implementation)  # fail here, not in a worker, if it cannot run
        return implementation
    try:
        from pipeline.native import compiled  # noqa: F401
    except ImportError as exc:
        _warn_once_about_the_reference(exc)
        return "reference"
    return "native"


def _warn_once_about_the_reference(cause: ImportError) -> None:
    global _warned_about_the_reference
    if _warned_about_the_reference:
        return
    _warned_about_the_reference = True
    warnings.warn(
        "pipeline.native: the C stage is not built, so the pure-Python reference runs "
        f"instead, {REFERENCE_COST}; reinstall with a C compiler to build it "
        f"(implementation='native' makes its absence an error) [{cause}]",
        RuntimeWarning,
        stacklevel=4,
    )


class TransformResult(NamedTuple):
    """The outcome of one chunk: its kept results, in order, and its counts."""

    values: array.array[float]
    counts: TransformCounts


@dataclass(frozen=True, slots=True)
class DataStats:
    """What one ``DataPipeline.process`` call did.

    ``items_processed + items_filtered + items_invalid`` equals the input
    length. ``items_invalid`` counts both validation failures (NaN/Inf input)
    and post-validation failures (non-finite result); the latter share is
    also given alone as ``items_invalid_after_transform`` (always 0 for IEEE
    doubles, see ``pipeline.native.reference``).
    """

    items_processed: int
    items_filtered: int
    items_invalid: int
    items_invalid_after_transform: int
    duration_secs: float
    throughput: float
    """Input items per second of wall time."""

    @classmethod
    def from_counts(cls, counts: TransformCounts, duration_secs: float) -> DataStats:
        """Return the stats of a run that produced ``counts`` in ``duration_secs``."""
        return cls(
            items_processed=counts.kept,
            items_filtered=counts.negative,
            items_invalid=counts.invalid_input + counts.invalid_output,
            items_invalid_after_transform=counts.invalid_output,
            duration_secs=duration_secs,
            throughput=counts.total / duration_secs if duration_secs > 0 else 0.0,
        )


class TransformStage(PipelineStage[Float64Input, TransformResult]):
    """Transform whole chunks of float64 through the C core or the Python reference.

    Each item is a chunk (an ``array('d')``, a memoryview slice, any float64
    buffer or sequence of floats) and each output is its ``TransformResult``.
    Each worker transforms into a scratch buffer of its own, grown to the
    largest chunk seen and reused, and copies only the kept results out.

    Args:
        implementation: "auto" (the default: the C core if it is built, else the
            reference with a one-time warning), "native" for the C core (raises
            ImportError saying how to build it if it is missing) or "reference" for
            pure Python.
        name: shown in logs and errors.
        workers: threads transforming chunks at once.

    Raises:
        ValueError: ``implementation`` is none of "auto", "native" and "reference".
        ImportError: "native" was asked for and the extension is not built.
    """

    def __init__(
        self,
        implementation: Implementation = "auto",
        *,
        name: str | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(name, workers=workers)
        self.implementation = resolved(implementation)
        self._module = implementation_module(self.implementation)

    def teardown(self) -> None:
        """Release this worker's scratch buffer; runs in the worker's thread."""
        scratch: memoryview[float] | None = getattr(self.local, "scratch", None)
        if scratch is not None:
            scratch.release()

    def process(self, item: Float64Input) -> TransformResult:
        """Transform one chunk; runs in a worker thread, with the GIL released in C."""
        chunk = as_float64_view(item, "values")
        scratch: memoryview[float] | None = getattr(self.local, "scratch", None)
        if scratch is None or len(scratch) < len(chunk):
            if scratch is not None:
                scratch.release()
            scratch = self.local.scratch = fresh_doubles(len(chunk))
        counts = self._module.transform_into(chunk, scratch)
        values: array.array[float] = array.array("d")
        values.frombytes(scratch[: counts.kept].cast("B"))
        return TransformResult(values, counts)


class Segment(NamedTuple):
    """A contiguous part of ``DataPipeline.process``'s input and its room in the output."""

    number: int
    """Its position among the segments, 0, 1, 2, ..."""
    values: memoryview[float]
    """Its input."""
    room: memoryview[float]
    """Its part of the output, as long as ``values``: the results go to its end or start."""
    downward: bool
    """True: walked last to first, results at the end of ``room``; False: the reverse."""


class PlacedResults(NamedTuple):
    """Where one segment's results landed: ``room[first:first + counts.kept]``."""

    number: int
    first: int
    counts: TransformCounts


class SegmentTransformStage(PipelineStage[Segment, PlacedResults]):
    """Transform whole segments straight into their room in a shared output.

    A worker walks its segment in pieces of ``batch_size`` items, one C call
    each (GIL released), and lays each piece's results next to the previous
    piece's: upwards from the start of the room (``transform_into``), or, for
    a ``downward`` segment, downwards from its end, walking the pieces last to
    first (``transform_into_end``). So a worker needs to know nothing of the
    other segments, and no result is ever copied.

    Args:
        batch_size: items per C call.
        implementation: "auto" (the default), "native" (the C core, GIL released) or
            "reference"; see ``TransformStage``.
        workers: threads transforming segments at once.
    """

    def __init__(
        self,
        batch_size: int,
        implementation: Implementation = "auto",
        *,
        workers: int = 1,
    ) -> None:
        super().__init__(workers=workers)
        self._batch_size = positive_int("batch_size", batch_size)
        self._module = implementation_module(implementation)

    def process(self, item: Segment) -> PlacedResults:
        """Transform one segment into its room; runs in a worker thread."""
        length = len(item.values)
        counts = TransformCounts.ZERO
        if item.downward:
            first = length
            for stop in range(length, 0, -self._batch_size):
                start = max(0, stop - self._batch_size)
                with (
                    item.values[start:stop] as piece,
                    item.room[first - (stop - start) : first] as room,
                ):
                    piece_counts = self._module.transform_into_end(piece, room)
                first -= piece_counts.kept
                counts += piece_counts
            return PlacedResults(item.number, first, counts)
        end = 0
        for start in range(0, length, self._batch_size):
            stop = min(length, start + self._batch_size)
            with item.values[start:stop] as piece, item.room[end : end + stop - start] as room:
                piece_counts = self._module.transform_into(piece, room)
            end += piece_counts.kept
            counts += piece_counts
        return PlacedResults(item.number, 0, counts)


def _segment_bounds(length: int, count: int) -> list[tuple[int, int, bool]]:
    """Cut ``length`` items into ``count`` near-equal segments: (start, stop, downward).

    Segments pair up around meeting points: the first of each pair goes
    downward; a last segment without a partner goes upward.
    """
    bounds = []
    for number in range(count):
        start = length * number // count
        stop = length * (number + 1) // count
        bounds.append((start, stop, number % 2 == 0 and number + 1 < count))
    return bounds


class DataPipeline:
    """Run the production transform over data with ``thread_count`` worker threads.

    Args:
        thread_count: worker threads, each transforming one segment of the data
            (``process``) or whole chunks (``stream``).
        batch_size: items per C call in ``process``.
        implementation: "auto" (the default: the C core if it is built, else the
            reference with a one-time ``RuntimeWarning`` naming the cost), "native"
            (the C core; ImportError if it is not built) or "reference" (pure Python).

    Raises:
        TypeError: ``thread_count`` or ``batch_size`` is not an int.
        ValueError: one of them is less than 1, or ``implementation`` is unknown.
        ImportError: "native" was asked for and the extension is not built.
    """

    def __init__(
        self,
        thread_count: int,
        batch_size: int,
        implementation: Implementation = "auto",
    ) -> None:
        self.thread_count = positive_int("thread_count", thread_count)
        self.batch_size = positive_int("batch_size", batch_size)
        self.implementation = resolved(implementation)

    def process(
        self, data: Float64Input, *, out: object = None
    ) -> tuple[memoryview[float], DataStats]:
        """Transform all of ``data`` and return the kept results, in order, and the stats.

        Blocks until every segment is done. ``data`` is read in place if it is a
        float64 buffer; any other iterable of floats is first copied into one.

        Args:
            data: a float64 buffer or an iterable of floats.
            out: None for fresh output memory, or a writable float64 buffer
                with room for ``len(data)`` items, reused by the caller from
                call to call so its pages are faulted in once. It must not
                overlap ``data``.

        Returns:
            The results as a ``memoryview`` of format 'd': a sequence of floats
            (``len``, indexing, slicing, iteration, ``tolist()``, ``tobytes()``)
            that also exposes the buffer protocol, so ``array('d', bytes)``,
            ``numpy.frombuffer(results)`` or ``native.transform`` read it without a
            copy. Without ``out`` it owns its memory (an anonymous mapping),
            which lives as long as the view or a view derived from it; with
            ``out`` it is a view of part of ``out`` (from the first pair's
            meeting point minus the first segment's results; ``out`` cannot be
            resized while the view lives). And the stats of the run.

        Raises:
            TypeError, ValueError: ``data`` cannot be read as float64, or
                ``out`` is not a writable float64 buffer of ``len(data)`` items
                or more, or overlaps ``data`` (see ``pipeline.native.buffers``).
            StageError: a worker failed; the original exception is chained.
        """
        started = time.perf_counter()
        view = as_float64_view(data, "data")
        if out is None:
            output = fresh_doubles(len(view))
        else:
            output = checked_output(out, len(view), argument="out", input_argument="data")
            if overlap(output, view):
                # A worker's results could overwrite input another has not read yet.
                raise ValueError("out overlaps data; pass a separate buffer")
        bounds = _segment_bounds(len(view), self.thread_count)
        segments = [
            Segment(number, view[start:stop], output[start:stop], downward)
            for number, (start, stop, downward) in enumerate(bounds)
        ]
        stage = SegmentTransformStage(
            self.batch_size, self.implementation, workers=self.thread_count
        )
        pipeline = Pipeline(stage, queue_size=self.thread_count, batch_size=1)
        try:
            placed = list(pipeline.stream(segments))
        finally:
            for segment in segments:
                segment.values.release()
                segment.room.release()
        first, kept = self._join(output, placed, bounds)
        counts = sum((item.counts for item in placed), TransformCounts.ZERO)
        return output[first : first + kept], DataStats.from_counts(
            counts, time.perf_counter() - started
        )

    def _join(
        self,
        output: memoryview[float],
        placed: list[PlacedResults],
        bounds: list[tuple[int, int, bool]],
    ) -> tuple[int, int]:
        """Move each block of results down next to the one before; return (first, kept).

        Blocks are in output order and every move goes downwards, so a move
        never overwrites results not yet moved. With one or two segments
        nothing moves.
        """
        module = implementation_module(self.implementation)
        first: int | None = None
        end = 0
        for item, (start, _, _) in zip(placed, bounds, strict=True):
            where = start + item.first
            if first is None:
                first, end = where, where + item.counts.kept
                continue
            if where != end and item.counts.kept:
                with (
                    output[where : where + item.counts.kept] as results,
                    output[end : end + item.counts.kept] as place,
                ):
                    module.move(results, place)
            end += item.counts.kept
        if first is None:
            return 0, 0
        return first, end - first

    def stream(self, chunks: Iterable[Float64Input]) -> Generator[TransformResult, None, None]:
        """Return an iterator over the results of ``chunks``, one result per chunk, in order.

        The chunks are read lazily and at most a few per worker are in flight,
        so memory stays flat for inputs larger than memory. ``batch_size`` does
        not apply: each chunk is transformed as given. Stopping early (``break``
        or closing the iterator) stops and joins the worker threads.

        Raises (from the iterator):
            StageError: a chunk could not be transformed (for example a buffer
                of the wrong type); the original exception is chained.
        """
        stage = TransformStage(self.implementation, workers=self.thread_count)
        pipeline = Pipeline(
            stage, queue_size=_QUEUED_CHUNKS_PER_THREAD * self.thread_count, batch_size=1
        )
        # A generator of our own, so close() reaches the Pipeline's iterator.
        yield from pipeline.stream(chunks)

    def __repr__(self) -> str:
        return (
            f"DataPipeline(thread_count={self.thread_count}, batch_size={self.batch_size}, "
            f"implementation={self.implementation!r})"
        )
