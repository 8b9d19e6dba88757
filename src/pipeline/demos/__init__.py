"""Application code that `python -m pipeline` runs; only `pipeline.cli` imports it.

- `classic`: the Multiply/Add/Filter trio;
- `text`: a text pipeline with per-worker setup;
- `sensors`: the sensor-data example on the native production stage;
- `etl`: the ETL job (CSV to SQLite with quality rules) and the windowed sensor stream.
"""
