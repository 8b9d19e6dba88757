"""What the run_*.py launchers share: find the package, then hand over to `pipeline.cli`.

A launcher may be started by a Python that does not have `pipeline` installed (a plain
`./run_pipeline.py` on a fresh machine after `make install`); it then re-runs itself
with the project's `.venv`, or says how to create it.
"""

import os
import sys
from pathlib import Path


def launch(script: str, command: str) -> int:
    """Run `pipeline.cli.main([command, *arguments])` and return its exit code."""
    try:
        from pipeline.cli import main
    except ModuleNotFoundError as exc:
        if exc.name != "pipeline":
            raise
        venv = Path(script).resolve().parent / ".venv"
        venv_python = venv / "bin" / "python"
        if venv_python.exists() and Path(sys.prefix).resolve() != venv.resolve():
            os.execv(venv_python, [str(venv_python), script, *sys.argv[1:]])
        print("pipeline is not installed: run `make install` first", file=sys.stderr)
        return 2
    return main([command, *sys.argv[1:]])
