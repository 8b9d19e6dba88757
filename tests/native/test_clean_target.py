"""`make clean` removes build artefacts only: never a file git tracks (such as _native.pyi)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tracked_files() -> set[str]:
    """Return the paths git tracks in this checkout, relative to its root."""
    completed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    )
    return set(completed.stdout.decode().split("\0")) - {""}


def test_make_clean_deletes_no_tracked_file() -> None:
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("needs make and git")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    dry_run = subprocess.run(
        ["make", "--dry-run", "--always-make", "clean"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    removed = [
        word
        for line in dry_run.splitlines()
        if line.startswith("rm ")
        for word in line.split()[1:]
        if not word.startswith("-")
    ]
    assert removed, dry_run
    tracked = tracked_files()
    deleted_tracked = sorted(
        path
        for pattern in removed
        for match in ROOT.glob(pattern)
        for path in tracked
        if path == match.relative_to(ROOT).as_posix()
        or path.startswith(match.relative_to(ROOT).as_posix() + "/")
    )
    assert "src/pipeline/native/_native.pyi" in tracked
    assert deleted_tracked == []
