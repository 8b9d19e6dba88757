"""Run every ```python block of the tutorial chapters and README.md, each in a fresh namespace.

A block fails the test if it raises (the blocks check their claims with `assert`) or
leaves a thread behind (the conftest fixture). Line numbers in a traceback are the
line numbers in the Markdown file.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "docs" / "tutorial.md", ROOT / "docs" / "failure.md", ROOT / "README.md"]
FENCE = re.compile(r"^```(\S*)\s*$")
MAX_SECONDS = 1.0  # every block must be quick


class CodeBlock(NamedTuple):
    path: Path
    line: int  # the line number of the block's first line of code
    source: str

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


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


def test_the_tutorial_has_its_code_blocks() -> None:
    tutorial_blocks = [block for block in BLOCKS if block.path.name == "tutorial.md"]
    assert len(tutorial_blocks) >= 9


def test_the_failure_chapter_has_its_code_blocks() -> None:
    assert [block.path.name for block in BLOCKS].count("failure.md") >= 8


def test_the_readme_has_its_tour() -> None:
    assert [block.path.name for block in BLOCKS].count("README.md") >= 1


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_code_block_runs(block: CodeBlock, capsys: pytest.CaptureFixture[str]) -> None:
    # Pad with blank lines so that tracebacks point at the right line of the document.
    code = compile("\n" * (block.line - 1) + block.source, str(block.path), "exec")
    namespace = {"__name__": "__main__"}
    started = time.perf_counter()
    exec(code, namespace)
    elapsed = time.perf_counter() - started
    assert elapsed < MAX_SECONDS, f"{block.name} took {elapsed:.2f} s"
    assert capsys.readouterr().out, f"{block.name} should show its reader something"
