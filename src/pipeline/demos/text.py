"""A text pipeline made by subclassing the stage classes: the `custom` example.

normalise whitespace -> title-case -> keep lines of at least `min_length` characters.

`NormaliseWhitespace` shows the per-worker lifecycle: `setup()` runs once in each
worker thread and keeps that worker's resources on `self.local`, `process()` uses
them, and `teardown()` runs once in the same thread at the end (even after a
failure) and logs how many lines that worker handled.
"""

from __future__ import annotations

import logging
import re
import string

from pipeline._checks import int_at_least
from pipeline.pipeline import Pipeline
from pipeline.stage import FilteringStage, PipelineStage

__all__ = ["SAMPLE_TEXT", "MinimumLength", "NormaliseWhitespace", "TitleCase", "text_pipeline"]

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
        return normalised

    def teardown(self) -> None:
        # Runs in the same worker thread as setup(), so it sees that worker's counter.
        logger.info("%s: this worker normalised %d lines", self.name, self.local.lines)


class TitleCase(PipelineStage[str, str]):
    """Capitalise the first letter of every word ("don't" becomes "Don't", not "Don'T")."""

    def process(self, item: str) -> str:
        return string.capwords(item, " ")


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
        return len(item) >= self.min_length


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
