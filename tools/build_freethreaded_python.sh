#!/usr/bin/env bash
# Build (once) and print the path of a free-threaded CPython (python3.13t by default):
# tools/build_python.sh VERSION --free-threaded, which says how and where it is cached.
#
# Usage: tools/build_freethreaded_python.sh [VERSION]   -> prints the interpreter's path
set -euo pipefail
exec "$(dirname "$0")/build_python.sh" "${1:-3.13}" --free-threaded
