"""Tests for the package as installed: its public names, its types, its dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pipeline

CORE_MODULES = [
    "errors",
    "safequeue",
    "stage",
    "worker",
    "batching",
    "pipeline",
    "stats",
    "_checks",
]


def test_every_public_name_is_importable_and_listed_once() -> None:
    assert [name for name in pipeline.__all__ if not hasattr(pipeline, name)] == []
    assert len(set(pipeline.__all__)) == len(pipeline.__all__)


def test_the_package_ships_its_type_information() -> None:
    assert (Path(pipeline.__file__).parent / "py.typed").exists()


def test_importing_the_package_loads_only_the_standard_library() -> None:
    """The core, and everything `import pipeline` brings, needs no third-party package."""
    script = (
        "import sys\n"
        "at_startup = set(sys.modules)\n"  # site hooks, such as setuptools' .pth file
        "import pipeline\n"
        f"for name in {CORE_MODULES!r}: __import__('pipeline.' + name)\n"
        "loaded = {m.split('.')[0] for m in set(sys.modules) - at_startup}\n"
        "print(sorted(loaded - set(sys.stdlib_module_names) - {'pipeline'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]"
