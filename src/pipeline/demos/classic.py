"""The classic demo trio: multiply by 2, add 10, keep the even results; and `run`, the demo.

`run` runs the trio over 1..N and prints a summary. x*2+10 is always even, so the
filter of the classic chain keeps every item; the summary then runs the same trio with
x*3, whose odd results the filter drops, so that every stage is seen doing its job.

The classic stages override `process_batch` with a list comprehension that inlines
their work, the fastest batch loop Python has; their `process` (or `keep`) shows the
same work one item at a time, and a subclass that overrides it gets the per-item path
instead. With info logging on (`pipeline demo -v`), they log what happened to every item
and `run` logs every final output, as the classic pipeline example prints them:
`[INFO] MultiplyStage processing item: 1 -> 2` ... `[INFO] Final output: 12`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

from pipeline.demos._observing import progress_bars, report_of
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, Pipeline
from pipeline.stage import FilteringStage, PipelineStage, StageChain, item_failure

__all__ = ["DROPPING_FACTOR", "SHOWN_OUTPUTS", "AddStage", "FilterStage", "MultiplyStage", "run"]

logger = logging.getLogger(__name__)

SHOWN_OUTPUTS = 20  # the summary lists at most this many outputs
DROPPING_FACTOR = 3  # x*3+10 is odd for odd x, so the filter has something to drop


class MultiplyStage(PipelineStage[int, int]):
    """The classic first stage: multiply each item by `factor` (2)."""

    def __init__(self, factor: int = 2, *, name: str | None = None, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.factor = factor

    def process(self, item: int) -> int:
        return item * self.factor

    def process_batch(self, items: list[int]) -> list[int]:
        if type(self).process is not MultiplyStage.process:
            return super().process_batch(items)  # a subclass changed what one item does
        factor = self.factor
        pending = iter(items)
        try:
            outputs = [item * factor for item in pending]
        except Exception as exc:
            raise item_failure(items, pending) from exc
        _log_pairs(self.name, items, outputs)
        return outputs


class AddStage(PipelineStage[int, int]):
    """The classic second stage: add `amount` (10) to each item."""

    def __init__(self, amount: int = 10, *, name: str | None = None, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.amount = amount

    def process(self, item: int) -> int:
        return item + self.amount

    def process_batch(self, items: list[int]) -> list[int]:
        if type(self).process is not AddStage.process:
            return super().process_batch(items)  # a subclass changed what one item does
        amount = self.amount
        pending = iter(items)
        try:
            outputs = [item + amount for item in pending]
        except Exception as exc:
            raise item_failure(items, pending) from exc
        _log_pairs(self.name, items, outputs)
        return outputs


class FilterStage(FilteringStage[int]):
    """The classic third stage: keep the even items."""

    def keep(self, item: int) -> bool:
        return item % 2 == 0

    def process_batch(self, items: list[int]) -> list[int]:
        if type(self).keep is not FilterStage.keep:
            return super().process_batch(items)  # a subclass changed what is kept
        pending = iter(items)
        try:
            outputs = [item for item in pending if item % 2 == 0]
        except Exception as exc:
            raise item_failure(items, pending) from exc
        if logger.isEnabledFor(logging.INFO):
            for item in items:
                kept = "kept" if item % 2 == 0 else "dropped"
                logger.info("%s processing item: %r %s", self.name, item, kept)
        return outputs


def run(
    items: int = 5,
    *,
    workers: int = 1,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    quiet: bool = False,
    report: bool = False,
    progress: bool = False,
    out: TextIO | None = None,
) -> int:
    """Run MultiplyStage -> AddStage -> FilterStage over 1..`items` and print what it did.

    Prints the outputs and a summary to `out` (default: stdout), then the outputs of the
    same chain with x*3, to show the filter dropping items; with `quiet`, only the list
    of outputs of the classic chain. Blocks until both runs end.

    Args:
        items: the input is 1..items.
        workers: threads per stage.
        queue_size, batch_size: as for `Pipeline`.
        quiet: print only the outputs.
        report: print the bottleneck report of the classic run after the summary.
        progress: draw live bars per stage on stderr while the classic chain runs.
        out: where to print.

    Returns:
        0.

    Raises:
        StageError: a stage failed.
        ImportError: `progress` was asked for and tqdm is not installed.
    """
    out = sys.stdout if out is None else out
    pipeline = Pipeline(_chain(2, workers), queue_size=queue_size, batch_size=batch_size)
    logger.info("running %r over 1..%d", pipeline, items)
    bars = progress_bars(pipeline, progress, total=items)
    started = time.perf_counter()
    with bars:
        outputs = pipeline.run(range(1, items + 1))
    elapsed = time.perf_counter() - started
    logger.info("finished in %.6f s", elapsed)
    for output in outputs:
        logger.info("Final output: %r", output)
    if quiet:
        print(outputs, file=out)
    else:
        print(f"pipeline:  {' -> '.join(stage.name for stage in pipeline.stages)}", file=out)
        print(f"workers:   {workers} per stage", file=out)
        print(f"items in:  {items}", file=out)
        print(f"items out: {len(outputs)}", file=out)
        print(f"outputs:   {_shortened(outputs)}", file=out)
        print(f"elapsed:   {elapsed:.6f} s", file=out)
    if report:  # under its own run's summary, before the second run prints anything
        print(f"\n{report_of(pipeline)}", file=out)
    if not quiet:
        _show_the_filter_dropping(items, workers, queue_size, batch_size, out)
    return 0


def _show_the_filter_dropping(
    items: int, workers: int, queue_size: int, batch_size: int, out: TextIO
) -> None:
    """Run the trio with x*3 over the same items and print what the filter kept."""
    pipeline = Pipeline(
        _chain(DROPPING_FACTOR, workers), queue_size=queue_size, batch_size=batch_size
    )
    logger.info("running %r with x*%d over 1..%d", pipeline, DROPPING_FACTOR, items)
    outputs = pipeline.run(range(1, items + 1))
    print(
        f"\nx*2+10 is always even, so FilterStage kept every item; "
        f"with x*{DROPPING_FACTOR} it drops the odd results:",
        file=out,
    )
    print(
        f"outputs:   {_shortened(outputs)} (FilterStage kept {len(outputs)} of {items})",
        file=out,
    )


def _chain(factor: int, workers: int) -> StageChain[int, int]:
    return (
        MultiplyStage(factor, workers=workers)
        >> AddStage(workers=workers)
        >> FilterStage(workers=workers)
    )


def _shortened(outputs: list[int]) -> str:
    shown = repr(outputs[:SHOWN_OUTPUTS])
    if len(outputs) > SHOWN_OUTPUTS:
        shown = f"{shown[:-1]}, ...] ({len(outputs) - SHOWN_OUTPUTS} more)"
    return shown


def _log_pairs(stage: str, items: list[int], outputs: list[int]) -> None:
    """Log which stage turned which item into what, when info logging is on."""
    if logger.isEnabledFor(logging.INFO):
        for item, output in zip(items, outputs, strict=True):
            logger.info("%s processing item: %r -> %r", stage, item, output)
