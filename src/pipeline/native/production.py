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

The output is an anonymous ``mmap``: the operating system hands its pages out
zeroed on first touch, so the page faults of writing 8 bytes per kept result
happen in the workers, in parallel, with the GIL released. (``bytearray(n)``
and ``array * n`` write every byte while holding the GIL: 21-33 ms for 80 MB,
longer than the transform itself; docs/gil-free.md has the measurements.)
``process`` returns a ``memoryview`` of format 'd' over that mapping, shrunk
to the kept results.

``DataPipeline.stream(chunks)`` is the form for inputs larger than memory: one
``TransformResult`` (an ``array('d')`` and its counts) per chunk, in order. Its
Pipeline moves one chunk per handoff and holds at most a small multiple of
``thread_count`` chunks in its queues, which is what keeps its memory flat
however long its input is.
"""

from __future__ import annotations

import array
import mmap
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

from pipeline._checks import positive_int
from pipeline.native.buffers import Float64Input, as_float64_view, doubles
from pipeline.native.reference import TransformCounts, transform_reference
from pipeline.pipeline import Pipeline
from pipeline.stage import PipelineStage

__all__ = [
    "DataPipeline",
    "DataStats",
    "Implementation",
    "PlacingTransformStage",
    "TransformResult",
    "TransformStage",
]

Implementation: TypeAlias = Literal["native", "reference"]
"""Which transform runs: the C core (``pipeline.native.compiled``) or the Python reference."""

Transform: TypeAlias = Callable[[Float64Input], tuple["array.array[float]", TransformCounts]]
TransformInto: TypeAlias = Callable[[Float64Input, "memoryview[float]"], TransformCounts]
Move: TypeAlias = Callable[["memoryview[float]", "memoryview[float]"], None]
NumberedChunk: TypeAlias = tuple[int, "memoryview[float]"]
"""A chunk of the input and its position among the chunks (0, 1, 2, ...)."""

# Chunks held in each queue per worker: enough that a worker never waits for
# the feeder, few enough that memory stays a handful of chunks.
_QUEUED_CHUNKS_PER_THREAD = 2
_DOUBLE_SIZE = 8


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
        self._transform = _select(implementation).transform

    def process(self, item: Float64Input) -> TransformResult:
        """Transform one chunk; runs in a worker thread, with the GIL released in C."""
        values, counts = self._transform(item)
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
        implementation_functions = _select(implementation)
        self._transform_into = implementation_functions.transform_into
        self._move = implementation_functions.move

    def setup(self) -> None:
        """Allocate this worker's scratch buffer; runs in the worker's thread."""
        self.local.scratch = doubles(memoryview(array.array("d", [0.0]) * self._chunk_capacity))

    def teardown(self) -> None:
        """Release this worker's scratch buffer; runs in the worker's thread."""
        self.local.scratch.release()

    def process(self, item: NumberedChunk) -> TransformCounts:
        """Transform one chunk and place its results; runs in a worker thread."""
        number, chunk = item
        try:
            scratch: memoryview[float] = self.local.scratch
            counts = self._transform_into(chunk, scratch)
            offset = self.placement.claim(number, counts.kept)
        except BaseException:
            self.placement.abandon()
            raise
        with (
            scratch[: counts.kept] as results,
            self._output[offset : offset + counts.kept] as place,
        ):
            self._move(results, place)
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
        _select(implementation)  # fail here, not in a worker, if it cannot run

    def process(self, data: Float64Input) -> tuple[memoryview[float], DataStats]:
        """Transform all of ``data`` and return the kept results, in order, and the stats.

        Blocks until every chunk is done. ``data`` is read in place if it is a
        float64 buffer; any other iterable of floats is first copied into one.

        Returns:
            The results as a ``memoryview`` of format 'd': a sequence of floats
            (``len``, indexing, slicing, iteration, ``tolist()``, ``tobytes()``)
            that also exposes the buffer protocol, so ``array('d', bytes)``,
            ``numpy.frombuffer(results)`` or ``native.transform`` read it without a
            copy. It owns its memory (an anonymous mapping), which lives as long
            as the view or a view derived from it. And the stats of the run.

        Raises:
            TypeError, ValueError: ``data`` cannot be read as float64 (see
                ``pipeline.native.buffers``).
            StageError: a worker failed; the original exception is chained.
        """
        started = time.perf_counter()
        view = as_float64_view(data, "data")
        if len(view) == 0:
            return _empty_results(), DataStats.from_counts(
                TransformCounts.ZERO, time.perf_counter() - started
            )
        # Room for every input item; only the pages results are written to are ever touched.
        output_memory = mmap.mmap(-1, _DOUBLE_SIZE * len(view))
        counts = TransformCounts.ZERO
        with memoryview(output_memory) as output_bytes, doubles(output_bytes) as output:
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
        if counts.kept == 0:
            output_memory.close()
            return _empty_results(), DataStats.from_counts(counts, time.perf_counter() - started)
        output_memory.resize(_DOUBLE_SIZE * counts.kept)  # gives the unused tail back
        results = doubles(memoryview(output_memory))
        return results, DataStats.from_counts(counts, time.perf_counter() - started)

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


class _Functions(NamedTuple):
    """What one implementation provides to the stages."""

    transform: Transform
    transform_into: TransformInto
    move: Move


def _select(implementation: object) -> _Functions:
    """Return the functions ``implementation`` names."""
    if implementation == "native":
        from pipeline.native import compiled  # raises ImportError with build instructions

        return _Functions(compiled.transform, compiled.transform_into, compiled.move)
    if implementation == "reference":
        return _Functions(_transform_reference_checked, _transform_into_reference, _move_reference)
    raise ValueError(f"implementation must be 'native' or 'reference', got {implementation!r}")


def _transform_reference_checked(
    values: Float64Input,
) -> tuple[array.array[float], TransformCounts]:
    """Run the reference on ``values`` read exactly as the C core reads them.

    Without the check, a bytes chunk would iterate as small ints and an
    array('f') as float32 values; with it both implementations accept and
    reject the same inputs with the same messages.
    """
    return transform_reference(as_float64_view(values, "values"))


def _transform_into_reference(values: Float64Input, output: memoryview[float]) -> TransformCounts:
    """Run the reference on ``values`` and copy its results to the start of ``output``."""
    results, counts = _transform_reference_checked(values)
    output[: counts.kept] = doubles(memoryview(results))
    return counts


def _move_reference(source: memoryview[float], destination: memoryview[float]) -> None:
    """Copy ``source`` to the start of ``destination`` (holding the GIL)."""
    destination[: len(source)] = source


def _empty_results() -> memoryview[float]:
    """Return an empty result of the type ``process`` returns (an mmap cannot be empty)."""
    return doubles(memoryview(bytearray()))
