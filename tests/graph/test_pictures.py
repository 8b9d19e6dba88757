"""Pictures of both kinds of graph under awkward names: valid DOT, valid Mermaid, the names kept.

DOT is checked by Graphviz's `dot` itself (skipped where it is not installed): the
picture must lay out without a warning, with one drawn node per node plus the two
ends, each showing its name. Mermaid is checked by a strict grammar of the subset the
pictures use, and each label is decoded back to the name it shows. A character that
does not print is shown by its escape, as repr() writes it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import WAIT

from pipeline.graph import Graph, SequenceJoin, TaskGraph
from pipeline.stages import FunctionStage

AWKWARD = [
    'say "hi"',
    "back\\slash",
    "trailing\\",
    "tab\there",
    "input",
    "output",
    "a & b <c> &amp;",
    "C#35; #quot;",
    "\\N and \\n",
    "node",
    "end",
    "`tick`",
    "two\nlines",
    "ünïcode €",
]


def shown(name: str) -> str:
    """The name as a picture shows it: what does not print, as repr() escapes it."""
    unprintable = {"Cc", "Cs", "Zl", "Zp"}
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in unprintable else char for char in name
    )


def shown_by_dot(name: str) -> str:
    """The name as `drawn_by_dot` reads it back: no-break spaces as spaces."""
    return shown(name).replace("\xa0", " ")


needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is missing")


def awkward_graph() -> Graph:
    """A split into every awkward name, merged again, then joined with the first branch."""
    graph = Graph().add(FunctionStage(lambda item: item, name=AWKWARD[0]))
    for name in AWKWARD[1:-1]:
        graph.add(FunctionStage(lambda item: item, name=name), after=AWKWARD[0])
    graph.add(SequenceJoin(name=AWKWARD[-1]), after=AWKWARD[1:-1])
    return graph


def awkward_tasks() -> TaskGraph:
    graph = TaskGraph().add(AWKWARD[0], lambda: 1)
    for name in AWKWARD[1:]:
        graph.add(name, lambda first: first, after=AWKWARD[0])
    return graph


def drawn_by_dot(dot: str) -> tuple[list[list[str]], int]:
    """Lay `dot` out with Graphviz; return each drawn node's text lines, and the edge count."""
    finished = subprocess.run(
        ["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=WAIT * 6, check=False
    )
    assert finished.returncode == 0, finished.stderr
    assert not finished.stderr, finished.stderr  # not even a warning
    svg = ElementTree.fromstring(finished.stdout)
    groups = svg.iter("{http://www.w3.org/2000/svg}g")
    nodes, edges = [], 0
    for group in groups:
        if group.get("class") == "node":
            texts = group.iter("{http://www.w3.org/2000/svg}text")
            # The SVG keeps runs of spaces as no-break spaces: read those as spaces.
            nodes.append([(text.text or "").replace("\xa0", " ") for text in texts])
        elif group.get("class") == "edge":
            edges += 1
    return nodes, edges


_MERMAID_LABEL = r'(?:[^"#&<>`\x00-\x1f\x7f]|#quot;|#[0-9]+;|<br/>)*'
_MERMAID_BOX = re.compile(rf'^  (n[0-9]+)(?:\["({_MERMAID_LABEL})"\]|\{{"({_MERMAID_LABEL})"\}})$')
_MERMAID_END = re.compile(r"^  (input|output)\(\[\1\]\)$")
_MERMAID_ID = r"(?:n[0-9]+|input|output)"
_MERMAID_LINK = r"(?:-->|-- [a-z]+(?: [a-z]+)* -->)"
_MERMAID_ARROW = re.compile(rf"^  ({_MERMAID_ID}) {_MERMAID_LINK} ({_MERMAID_ID})$")


def parse_mermaid(text: str) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Check `text` against the flowchart subset drawn; return each box's lines and the arrows.

    Every line must be the header, a box (`n0["..."]` or `n0{"..."}`), an end
    (`input([input])`), or an arrow between declared ids; ids are declared once.
    """
    header, *lines = text.splitlines()
    assert header == "flowchart LR"
    boxes: dict[str, list[str]] = {}
    arrows = []
    for line in lines:
        if box := _MERMAID_BOX.match(line):
            assert box[1] not in boxes, line
            label = box[2] if box[2] is not None else box[3]
            boxes[box[1]] = [_decode_mermaid(part) for part in label.split("<br/>")]
        elif end := _MERMAID_END.match(line):
            assert end[1] not in boxes, line
            boxes[end[1]] = [end[1]]
        elif arrow := _MERMAID_ARROW.match(line):
            assert arrow[1] in boxes, line
            assert arrow[2] in boxes, line
            arrows.append((arrow[1], arrow[2]))
        else:
            raise AssertionError(f"not in the Mermaid subset: {line!r}")
    return boxes, arrows


def _decode_mermaid(label: str) -> str:
    label = label.replace("#quot;", '"')
    return re.sub(r"#([0-9]+);", lambda code: chr(int(code[1])), label)


def shown_names(lines: list[list[str]]) -> list[str]:
    return sorted(parts[0] for parts in lines)


@needs_dot
def test_dot_draws_a_graph_with_awkward_names_one_node_each_named_as_given() -> None:
    nodes, edges = drawn_by_dot(awkward_graph().to_dot())
    ends = sorted(text[0] for text in nodes if len(text) == 1)
    assert ends == ["input", "output"]
    assert sorted(text[0] for text in nodes if len(text) == 2) == sorted(map(shown_by_dot, AWKWARD))
    assert edges == 1 + 2 * (len(AWKWARD) - 2) + 1


@needs_dot
def test_dot_draws_a_task_graph_with_awkward_names() -> None:
    nodes, edges = drawn_by_dot(awkward_tasks().to_dot())
    assert sorted(text[0] for text in nodes) == sorted(map(shown_by_dot, AWKWARD))
    assert edges == len(AWKWARD) - 1


def test_mermaid_draws_a_graph_with_awkward_names_one_box_each_named_as_given() -> None:
    boxes, arrows = parse_mermaid(awkward_graph().to_mermaid())
    ends = {box_id for box_id in boxes if not box_id.startswith("n")}
    assert ends == {"input", "output"}
    names = sorted(lines[0] for box_id, lines in boxes.items() if box_id not in ends)
    assert names == sorted(map(shown, AWKWARD))
    assert len(arrows) == 1 + 2 * (len(AWKWARD) - 2) + 1


def test_mermaid_draws_a_task_graph_with_awkward_names() -> None:
    boxes, arrows = parse_mermaid(awkward_tasks().to_mermaid())
    assert shown_names(list(boxes.values())) == sorted(map(shown, AWKWARD))
    assert len(arrows) == len(AWKWARD) - 1


names = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True)


def task_graph_of(names: list[str]) -> TaskGraph:
    graph = TaskGraph()
    for name in names:
        graph.add(name, lambda: None)
    return graph


@needs_dot
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names)
def test_dot_draws_any_names(names: list[str]) -> None:
    nodes, _ = drawn_by_dot(task_graph_of(names).to_dot())
    assert sorted(text[0] for text in nodes) == sorted(map(shown_by_dot, names))


@settings(max_examples=200, deadline=None)
@given(names)
def test_mermaid_draws_any_names(names: list[str]) -> None:
    boxes, _ = parse_mermaid(task_graph_of(names).to_mermaid())
    assert shown_names(list(boxes.values())) == sorted(map(shown, names))


@pytest.mark.parametrize("name", ["input", "output"])
def test_a_node_named_like_an_end_is_drawn_apart_from_the_end(name: str) -> None:
    graph = (
        Graph()
        .add(FunctionStage(lambda item: item, name="first"))
        .add(FunctionStage(lambda item: item, name=name), after="first")
        .add(FunctionStage(lambda item: item, name="last"), after=name)
    )
    boxes, arrows = parse_mermaid(graph.to_mermaid())
    assert len(boxes) == 3 + 2
    assert len(arrows) == 4
    if shutil.which("dot") is not None:
        nodes, edges = drawn_by_dot(graph.to_dot())
        assert (len(nodes), edges) == (3 + 2, 4)


@needs_dot
def test_to_png_sends_dot_utf_8_whatever_the_locale(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from pipeline.stages import FunctionStage\n"
        "from pipeline.graph import Graph\n"
        "name = '\\u00fcn\\u00efcode \\u20ac'\n"
        "graph = Graph().add(FunctionStage(lambda item: item, name=name))\n"
        "print(graph.to_png(sys.argv[1]).stat().st_size > 0)\n"
    )
    environment = {
        **os.environ,
        "LC_ALL": "C",
        "PYTHONUTF8": "0",
        "PYTHONCOERCECLOCALE": "0",
    }
    finished = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "graph.png")],
        env=environment,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=WAIT * 6,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout == "True\n"


def test_to_png_gives_up_on_a_dot_that_does_not_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hung = tmp_path / "dot"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    graph = Graph().add(FunctionStage(lambda item: item, name="a"))
    with pytest.raises(RuntimeError, match=r"^dot did not finish within 0.2 s; "):
        graph.to_png(tmp_path / "graph.png", timeout=0.2)
