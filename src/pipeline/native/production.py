"""The production pipeline of the classic example, with its hot loop in C.

input -> validation (drop NaN/Inf) -> business filter (drop negatives)
      -> transform (sqrt(x) * 2) -> post-validation (drop non-finite) -> output + stats

``DataPipeline.process(data)`` cuts ``data`` into chunks of ``batch_size`` items
(memoryview slices: no copies) and runs them through a ``Pipeline`` whose one
stage, ``PlacingTransformStage``, has ``thread_count`` workers. Each worker
transforms a whole chunk in C with the GIL released, into a scratch buffer of
its own, then copies the chunk's kept results straight to their final place in
one shared output (also in C, GIL released). A chunk's place is where the
previous chunk's results end, so the only thing the workers wait for each
other for is that one number (``_Placement``); the consuming thread only sums
the counts, so counting takes no lock on the hot path and nothing runs
serially after the workers.

The output is fresh memory from ``buffers.fresh_doubles`` (a private anonymous
mapping on transparent huge pages where the platform has them), allocated once
and never written before the workers write their results into it: the page
faults of the output happen in the workers, in parallel, with the GIL
released, one per 2 MiB instead of one per 4 KiB where huge pages are on.
(``bytearray(n)`` and ``array * n`` write every byte while holding the GIL:
21-33 ms for 80 MB, longer than the transform itself; docs/gil-free.md has
the measurements.) ``process(data, out=buffer)`` writes to the caller's buffer
instead, so a caller transforming one array after another pays for the pages
once. Either way ``process`` returns a ``memoryview`` of format 'd' over the
kept results.

``DataPipeline.stream(chunks)`` is the form for inputs larger than memory: one
``TransformResult`` (an ``array('d')`` and its counts) per chunk, in order. Its
Pipeline moves one chunk per handoff and holds at most a small multiple of
``thread_count`` chunks in its queues, which is what keeps its memory flat
however long its input is. Each worker transforms into a scratch buffer of its
own, reused for every chunk (so it stays in cache and is faulted in once), and
copies only the kept results into the right-sized array it hands on.

The implementation (``"native"`` or ``"reference"``) names a module,
``pipeline.native.compiled`` or ``pipeline.native.reference``; both offer
``transform``, ``transform_into`` and ``move`` with the same signatures and
checks (``TransformModule``), and the stages call whichever was chosen.
"""

from __future__ import annotations

import array
import threading
import time
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, TypeAlias

from pipeline._checks import positive_int
from pipeline.native.buffers import (
    Float64Input,
    as_float64_view,
    checked_output,
    fresh_doubles,
    starts_inside,
)
from pipeline.native.counts import TransformCounts
from pipeline.pipeline import Pipeline
from pipeline.stage import PipelineStage

__all__ = [
    "DataPipeline",
    "DataStats",
    "Implementation",
    "PlacingTransformStage",
    "TransformModule",
    "TransformResult",
    "TransformStage",
    "implementation_module",
]

Implementation: TypeAlias = Literal["native", "reference"]
"""Which transform runs: the C core (``pipeline.native.compiled``) or the Python reference."""

NumberedChunk: TypeAlias = tuple[int, "memoryview[float]"]
"""A chunk of the input and its position among the chunks (0, 1, 2, ...)."""

# Chunks held in each queue per worker: enough that a worker never waits for
# the feeder, few enough that memory stays a handful of chunks.
_QUEUED_CHUNKS_PER_THREAD = 2


class TransformModule(Protocol):
    """What ``pipeline.native.compiled`` and ``pipeline.native.reference`` both offer."""

    def transform(
        self, values: Float64Input, *, out: object = None
    ) -> tuple[memoryview[float], TransformCounts]:
        """Transform ``values`` into fresh memory or ``out``; see ``compiled.transform``."""

    def transform_into(self, values: Float64Input, output: object) -> TransformCounts:
        """Transform ``values`` into the front of ``output``; see ``compiled.transform_into``."""

    def move(self, source: Float64Input, destination: object) -> None:
        """Copy ``source`` to the front of ``destination``; see ``compiled.move``."""


