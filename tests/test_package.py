"""Tests for the package as installed: its public names, its types, its dependencies."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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


# installing: the distribution's name, its version, its command, its build check

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "threaded-pipeline"  # `pipeline` on the package index is an unrelated project
# What may follow `pip install` in the code and the docs: this project's extras, quoted so
# that zsh does not expand the brackets, or a source checkout.
PIP_INSTALL_ARGUMENT = re.compile(
    r"'threaded-pipeline\[[a-z,]+\]'|threaded-pipeline|'\.\[[a-z,]+\]'|-e|\.|--\S+"
)


def test_the_distribution_is_named_threaded_pipeline_and_versioned_by_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == DISTRIBUTION
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "pipeline.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", pipeline.__version__)
    assert importlib.metadata.metadata(DISTRIBUTION)["Name"] == DISTRIBUTION


def test_the_console_script_pipeline_is_the_command_line() -> None:
    scripts = importlib.metadata.distribution(DISTRIBUTION).entry_points.select(
        group="console_scripts"
    )
    assert [(script.name, script.value) for script in scripts] == [
        ("pipeline", "pipeline.cli:main")
    ]
    script = Path(sys.executable).parent / "pipeline"
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    result = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"pipeline {pipeline.__version__}\n")


def test_every_pip_install_in_the_code_and_docs_names_this_project() -> None:
    paths = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]
    wrong = [
        f"{path.relative_to(ROOT)}: pip install {argument}"
        for path in paths
        for argument in re.findall(r"pip install ([^\s`\"]+)", path.read_text(encoding="utf-8"))
        if not PIP_INSTALL_ARGUMENT.fullmatch(argument)
    ]
    assert wrong == []


def check_compiler(**environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "csrc" / "check_compiler.py")],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_compiler_check_passes_where_the_extension_was_built() -> None:
    result = check_compiler()
    assert (result.returncode, result.stderr) == (0, "")


def test_the_compiler_check_says_in_one_line_what_to_install() -> None:
    result = check_compiler(CC="/no/such/cc")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "pipeline's C stage cannot be built: no C compiler ('/no/such/cc' not found); install "
        "a C compiler and Python's headers (Debian/Ubuntu: sudo apt-get install gcc "
        "python3-dev; Fedora: sudo dnf install gcc python3-devel; macOS: xcode-select --install)"
    ]


def test_make_install_without_a_compiler_stops_before_building(tmp_path: Path) -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make here")
    venv = tmp_path / "venv"
    result = subprocess.run(
        [make, "--no-print-directory", "install", f"VENV={venv}", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        env={**os.environ, "CC": "/no/such/cc"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.splitlines()[0].startswith(
        "pipeline's C stage cannot be built: no C compiler ('/no/such/cc' not found)"
    )
    assert "error:" not in result.stderr.lower()  # no build log
    assert not venv.exists()
