"""Watch a run with a live bar per stage: items in, items out, how busy, how full the queue.

`Progress` draws one tqdm bar per stage, moved ten times a second by the pipeline's
monitor thread; nothing wraps the source or the stages. Here `enrich` waits 1 ms per
item, so it is the busy one and its input queue fills, while `parse` and `store` keep
up. Bars go to stderr, and only on a terminal (`disable=False`, as here, draws them
anywhere, a log file included). Needs `pipeline[progress]` (tqdm).

Run: .venv/bin/python examples/progress.py
"""

from __future__ import annotations

import threading

from pipeline import Pipeline
from pipeline.observe import Progress
from pipeline.stages import FunctionStage

ITEMS = 1500
pause = threading.Event()  # never set: waiting on it stands in for a slow call


def parse(line: int) -> int:
    return line


def enrich(record: int) -> int:
    pause.wait(0.001)
    return record * 2


def store(record: int) -> int:
    return record


def main() -> int:
    chain = (
        FunctionStage(parse, name="parse")
        >> FunctionStage(enrich, name="enrich", workers=2)
        >> FunctionStage(store, name="store")
    )
    pipeline = Pipeline(chain, queue_size=64, batch_size=16)
    with Progress(pipeline, total=ITEMS, disable=False):
        stored = pipeline.run(range(ITEMS))
    assert stored == [record * 2 for record in range(ITEMS)]
    stats = pipeline.stats()
    enriched = stats.stage("enrich")
    busy = enriched.share_of(enriched.busy_seconds, stats.elapsed_seconds)
    print(f"{len(stored)} records stored in {stats.elapsed_seconds:.2f} s; enrich busy {busy:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
