"""Run the command line: `python -m pipeline --help`."""

from pipeline.cli import main

raise SystemExit(main())
