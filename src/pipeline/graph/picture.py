"""Pictures of graphs: one drawing, written in Graphviz's DOT language or as Mermaid.

Both kinds of graph (`Graph`, `TaskGraph`) describe their picture as boxes and arrows
and let a `Picture` write it, so a name is escaped in one place, by the rules of each
language. Names go into labels only: every box gets an id `n0`, `n1`, ..., and the ends
of a streaming graph's picture get the ids `input` and `output`, which no box can have.
A node named "input" is therefore drawn as a node of its own, and no name can clash
with a word either language reserves (`node`, `graph`, `subgraph` in DOT; `end` in
Mermaid).

A character that does not print (a tab, a newline, any control character, a line or
paragraph separator) is shown by its escape, as `repr()` writes it (`\\t`, `\\x7f`),
the way error messages show names; then each language's own escaping applies:
- DOT: a label is a double-quoted string in which Graphviz reads backslash escapes
  (`\\n`, `\\N`, ...) and HTML character references. A backslash and a double quote are
  escaped with a backslash (so a name can neither start an escape nor, with a trailing
  backslash, swallow the closing quote), and `&` is written `&amp;`.
- Mermaid: a label is a double-quoted string in which Mermaid reads entity codes
  (`#quot;`, `#35;`) and HTML. A double quote is `#quot;`; `#`, `&`, `<`, `>` and the
  backtick (which would start a Markdown label) are written as `#<code point>;`.
  Lines are joined with `<br/>`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Picture"]

Shape = Literal["box", "diamond"]
End = Literal["input", "output"]

# The characters that do not print: control characters, lone surrogates, separators.
_UNPRINTABLE = frozenset({"Cc", "Cs", "Zl", "Zp"})


@dataclass(frozen=True)
class _Box:
    id: str
    lines: tuple[str, ...]
    shape: Shape | Literal["end"]


@dataclass(frozen=True)
class _Arrow:
    source: str
    target: str
    label: str


class Picture:
    """Boxes and arrows in drawing order; `to_dot()` and `to_mermaid()` write them out.

    Args:
        title: the DOT graph's name (a plain word: "pipeline", "tasks").
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self._boxes: list[_Box] = []
        self._arrows: list[_Arrow] = []
        self._count = 0  # boxes added, ends apart: the number in the next box's id

    def box(self, lines: Sequence[str], shape: Shape = "box") -> str:
        """Add a box labelled with `lines` (the first is the name); return its id."""
        box_id = f"n{self._count}"
        self._count += 1
        self._boxes.append(_Box(box_id, tuple(lines), shape))
        return box_id

    def end(self, end: End) -> str:
        """Add the picture's `input` or `output` end; return its id, which is `end`."""
        self._boxes.append(_Box(end, (end,), "end"))
        return end

    def arrow(self, source: str, target: str, label: str = "") -> None:
        """Add an arrow between two ids returned by `box` or `end`, with an optional label."""
        self._arrows.append(_Arrow(source, target, label))

    def to_dot(self) -> str:
        """Return the picture in Graphviz's DOT language."""
        lines = [f"digraph {self.title} {{", "  rankdir=LR;"]
        for box in self._boxes:
            shape = "oval" if box.shape == "end" else box.shape
            label = "\\n".join(_dot_text(line) for line in box.lines)
            lines.append(f'  {box.id} [shape={shape}, label="{label}"];')
        for arrow in self._arrows:
            label = f' [label="{_dot_text(arrow.label)}"]' if arrow.label else ""
            lines.append(f"  {arrow.source} -> {arrow.target}{label};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """Return the picture as a Mermaid flowchart."""
        lines = ["flowchart LR"]
        for box in self._boxes:
            label = "<br/>".join(_mermaid_text(line) for line in box.lines)
            if box.shape == "end":
                lines.append(f"  {box.id}([{box.id}])")
            elif box.shape == "diamond":
                lines.append(f'  {box.id}{{"{label}"}}')
            else:
                lines.append(f'  {box.id}["{label}"]')
        for arrow in self._arrows:
            link = f"-- {_mermaid_text(arrow.label)} -->" if arrow.label else "-->"
            lines.append(f"  {arrow.source} {link} {arrow.target}")
        return "\n".join(lines) + "\n"


def _shown(text: str) -> str:
    """Return `text` with every character that does not print written as its escape."""
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in _UNPRINTABLE else char for char in text
    )


def _dot_text(text: str) -> str:
    """Return `text` for a double-quoted DOT label."""
    out = []
    for char in _shown(text):
        if char in '\\"':
            out.append("\\" + char)
        elif char == "&":
            out.append("&amp;")
        else:
            out.append(char)
    return "".join(out)


def _mermaid_text(text: str) -> str:
    """Return `text` for a double-quoted Mermaid label."""
    out = []
    for char in _shown(text):
        if char == '"':
            out.append("#quot;")
        elif char in "#&<>`":
            out.append(f"#{ord(char)};")
        else:
            out.append(char)
    return "".join(out)
