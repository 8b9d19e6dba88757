"""MkDocs hooks of the documentation site (mkdocs.yml): the README as the home page.

The README is written for the repository, where the chapters are `docs/*.md` and the
examples `examples/*.py`; on the site the chapters sit at the root and the examples
are copied beside them, so the links are rewritten to match and `--strict` still
checks every one of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
_INTO_DOCS = re.compile(r"\]\(docs/")
_INTO_EXAMPLES = re.compile(r"\]\((?:\.\./)?examples/")


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    """Add the README as `index.md` and every example program under `examples/`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=readme))
    for example in sorted((ROOT / "examples").glob("*.py")):
        files.append(File.generated(config, f"examples/{example.name}", abs_src_path=str(example)))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Point the repository's links at the site's pages and copies of the examples."""
    if page.file.src_uri == "index.md":
        markdown = _INTO_DOCS.sub("](", markdown)
    return _INTO_EXAMPLES.sub("](examples/", markdown)
