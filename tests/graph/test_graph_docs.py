"""The picture in docs/graphs.md is the one `to_mermaid()` draws for the chapter's first graph."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from test_docs import python_blocks

CHAPTER = Path(__file__).resolve().parents[2] / "docs" / "graphs.md"


def test_the_chapters_picture_is_what_to_mermaid_draws() -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    source = python_blocks(CHAPTER)[0].source.replace("10_000", "70")  # the graph, quickly
    exec(source, namespace)
    text = CHAPTER.read_text(encoding="utf-8")
    pictures = re.findall(r"^```mermaid\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    assert pictures == [namespace["graph"].to_mermaid()]
