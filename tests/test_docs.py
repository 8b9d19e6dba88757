"""Run every ```python block of the README and the docs chapters, each in a fresh namespace.

A block fails the test if it raises (the blocks check their claims with `assert`),
prints nothing, or leaves a thread behind (the conftest fixture); and every block must
pass `mypy --strict`, as a user's code checked by it would (one mypy run over them all,
each block a module of its own). A block guarded by
`if __name__ == "__main__":` is a whole script (it starts processes, which pickle its
functions by name) and runs as one, in a fresh interpreter. Line numbers in a
traceback are the line numbers in the Markdown file. How long a block takes is not
checked here (pytest-timeout bounds it); speed is for the benchmarks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each document, and the fewest python blocks it should have (a lost fence shows up here).
DOCUMENTS = {
    ROOT / "README.md": 1,
    ROOT / "docs" / "tutorial.md": 9,
    ROOT / "docs" / "failure.md": 8,
    ROOT / "docs" / "observability.md": 7,
    ROOT / "docs" / "graphs.md": 9,
    ROOT / "docs" / "etl.md": 6,
    ROOT / "docs" / "queues.md": 6,
    ROOT / "docs" / "beyond-threads.md": 5,
    ROOT / "docs" / "which-class.md": 2,
}
SCRIPT_GUARD = 'if __name__ == "__main__":'
FENCE = re.compile(r"^```(\S*)\s*$")


TYPECHECK_TIMEOUT = 300  # seconds; mypy with a cold cache checks the whole package first
MYPY_ERROR = re.compile(r"^(?P<module>[^:]+)\.py:(?P<line>\d+): error: (?P<message>.*)$")


class CodeBlock(NamedTuple):
    path: Path
    line: int  # the line number of the block's first line of code
    source: str

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def module(self) -> str:
        """A module name for the block, unique among the documents' blocks."""
        return f"{self.path.stem.replace('-', '_')}_{self.line}"


def python_blocks(path: Path) -> list[CodeBlock]:
    """Return the ```python blocks of a Markdown file; fail on an unclosed fence."""
    blocks: list[CodeBlock] = []
    language: str | None = None
    start = 0
    lines: list[str] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = FENCE.match(text)
        if language is None:
            if fence:
                language, start, lines = fence.group(1), number + 1, []
        elif fence and not fence.group(1):
            if language == "python":
                blocks.append(CodeBlock(path, start, "\n".join(lines) + "\n"))
            language = None
        else:
            lines.append(text)
    assert language is None, f"{path.name}: the fence opened before line {start} is not closed"
    return blocks


BLOCKS = [block for path in DOCUMENTS for block in python_blocks(path)]


@pytest.mark.parametrize(("path", "fewest"), DOCUMENTS.items(), ids=lambda p: getattr(p, "name", p))
def test_each_document_has_its_code_blocks(path: Path, fewest: int) -> None:
    assert len(python_blocks(path)) >= fewest


def test_the_observability_chapter_shows_its_picture() -> None:
    chapter = ROOT / "docs" / "observability.md"
    assert "](images/demo_timeline.png)" in chapter.read_text(encoding="utf-8")
    assert (chapter.parent / "images" / "demo_timeline.png").is_file()


def test_the_etl_chapter_shows_its_picture() -> None:
    chapter = ROOT / "docs" / "etl.md"
    assert "](images/etl_windows.png)" in chapter.read_text(encoding="utf-8")
    assert (chapter.parent / "images" / "etl_windows.png").is_file()


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_code_block_runs(
    block: CodeBlock, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Pad with blank lines so that tracebacks point at the right line of the document.
    padded = "\n" * (block.line - 1) + block.source
    if SCRIPT_GUARD in block.source:
        script = tmp_path / block.path.name.replace(".md", ".py")
        script.write_text(padded, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{block.name} failed:\n{result.stderr}"
        assert result.stdout, f"{block.name} should show its reader something"
        return
    code = compile(padded, str(block.path), "exec")
    exec(code, {"__name__": "__main__"})
    assert capsys.readouterr().out, f"{block.name} should show its reader something"


def test_every_code_block_passes_mypy_strict(tmp_path: Path) -> None:
    # Each block is written padded, so that mypy's line numbers are the document's.
    modules = {}
    for block in BLOCKS:
        path = tmp_path / f"{block.module}.py"
        path.write_text("\n" * (block.line - 1) + block.source, encoding="utf-8")
        modules[block.module] = block
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            "pyproject.toml",
            *map(str, sorted(tmp_path.glob("*.py"))),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TYPECHECK_TIMEOUT,
        check=False,
    )
    errors = []
    for line in result.stdout.splitlines():
        error = MYPY_ERROR.match(line)
        if error:
            block = modules[Path(error["module"]).name]
            errors.append(f"{block.path.name}:{error['line']}: {error['message']}")
    assert errors == [], "\n".join(errors)
    assert result.returncode == 0, result.stdout + result.stderr
