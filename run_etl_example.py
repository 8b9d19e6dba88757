#!/usr/bin/env python3
"""Run the ETL demo (CSV -> validate -> clean -> enrich -> SQLite); `--stream` for windows."""

from launcher import launch

raise SystemExit(launch(__file__, "etl"))
