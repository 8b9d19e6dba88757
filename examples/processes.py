"""Run pure-Python computation in worker processes: `ProcessStage` around a stage.

Counting Collatz steps is plain Python arithmetic: it holds the GIL, so two threads of
it would take turns. `ProcessStage(Collatz(workers=2))` runs the same stage in two
worker processes it starts for the run and stops after it; `setup()` runs once in each
(here it notes the process id), and the outputs come back in input order. The stage's
class must be importable by name (defined at the top of a module), and the script needs
the `if __name__ == "__main__":` guard: the worker processes import it.

Run: .venv/bin/python examples/processes.py
"""

from __future__ import annotations

import os

from pipeline import Pipeline, PipelineStage
from pipeline.executors import ProcessStage

NUMBERS = range(1, 20_001)


def collatz_steps(number: int) -> int:
    """Return how many steps take `number` to 1 (3n + 1 when odd, n / 2 when even)."""
    steps = 0
    while number != 1:
        number = number // 2 if number % 2 == 0 else 3 * number + 1
        steps += 1
    return steps


class Collatz(PipelineStage[int, tuple[int, int]]):
    """Map a number to (its Collatz steps, the id of the process that counted them)."""

    def setup(self) -> None:
        self.local.pid = os.getpid()  # once per worker process

    def process(self, item: int) -> tuple[int, int]:
        return collatz_steps(item), self.local.pid


def main() -> int:
    results = Pipeline(ProcessStage(Collatz(workers=2))).run(NUMBERS)
    steps = [count for count, _ in results]
    pids = sorted({pid for _, pid in results})
    assert steps == [collatz_steps(number) for number in NUMBERS], "same as a plain loop"
    assert os.getpid() not in pids, "none of it ran in this process"
    longest = max(NUMBERS, key=lambda number: steps[number - 1])
    print(f"{len(steps):,} numbers, in input order; the longest: {longest} ({max(steps)} steps)")
    print(f"counted in worker processes {pids}, not in this one ({os.getpid()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
