"""The documentation site (mkdocs.yml) builds with `--strict`, and a broken link fails it.

`make docs` is the build a user runs; these tests run the same build into a temporary
folder, and once more over a copy of docs/ with one link between pages broken, to show
that `--strict` is what catches it (a `--quiet` build would hide the warning it counts).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="the site needs the docs extra (mkdocs)")
pytest.importorskip("mkdocs", reason="the site needs the docs extra (mkdocs)")

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 120  # seconds; the build takes a few


def build(tmp_path: Path, docs: Path) -> subprocess.CompletedProcess[str]:
    """Build the site of `docs` into `tmp_path / "site"` with mkdocs.yml's settings."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    config["docs_dir"] = str(docs)
    config["site_dir"] = str(tmp_path / "site")
    config["hooks"] = [str(ROOT / hook) for hook in config["hooks"]]
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            python = plugin["mkdocstrings"]["handlers"]["python"]
            python["paths"] = [str(ROOT / path) for path in python["paths"]]
    written = tmp_path / "mkdocs.yml"
    written.write_text(yaml.safe_dump(config), encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(written)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the site once for the tests that read it; return its folder."""
    folder = tmp_path_factory.mktemp("site")
    result = build(folder, ROOT / "docs")
    assert result.returncode == 0, result.stderr
    return folder / "site"


def test_the_site_builds_with_the_readme_the_chapters_and_the_reference(site: Path) -> None:
    assert "Which class do I need?" in (site / "which-class" / "index.html").read_text()
    assert "The classic threaded pipeline, done right." in (site / "index.html").read_text()
    queues = (site / "reference" / "queues" / "index.html").read_text(encoding="utf-8")
    assert 'id="pipeline.queues.DurableQueue"' in queues


def test_a_broken_link_between_pages_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with (docs / "which-class.md").open("a", encoding="utf-8") as page:
        page.write("\nSee [the missing chapter](missing.md).\n")
    result = build(tmp_path, docs)
    assert result.returncode != 0
    assert "'which-class.md' contains a link 'missing.md'" in result.stderr


def test_the_reference_covers_every_name_in_every_all(site: Path) -> None:
    folders = sorted(path.parent.name for path in (ROOT / "src" / "pipeline").glob("*/__init__.py"))
    missing = []
    for package in ["pipeline", *(f"pipeline.{folder}" for folder in folders)]:
        page = "core" if package == "pipeline" else package.removeprefix("pipeline.")
        html = (site / "reference" / page / "index.html").read_text(encoding="utf-8")
        text = (ROOT / "docs" / "reference" / f"{page}.md").read_text(encoding="utf-8")
        names = importlib.import_module(package).__all__
        missing += [
            f"{package}.{name}"
            for name in names
            if f'id="{package}.{name}"' not in html and f"`{name}`" not in text
        ]
    assert missing == []
