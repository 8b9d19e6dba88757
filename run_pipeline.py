#!/usr/bin/env python3
"""Run the classic demo (x*2 -> x+10 -> keep evens over 1..N); try `--help`."""

from launcher import launch

raise SystemExit(launch(__file__, "demo"))
