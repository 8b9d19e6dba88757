"""The demos: application code that `python -m pipeline` runs, and the classic trio.

- `classic`: the Multiply/Add/Filter trio, `from pipeline.demos import MultiplyStage`;
- `text`: a text pipeline with per-worker setup;
- `sensors`: the sensor-data example on the native production stage;
- `etl`: the ETL job (CSV to SQLite with quality rules) and the windowed sensor stream.

Within the package only `pipeline.cli` imports the demos; the trio is here for learners
who follow the classic example and for the benchmarks that measure it.
"""

from pipeline.demos.classic import AddStage, FilterStage, MultiplyStage

__all__ = ["AddStage", "FilterStage", "MultiplyStage"]