def implementation_module(implementation: object) -> TransformModule:
    """Return the module ``implementation`` names: "native" (C) or "reference" (Python).

    Raises:
        ValueError: ``implementation`` is neither.
        ImportError: "native" was asked for and the extension is not built.
    """
    if implementation == "native":
        from pipeline.native import compiled  # raises ImportError with build instructions

        return compiled
    if implementation == "reference":
        from pipeline.native import reference

        return reference
    raise ValueError(f"implementation must be 'native' or 'reference', got {implementation!r}")


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
        implementation: "native" for the C core (raises ImportError saying how
            to build it if it is missing) or "reference" for pure Python.
        name: shown in logs and errors.
        workers: threads transforming chunks at once.

    Raises:
        ValueError: ``implementation`` is neither "native" nor "reference".
        ImportError: "native" was asked for and the extension is not built.
    """

    def __init__(
        self,
        implementation: Implementation = "native",
        *,
        name: str | None = None,
        workers: int = 1,
    ) -> None:
        super().__init__(name, workers=workers)
        self.implementation = implementation
        self._module = implementation_module(implementation)

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


class PlacingTransformStage(PipelineStage[NumberedChunk, TransformCounts]):
    """Transform numbered chunks and write their results in order into one shared output.

    Each item is ``(number, chunk)``, numbered 0, 1, 2, ... in input order, with
    at most ``chunk_capacity`` items per chunk; each output is the chunk's
    counts. A worker transforms its chunk into a scratch buffer of its own
    (allocated in ``setup``, reused for every chunk, so it stays in cache),
    asks ``placement`` where the chunk's results go, and copies them there.

    Args:
        output: where the results go: room for every kept item of every chunk.
        chunk_capacity: the most items a chunk holds.
        implementation: "native" (the C core, GIL released) or "reference".
        workers: threads transforming chunks at once.
    """

    def __init__(
        self,
        output: memoryview[float],
        chunk_capacity: int,
        implementation: Implementation = "native",
        *,
        workers: int = 1,
    ) -> None:
        super().__init__(workers=workers)
        self.placement = _Placement()
        self._output = output
        self._chunk_capacity = chunk_capacity
        self._module = implementation_module(implementation)

    def setup(self) -> None:
        """Allocate this worker's scratch buffer; runs in the worker's thread."""
        self.local.scratch = fresh_doubles(self._chunk_capacity)

    def teardown(self) -> None:
        """Release this worker's scratch buffer; runs in the worker's thread."""
        self.local.scratch.release()

    def process(self, item: NumberedChunk) -> TransformCounts:
        """Transform one chunk and place its results; runs in a worker thread."""
        number, chunk = item
        try:
            scratch: memoryview[float] = self.local.scratch
            counts = self._module.transform_into(chunk, scratch)
            offset = self.placement.claim(number, counts.kept)
        except BaseException:
            self.placement.abandon()
            raise
        with (
            scratch[: counts.kept] as results,
            self._output[offset : offset + counts.kept] as place,
        ):
            self._module.move(results, place)
        return counts


class _Placement:
    """Tell each chunk where its results start in the shared output: where the previous ones end.

    Chunk n can only be placed once chunk n - 1 has been transformed and has
    said how many results it kept. Workers take chunks in input order, so when
    chunk n waits, chunk n - 1 is already being processed by another worker,
    which always either claims its place or abandons the run (``process``'s
    ``except``): the wait always ends.
    """

    def __init__(self) -> None:
        # placed is notified whenever next_number advances or the run is abandoned.
        # Guarded by it: next_number (the chunk whose place is known next),
        # next_offset (where that chunk's results start), abandoned.
        self._placed = threading.Condition()
        self._next_number = 0
        self._next_offset = 0
        self._abandoned = False

    def claim(self, number: int, kept: int) -> int:
        """Return where chunk ``number``'s ``kept`` results start; block until chunk n - 1 claimed.

        Raises:
            RuntimeError: an earlier chunk failed, so this one has no place.
        """
        with self._placed:
            while self._next_number != number:
                if self._abandoned:
                    raise RuntimeError(f"chunk {number} not placed: an earlier chunk failed")
                self._placed.wait()
            offset = self._next_offset
            self._next_offset += kept
            self._next_number += 1
            self._placed.notify_all()
        return offset

    def abandon(self) -> None:
        """Wake every waiting chunk with an error: a chunk failed before claiming its place."""
        with self._placed:
            self._abandoned = True
            self._placed.notify_all()


class DataPipeline:
    """Run the production transform over data with ``thread_count`` worker threads.

    Args:
        thread_count: worker threads transforming chunks at once.
        batch_size: items per chunk handed to one worker in one go.
        implementation: "native" (the C core) or "reference" (pure Python).

    Raises:
        TypeError: ``thread_count`` or ``batch_size`` is not an int.
        ValueError: one of them is less than 1, or ``implementation`` is unknown.
        ImportError: "native" was asked for and the extension is not built.
    """

    def __init__(
        self,
        thread_count: int,
        batch_size: int,
        implementation: Implementation = "native",
    ) -> None:
        self.thread_count = positive_int("thread_count", thread_count)
        self.batch_size = positive_int("batch_size", batch_size)
        self.implementation = implementation
        implementation_module(implementation)  # fail here, not in a worker, if it cannot run

    def process(
        self, data: Float64Input, *, out: object = None
    ) -> tuple[memoryview[float], DataStats]:
        """Transform all of ``data`` and return the kept results, in order, and the stats.

        Blocks until every chunk is done. ``data`` is read in place if it is a
        float64 buffer; any other iterable of floats is first copied into one.

        Args:
            data: a float64 buffer or an iterable of floats.
            out: None for fresh output memory, or a writable float64 buffer
                with room for ``len(data)`` items, reused by the caller from
                call to call so its pages are faulted in once. It may be
                ``data`` itself (the transform then runs in place), but must
                not otherwise overlap it.

        Returns:
            The results as a ``memoryview`` of format 'd': a sequence of floats
            (``len``, indexing, slicing, iteration, ``tolist()``, ``tobytes()``)
            that also exposes the buffer protocol, so ``array('d', bytes)``,
            ``numpy.frombuffer(results)`` or ``native.transform`` read it without a
            copy. Without ``out`` it owns its memory (an anonymous mapping),
            which lives as long as the view or a view derived from it; with
            ``out`` it is a view of ``out``'s front (which ``out`` cannot be
            resized under while the view lives). And the stats of the run.

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
            if starts_inside(output, view):
                raise ValueError("out overlaps data; pass data itself, or a separate buffer")
        counts = TransformCounts.ZERO
        if len(view) > 0:
            stage = PlacingTransformStage(
                output,
                min(self.batch_size, len(view)),
                self.implementation,
                workers=self.thread_count,
            )
            pipeline = Pipeline(
                stage, queue_size=_QUEUED_CHUNKS_PER_THREAD * self.thread_count, batch_size=1
            )
            chunks = (
                (number, view[start : start + self.batch_size])
                for number, start in enumerate(range(0, len(view), self.batch_size))
            )
            for chunk_counts in pipeline.stream(chunks):
                counts += chunk_counts
        return output[: counts.kept], DataStats.from_counts(counts, time.perf_counter() - started)

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
