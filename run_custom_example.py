#!/usr/bin/env python3
"""Run the text pipeline made by subclassing PipelineStage; try `--help`."""

import os
import sys
from pathlib import Path

try:
    from pipeline.cli import main
except ModuleNotFoundError as exc:
    if exc.name != "pipeline":
        raise
    # Not installed in this interpreter: use the project's virtualenv if there is one.
    venv = Path(__file__).resolve().parent / ".venv"
    if (venv / "bin" / "python").exists() and Path(sys.prefix).resolve() != venv.resolve():
        os.execv(venv / "bin" / "python", [str(venv / "bin" / "python"), __file__, *sys.argv[1:]])
    print("pipeline is not installed: run `make install` first", file=sys.stderr)
    raise SystemExit(2) from None

raise SystemExit(main(["custom", *sys.argv[1:]]))
