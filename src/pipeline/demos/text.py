"""A text pipeline made by subclassing the stage classes: the `custom` example.

normalise whitespace -> title-case -> keep lines of at least `min_length` characters;
`run` streams lines through it and prints the lines kept.

`NormaliseWhitespace` shows the per-worker lifecycle: `setup()` runs once in each
worker thread and keeps that worker's resources on `self.local`, `process()` uses
them, and `teardown()` runs once in the same thread at the end (even after a
failure) and logs how many lines that worker handled. With debug logging on, each
stage logs what it did to every line.
"""

from __future__ import annotations

import contextlib
import logging
import re
import string
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from pipeline._checks import int_at_least
from pipeline.demos._observing import progress_bars, report_of
from pipeline.pipeline import Pipeline
from pipeline.stage import FilteringStage, PipelineStage

__all__ = [
    "SAMPLE_TEXT",
    "MinimumLength",
    "NormaliseWhitespace",
    "TitleCase",
    "run",
    "text_pipeline",
]

logger = logging.getLogger(__name__)

SAMPLE_TEXT = """\
  the   quick brown fox    jumps over the lazy dog
a short line
\tthreads   share   memory,\tso   they   share   mistakes
ok

bounded  queues   turn   a   fast   producer   into   a   patient   one
the first failure stops   every   stage,  and   nobody   hangs
tiny
"""


class NormaliseWhitespace(PipelineStage[str, str]):
    """Collapse each run of whitespace to one space and strip both ends."""

    def setup(self) -> None:
        # One pattern and one counter per worker thread. A compiled pattern could in
        # fact be shared (re patterns are thread-safe); it stands here for a resource
        # that cannot be, such as a database connection or a scratch buffer.
        self.local.whitespace = re.compile(r"\s+")
        self.local.lines = 0

    def process(self, item: str) -> str:
        self.local.lines += 1
        normalised: str = self.local.whitespace.sub(" ", item).strip()
        logger.debug("%s: %r -> %r", self.name, item, normalised)
        return normalised

    def teardown(self) -> None:
        # Runs in the same worker thread as setup(), so it sees that worker's counter.
        logger.info("%s: this worker normalised %d lines", self.name, self.local.lines)


class TitleCase(PipelineStage[str, str]):
    """Capitalise the first letter of every word ("don't" becomes "Don't", not "Don'T")."""

    def process(self, item: str) -> str:
        titled = string.capwords(item, " ")
        logger.debug("%s: %r -> %r", self.name, item, titled)
        return titled


class MinimumLength(FilteringStage[str]):
    """Keep the lines of at least `min_length` characters.

    Raises:
        TypeError: `min_length` is not an int.
        ValueError: `min_length` is negative.
    """

    def __init__(self, min_length: int, *, name: str | None = None, workers: int = 1) -> None:
        super().__init__(name, workers=workers)
        self.min_length = int_at_least("min_length", min_length, 0)

    def keep(self, item: str) -> bool:
        kept = len(item) >= self.min_length
        logger.debug("%s: %r %s", self.name, item, "kept" if kept else "dropped")
        return kept


def text_pipeline(min_length: int = 20, workers: int = 1) -> Pipeline[str, str]:
    """Return the pipeline normalise -> title-case -> keep long lines, `workers` threads each.

    Lines come out in input order whatever the number of workers.
    """
    chain = (
        NormaliseWhitespace(workers=workers)
        >> TitleCase(workers=workers)
        >> MinimumLength(min_length, workers=workers)
    )
    return Pipeline(chain)


def run(
    lines: Iterable[str],
    *,
    min_length: int = 20,
    workers: int = 1,
    quiet: bool = False,
    report: bool = False,
    progress: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Stream `lines` through `text_pipeline` and print each line kept as it comes out.

    `lines` is read lazily, by the pipeline's source thread; line ends are stripped.
    The kept lines go to `out` (default: stdout); a closing count, and the report if
    asked for, go to `err` (default: stderr), so that `out` holds only the text.
    Blocks until the input is exhausted.

    Args:
        lines: the input text, one line per item (an open file will do).
        min_length: keep lines of at least this many characters.
        workers: threads per stage.
        quiet: print only the kept lines.
        report: print the bottleneck report to `err` after the run.
        progress: draw live bars per stage on stderr during the run.
        out, err: where to print.

    Returns:
        0.

    Raises:
        StageError: a stage failed, or reading `lines` did (an undecodable file).
        ImportError: `progress` was asked for and tqdm is not installed.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    pipeline = text_pipeline(min_length=min_length, workers=workers)
    bars = progress_bars(pipeline, progress)
    started = time.perf_counter()
    kept = 0
    # Closed on the way out, so that an early exit (a closed stdout) joins every thread now.
    outputs = pipeline.stream(line.rstrip("\r\n") for line in lines)
    with bars, contextlib.closing(outputs):
        for line in outputs:
            print(line, file=out)
            kept += 1
    elapsed = time.perf_counter() - started
    if report:
        print(report_of(pipeline), file=err)
    if not quiet:
        print(f"kept {kept} lines of at least {min_length} characters in {elapsed:.6f} s", file=err)
    return 0
