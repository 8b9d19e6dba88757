"""Overlap slow I/O: eight workers wait for eight slow calls at once.

`time.sleep` stands in for a network or disk call. Like real I/O, it releases the GIL
while it waits, so the threads of a stage overlap their waiting and the stage runs about
`workers` times faster. (Pure-Python computation holds the GIL and would not speed up
this way; that is what the C stage of `pipeline.native.compiled` is for.)

Run: .venv/bin/python examples/slow_io.py
"""

from __future__ import annotations

import time

from pipeline import Pipeline, PipelineStage

REQUESTS = 64
DELAY_SECONDS = 0.005  # each "request" takes 5 ms


class Fetch(PipelineStage[int, str]):
    """Pretend to fetch page `item` over a slow network."""

    def process(self, item: int) -> str:
        time.sleep(DELAY_SECONDS)
        return f"page {item}"


def fetch_all(workers: int) -> tuple[list[str], float]:
    started = time.perf_counter()
    pages = Pipeline(Fetch(workers=workers)).run(range(REQUESTS))
    return pages, time.perf_counter() - started


def main() -> int:
    one_worker, one_worker_seconds = fetch_all(workers=1)
    eight_workers, eight_workers_seconds = fetch_all(workers=8)
    assert one_worker == eight_workers, "same pages, in the same order"
    print(f"{REQUESTS} requests of {DELAY_SECONDS * 1000:.0f} ms each")
    print(f"1 worker:  {one_worker_seconds:.3f} s")
    print(f"8 workers: {eight_workers_seconds:.3f} s")
    print(f"speed-up:  {one_worker_seconds / eight_workers_seconds:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
