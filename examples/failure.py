"""What a failure looks like: the run stops, and `StageError` tells you where and why.

The error names the stage and the item it failed on; the original exception is its
`__cause__`, traceback included. Every worker ran its `teardown`, and no thread is left.

Run: .venv/bin/python examples/failure.py
"""

from __future__ import annotations

import threading
import traceback

from pipeline import Pipeline, PipelineStage, StageError
from pipeline.stages import FunctionStage

RECORDS = ["ada,36", "alan,41", "grace,eighty-five", "edsger,72"]


class ParseRecord(PipelineStage[str, tuple[str, int]]):
    """Turn "name,age" into (name, age)."""

    def setup(self) -> None:
        self.local.parsed = 0

    def process(self, item: str) -> tuple[str, int]:
        name, age = item.split(",")
        parsed = (name, int(age))
        self.local.parsed += 1
        return parsed

    def teardown(self) -> None:
        thread = threading.current_thread().name
        print(f"teardown ran in {thread} after parsing {self.local.parsed} records")


def greet(person: tuple[str, int]) -> str:
    name, age = person
    return f"{name.title()} is {age}"


def main() -> int:
    pipeline = Pipeline(ParseRecord() >> FunctionStage(greet))
    try:
        pipeline.run(RECORDS)
    except StageError as error:
        print(f"error:  {error}")
        print(f"stage:  {error.stage}")
        print(f"item:   {error.item!r}")
        print(f"cause:  {error.__cause__!r}")
        if error.__cause__ is not None:
            where = traceback.extract_tb(error.__cause__.__traceback__)[-1]
            print(f"raised: line {where.lineno} of {where.name}(): {where.line}")
        left = [thread.name for thread in threading.enumerate()]
        print(f"threads still running: {left}")
        return 0
    print("expected a StageError")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
