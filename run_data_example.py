#!/usr/bin/env python3
"""Run the production example: float64 data through the native stage; try `--help`."""

from launcher import launch

raise SystemExit(launch(__file__, "data"))
