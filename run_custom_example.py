#!/usr/bin/env python3
"""Run the text pipeline made by subclassing PipelineStage; try `--help`."""

from launcher import launch

raise SystemExit(launch(__file__, "custom"))
