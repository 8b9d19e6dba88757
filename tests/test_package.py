"""Tests for the package as installed: its public names, its types, its dependencies."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
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
    r"|dist/threaded_pipeline-\S+"
)


def test_the_distribution_is_named_threaded_pipeline_and_versioned_by_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["name"] == DISTRIBUTION
    assert project["project"]["dynamic"] == ["version", "dependencies"]
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


# the release: the sdist, the wheels, and the C stage optional at install


def build(tmp_path: Path, *arguments: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m build ARGUMENTS --outdir tmp_path/dist` on a copy of the checkout.

    Without build isolation the build uses this environment's setuptools and cffi, so it
    needs no network. The copy leaves out what a build or a venv wrote, so that nothing
    compiled before (a `build/` folder, an in-place extension) can stand in for a build.
    """
    pytest.importorskip("build", reason="the dev extra installs build")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=UNBUILT)
    where = ["--outdir", str(tmp_path / "dist"), str(source)]
    return subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", *arguments, *where],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


UNBUILT = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "*.so",
    "*.o",
    "_native.c",
    "results",
)


def wheel_of(tmp_path: Path) -> zipfile.ZipFile:
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    return zipfile.ZipFile(wheel)


def requirements(wheel: zipfile.ZipFile) -> list[str]:
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    return [line for line in text.splitlines() if line.startswith("Requires-Dist:")]


SDIST_MUST_HOLD = [
    "LICENSE",
    "CHANGELOG.md",
    "README.md",
    "pyproject.toml",
    "setup.py",
    "Makefile",
    "csrc/transform.c",
    "csrc/transform.h",
    "csrc/build_native.py",
    "csrc/check_compiler.py",
    "src/pipeline/py.typed",
    "src/pipeline/native/_native.pyi",
    "src/pipeline/observe/dashboard.html",
    "tests/conftest.py",
    "tests/support.py",
    "tests/core/test_pipeline.py",
    "docs/tutorial.md",
    "mkdocs.yml",
    "tools/docs_hooks.py",
    "examples",
    "benchmarks/suite.py",
    "run_pipeline.py",
    "launcher.py",
]
SDIST_MUST_NOT_HOLD = re.compile(
    r"(^|/)(\.venv|\.venv-ft|\.venv-314|__pycache__|\.mypy_cache|\.ruff_cache|\.pytest_cache|build|dist"
    r"|results)/|\.(so|o|pyc)$|src/pipeline/native/_native\.c$|\.git(/|$)"
)


@pytest.mark.c_stage
def test_the_sdist_holds_what_builds_and_tests_the_package_and_its_wheel_is_abi3(
    tmp_path: Path,
) -> None:
    result = build(tmp_path, PIPELINE_NATIVE="required")
    assert result.returncode == 0, result.stderr
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    missing = [wanted for wanted in SDIST_MUST_HOLD if not any(n.startswith(wanted) for n in names)]
    assert missing == []
    assert [name for name in names if SDIST_MUST_NOT_HOLD.search(name)] == []
    wheel = wheel_of(tmp_path)
    assert wheel.filename is not None
    assert Path(wheel.filename).name.startswith(
        f"threaded_pipeline-{pipeline.__version__}-cp311-abi3-"
    )
    names = wheel.namelist()
    assert "pipeline/native/_native.abi3.so" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert requirements(wheel)[0] == "Requires-Dist: cffi>=1.17"
    twine = subprocess.run(
        [
            sys.executable,
            "-m",
            "twine",
            "check",
            "--strict",
            *map(str, (tmp_path / "dist").iterdir()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert twine.returncode == 0, twine.stdout + twine.stderr


def test_with_native_skip_the_wheel_is_pure_python_and_needs_no_cffi(tmp_path: Path) -> None:
    result = build(tmp_path, "--wheel", PIPELINE_NATIVE="skip")
    assert result.returncode == 0, result.stderr
    wheel = wheel_of(tmp_path)
    assert wheel.filename is not None
    assert Path(wheel.filename).name == f"threaded_pipeline-{pipeline.__version__}-py3-none-any.whl"
    assert not [name for name in wheel.namelist() if name.endswith(".so")]
    assert not [line for line in requirements(wheel) if "cffi" in line]


def test_a_compiler_that_fails_gives_a_pure_wheel_and_one_line_saying_so(tmp_path: Path) -> None:
    false = shutil.which("false")
    assert false is not None
    result = build(tmp_path, "--wheel", CC=false, PIPELINE_NATIVE="auto")
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith("pipeline:")]
    assert len(said) == 1
    assert said[0].startswith(
        "pipeline: the C stage (pipeline.native.compiled) is not built: the build failed ("
    )
    assert said[0].endswith("then reinstall")
    wheel = wheel_of(tmp_path)
    assert wheel.filename is not None
    assert Path(wheel.filename).name.endswith("-py3-none-any.whl")


def test_native_required_fails_the_build_when_there_is_no_compiler(tmp_path: Path) -> None:
    result = build(tmp_path, "--wheel", CC="/no/such/cc", PIPELINE_NATIVE="required")
    assert result.returncode != 0
    assert (
        "pipeline: PIPELINE_NATIVE=required, but the C stage cannot be built: no C compiler "
        "('/no/such/cc' not found)"
    ) in result.stderr
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").glob("*.whl"))


def test_an_unknown_native_mode_is_refused_naming_the_choices(tmp_path: Path) -> None:
    result = build(tmp_path, "--wheel", PIPELINE_NATIVE="sometimes")
    assert result.returncode != 0
    assert (
        "pipeline: PIPELINE_NATIVE must be one of auto, required, skip, got 'sometimes'"
    ) in result.stderr
