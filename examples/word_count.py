"""Count words with a flat-map stage: one line in, zero or more words out, on four workers.

`FlatMapStage.expand` returns an iterable per item, and the pipeline passes its items on
one by one. The count matches a plain sequential loop: with four workers the outputs
still come out in input order, and a `Counter` does not care anyway.

Run: .venv/bin/python examples/word_count.py
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable

from pipeline import FlatMapStage, Pipeline
from pipeline.stages import PredicateStage

TEXT = """\
A pipeline is a chain of stages. Each stage runs in its own threads,
and the stages hand items to each other through bounded queues.
When a stage is slow, the queue before it fills up, and the stage before
that one waits: the queues turn a fast producer into a patient one.
When a stage fails, every queue is shut down, every thread wakes up,
and the caller gets the error, with the original exception chained to it.
"""
STOP_WORDS = frozenset({"a", "and", "the", "to", "of", "in", "its", "it", "is", "each", "that"})
WORD = re.compile(r"[a-z']+")


class Words(FlatMapStage[str, str]):
    """Split a line into its lower-case words."""

    def expand(self, item: str) -> Iterable[str]:
        return WORD.findall(item.lower())


def main() -> int:
    lines = TEXT.splitlines() * 500
    pipeline = Pipeline(
        Words(workers=4) >> PredicateStage(lambda word: word not in STOP_WORDS, name="no-stop")
    )
    started = time.perf_counter()
    counts = Counter(pipeline.stream(lines))
    elapsed = time.perf_counter() - started

    expected = Counter(
        word for line in lines for word in WORD.findall(line.lower()) if word not in STOP_WORDS
    )
    assert counts == expected, "the pipeline must count what a plain loop counts"
    print(f"{sum(counts.values())} words in {len(lines)} lines, {elapsed:.3f} s, 4 workers")
    for word, count in counts.most_common(5):
        print(f"{count:6d}  {word}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
