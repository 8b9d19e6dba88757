"""Say in one line what to install when the C stage cannot be built here, before pip tries.

`make install` runs this first: without a C compiler or Python's headers, building the
cffi extension ends in a page of build log that never says what is missing. The
compiler is the one setuptools will call: `$CC` if set, else the one Python was built
with. Exit status 0 when both are there; 1, with one line on stderr, when one is missing.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

INSTALL_HINT = (
    "install a C compiler and Python's headers (Debian/Ubuntu: sudo apt-get install gcc "
    "python3-dev; Fedora: sudo dnf install gcc python3-devel; macOS: xcode-select --install)"
)


def missing_build_tool() -> str | None:
    """Return what is missing to build a C extension for this Python, or None."""
    compiler = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    program = (shlex.split(compiler) or ["cc"])[0]
    if shutil.which(program) is None:
        return f"no C compiler ({program!r} not found)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers} not found)"
    return None


def main() -> int:
    """Print one line on stderr and return 1 if a build tool is missing, else return 0."""
    missing = missing_build_tool()
    if missing is None:
        return 0
    print(f"pipeline's C stage cannot be built: {missing}; {INSTALL_HINT}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
