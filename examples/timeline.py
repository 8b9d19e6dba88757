"""Draw a run's timeline: see backpressure build up when a fast source meets a slow stage.

The source is slow for its first 120 items (every stage waits for it: starved), then
fast. From then on `enrich`, which takes 1 ms per item, is the slowest link: its input
queue fills to the brim, and the `parse` workers before it spend their time blocked
(red), while `write` after it waits for items. Needs `pipeline[plot]` (matplotlib).

Run: .venv/bin/python examples/timeline.py [PICTURE.png]
"""

from __future__ import annotations

import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline import Pipeline
from pipeline.observe import TimelineRecorder, format_report, plot_timeline
from pipeline.stages import FunctionStage

ITEMS = 480
SLOW_START = 120  # items the source produces slowly before speeding up
pause = threading.Event()  # never set: waiting on it stands in for slow I/O


def source() -> Iterator[int]:
    for item in range(ITEMS):
        if item < SLOW_START:
            pause.wait(0.0015)
        yield item


def taking(seconds: float) -> Callable[[int], int]:
    """Return a step that takes `seconds` per item."""

    def step(item: int) -> int:
        pause.wait(seconds)
        return item

    return step


def main(argv: list[str]) -> int:
    default = Path(tempfile.gettempdir()) / "pipeline_timeline.png"
    path = Path(argv[0]) if argv else default
    parse = FunctionStage(taking(0.0003), name="parse", workers=2)
    enrich = FunctionStage(taking(0.001), name="enrich")
    write = FunctionStage(taking(0.0002), name="write")
    recorder = TimelineRecorder()
    pipeline = Pipeline(parse >> enrich >> write, queue_size=48, batch_size=8, observer=recorder)
    with recorder.recording(pipeline):
        pipeline.run(source())
    print(format_report(pipeline.stats()))
    plot_timeline(
        recorder.events, recorder.samples, path, title="a slow source, then a slow enrich stage"
    )
    print(f"saved the timeline to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
