"""The production pipeline of the classic example, with its hot loop in C.

input -> validation (drop NaN/Inf) -> business filter (drop negatives)
      -> transform (sqrt(x) * 2) -> post-validation (drop non-finite) -> output + stats

``DataPipeline.process(data)`` cuts ``data`` into chunks of ``batch_size`` items
(memoryview slices: no copies) and runs them through a ``Pipeline`` whose one
stage, ``TransformStage``, has ``thread_count`` workers. Each worker hands a
whole chunk to the C core, which runs with the GIL released, so the workers
transform chunks on different cores at the same time. Results come back in
input order. Each chunk's counts travel with its result and are summed by the
caller's thread, so counting takes no lock.

The Pipeline moves one chunk per handoff (``batch_size=1`` at the Pipeline
level: a chunk is already a batch of items) and holds at most a small
multiple of ``thread_count`` chunks in its queues, which is what keeps the
memory of ``DataPipeline.stream`` flat however long its input is.
"""

from __future__ import annotations

import array
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple, TypeAlias

from pipeline.buffers import Float64Input, as_float64_view
from pipeline.pipeline import Pipeline
from pipeline.reference import TransformCounts, transform_reference
from pipeline.stage import PipelineStage

__all__ = [
    "DataPipeline",
    "DataStats",
    "Implementation",
    "TransformResult",
    "TransformStage",
]

Implementation: TypeAlias = Literal["native", "reference"]
"""Which transform runs: the C core (``pipeline.native``) or the Python reference."""

Transform: TypeAlias = Callable[[Float64Input], tuple["array.array[float]", TransformCounts]]

# Chunks held in each queue per worker: enough that a worker never waits for
# the feeder, few enough that memory stays a handful of chunks.
_QUEUED_CHUNKS_PER_THREAD = 2


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
    doubles, see ``pipeline.reference``).
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
        self._transform = _select(implementation)

    def process(self, item: Float64Input) -> TransformResult:
        """Transform one chunk; runs in a worker thread, with the GIL released in C."""
        values, counts = self._transform(item)
        return TransformResult(values, counts)


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
        self.thread_count = _positive_int("thread_count", thread_count)
        self.batch_size = _positive_int("batch_size", batch_size)
        self.implementation = implementation
        _select(implementation)  # fail here, not in a worker, if it cannot run

    def process(self, data: Float64Input) -> tuple[array.array[float], DataStats]:
        """Transform all of ``data`` and return the kept results, in order, and the stats.

        Blocks until every chunk is done. ``data`` is read in place if it is a
        float64 buffer; any other iterable of floats is first copied into one.

        Raises:
            TypeError, ValueError: ``data`` cannot be read as float64 (see
                ``pipeline.buffers``).
            StageError: a worker failed; the original exception is chained.
        """
        started = time.perf_counter()
        view = as_float64_view(data, "data")
        chunks = (
            view[start : start + self.batch_size] for start in range(0, len(view), self.batch_size)
        )
        output: array.array[float] = array.array("d")
        counts = TransformCounts.ZERO
        for values, chunk_counts in self.stream(chunks):
            output.extend(values)
            counts += chunk_counts
        return output, DataStats.from_counts(counts, time.perf_counter() - started)

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


def _select(implementation: object) -> Transform:
    """Return the transform function ``implementation`` names."""
    if implementation == "native":
        from pipeline import native  # raises ImportError with build instructions

        return native.transform
    if implementation == "reference":
        return _transform_reference_checked
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


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
