"""A script for the Ctrl-C test: a process stage busy with slow items, waiting for SIGINT.

It prints "ready" and the worker processes' ids once the first output is in, then keeps
consuming; on KeyboardInterrupt it prints "interrupted" and exits 0.
Usage: python ctrl_c_processes.py START_METHOD  (with the tests folder on PYTHONPATH)
"""

from __future__ import annotations

import multiprocessing
import sys

import remote_work

from pipeline import Pipeline
from pipeline.executors import ProcessStage

if __name__ == "__main__":
    stage = ProcessStage(remote_work.SlowSquare(0.5, workers=2), start_method=sys.argv[1])
    try:
        for count, _ in enumerate(Pipeline(stage, batch_size=1).stream(range(40))):
            if count == 0:
                pids = sorted(child.pid or 0 for child in multiprocessing.active_children())
                print("ready", *pids, flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
    print("finished without an interrupt", flush=True)
    sys.exit(1)
