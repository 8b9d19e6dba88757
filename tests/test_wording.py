"""The repository speaks of the package as it is: no project history in docs, code or tests.

History (what an earlier version did, the bookkeeping of the work that changed it)
belongs in CHANGELOG.md and `git log`; a doc page, a docstring, a comment or a test
that names it goes stale the day it is written.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPOKEN = [
    *(ROOT / "docs").rglob("*.md"),
    ROOT / "README.md",
    *(ROOT / "src").rglob("*.py"),
    *(ROOT / "src").rglob("*.html"),
    *(ROOT / "tests").rglob("*.py"),
    *(ROOT / "benchmarks").glob("*.py"),
    *(ROOT / "examples").glob("*.py"),
    *(ROOT / "tools").glob("*"),
    *(ROOT / "csrc").glob("*"),
    ROOT / "Makefile",
    ROOT / ".ci" / "run",
    ROOT / "setup.py",
    ROOT / "pyproject.toml",
]
# Spelled in pieces, so that this file does not match itself.
HISTORY = re.compile(
    "|".join(
        [
            r"\bissues?\s+#?\d+",
            r"\b(?:previous|last|next|earlier|later|this)\s+" + "sess" + r"ions?\b",
            "sess" + r"ion\s+\d+",
            "FIND" + "INGS",
            r"\bthis\s+" + "absorb" + "s",
            r"\bbefore\s+issue",
        ]
    ),
    re.IGNORECASE,
)


def test_nothing_but_the_changelog_speaks_of_the_projects_history() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in SPOKEN
        if path.is_file()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if HISTORY.search(line)
    ]
    assert found == []
