"""The public surface: what each package's `__all__` lists is what the code around it uses.

The core's names are imported from `pipeline`; each extra's from its folder
(`from pipeline.queues import DurableQueue`). A name imported from a package by the
tests, the examples, the benchmarks or a ```python block of the docs must be in that
package's `__all__` (or be one of its modules); every name of every `__all__` resolves;
the API reference has a page for every package. The names that once came from
`pipeline` itself still resolve there, with a DeprecationWarning naming their folder.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(pipeline.__file__).resolve().parent
FOLDERS = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists())
PACKAGES = ["pipeline", *(f"pipeline.{folder}" for folder in FOLDERS)]
CORE_MODULES = {
    *("pipeline.errors", "pipeline.safequeue", "pipeline.stage", "pipeline.worker"),
    *("pipeline.batching", "pipeline.pipeline", "pipeline.stats"),
    *("queue", "_queue"),  # Empty and Full are queue.Empty and queue.Full: either is caught
}
FENCE = re.compile(r"^```(\S*)\s*$")


def python_sources() -> list[tuple[str, str]]:
    """Return (where, source) for every Python file of tests/, examples/, benchmarks/ and
    every ```python block of README.md and docs/*.md."""
    sources = [
        (str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        for folder in ("tests", "examples", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
    ]
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        language: str | None = None
        lines: list[str] = []
        start = 0
        text = document.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(text, start=1):
            fence = FENCE.match(line)
            if language is None:
                if fence:
                    language, lines, start = fence.group(1), [], number
            elif fence and not fence.group(1):
                if language == "python":
                    where = f"{document.relative_to(ROOT)}:{start}"
                    sources.append((where, "\n".join(lines)))
                language = None
            else:
                lines.append(line)
    return sources


def imports_from_packages() -> list[tuple[str, str, str]]:
    """Return (where, package, name) for every `from <package> import <name>`."""
    found: list[tuple[str, str, str]] = []
    for where, source in python_sources():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in PACKAGES:
                found.extend((f"{where}:{node.lineno}", node.module, a.name) for a in node.names)
    return found


def is_submodule(package: str, name: str) -> bool:
    folder = PACKAGE.joinpath(*package.split(".")[1:])
    return (folder / f"{name}.py").exists() or (folder / name / "__init__.py").exists()


def test_every_folder_exports_its_public_names() -> None:
    empty = [name for name in PACKAGES if not importlib.import_module(name).__dict__.get("__all__")]
    assert empty == []


def test_the_names_imported_from_a_package_are_in_its_all() -> None:
    outside = [
        f"{where}: from {package} import {name}"
        for where, package, name in imports_from_packages()
        if name not in importlib.import_module(package).__all__ and not is_submodule(package, name)
    ]
    assert outside == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__), f"{package}: a name listed twice"


def test_the_top_level_holds_the_core_only() -> None:
    outside = [
        name
        for name in pipeline.__all__
        if isinstance(value := getattr(pipeline, name), type) or callable(value)
        if value.__module__ not in CORE_MODULES
    ]
    assert outside == []


def test_a_moved_name_still_resolves_with_a_warning_naming_its_folder() -> None:
    from pipeline.demos import MultiplyStage

    message = (
        "pipeline.MultiplyStage is deprecated and goes in the next release: "
        "use `from pipeline.demos import MultiplyStage`"
    )
    with pytest.warns(DeprecationWarning, match=re.escape(message)):
        assert getattr(pipeline, "MultiplyStage") is MultiplyStage  # noqa: B009


def test_a_moved_name_warns_where_it_is_imported() -> None:
    script = "import warnings\nwarnings.simplefilter('error')\nfrom pipeline import FilterStage\n"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 1
    assert 'File "<string>", line 3' in result.stderr
    assert "use `from pipeline.demos import FilterStage`" in result.stderr


@pytest.mark.parametrize("name", sorted(pipeline._MOVED))
def test_every_moved_name_is_the_object_its_folder_exports(name: str) -> None:
    home = importlib.import_module(pipeline._MOVED[name])
    new_name = pipeline._RENAMED.get(name, name)
    expected = f"from {home.__name__} import {new_name}"
    with pytest.warns(DeprecationWarning, match=re.escape(expected)):
        assert getattr(pipeline, name) is getattr(home, new_name)


def test_criticality_is_the_priority_queues_priority_under_its_own_name() -> None:
    from pipeline.queues import Priority

    message = "use `from pipeline.queues import Priority`"
    with pytest.warns(DeprecationWarning, match=re.escape(message)):
        assert getattr(importlib.import_module("pipeline.graph"), "Criticality") is Priority  # noqa: B009


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'pipeline' has no attribute 'Nothing'"):
        getattr(pipeline, "Nothing")  # noqa: B009


def test_the_api_reference_has_a_page_per_package() -> None:
    pages = {
        path.stem: path.read_text(encoding="utf-8")
        for path in (ROOT / "docs" / "reference").glob("*.md")
    }
    for package in PACKAGES:
        page = "core" if package == "pipeline" else package.removeprefix("pipeline.")
        assert page in pages, f"docs/reference/{page}.md is missing"
        assert f"::: {package}\n" in pages[page], f"docs/reference/{page}.md omits {package}"
