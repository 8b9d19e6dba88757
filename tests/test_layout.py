"""The one-way import rule: files are the core, folders are the extras.

Every module's imports are read from its source (the `ast`), so the rule holds for
imports inside functions too:
- a core module (a top-level module but `cli` and `__main__`) imports only the standard
  library and other core modules;
- an extra imports the core and itself, never another extra, with the exceptions listed
  in `ALLOWED_BETWEEN_EXTRAS`;
- only `cli` imports `demos/`; the demos are application code and may use any extra.
`pipeline/__init__.py` imports no extra: it names extras only in its table of the names
that moved to a folder (checked against each folder's own `__all__`), which still
resolve with a DeprecationWarning. An `if TYPE_CHECKING:` block there would be the one
place the walk skips.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

PACKAGE = Path(pipeline.__file__).resolve().parent
CORE = {
    *("errors", "safequeue", "stage", "worker", "batching", "pipeline", "stats"),
    *("_checks", "_interrupts"),
}
APPLICATION = {"cli", "__main__", "__init__"}
EXTRAS = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists())

# (importing extra, imported extra): why the exception is allowed.
ALLOWED_BETWEEN_EXTRAS: dict[tuple[str, str], str] = {
    ("graph", "queues"): (
        "a task graph's criticality labels are the priority queue's six labels, not a copy"
    ),
    ("graph", "resilience"): (
        "task graphs retry tasks and guard them with circuit breakers: the issue asks to "
        "reuse RetryPolicy and CircuitBreaker rather than write them again"
    ),
    ("queues", "resilience"): (
        "a task queue's retries back off as the rest of the package does: RetryPolicy, "
        "not a second backoff written again"
    ),
}


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found.append((".".join(parts), path))
    return found


def imported_pipeline_modules(path: Path) -> set[str]:
    """Return the `pipeline.*` modules a file imports, as dotted names without `pipeline.`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path.name == "__init__.py" and path.parent == PACKAGE:
        tree.body = [node for node in tree.body if not _is_type_checking_block(node)]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            if node.module == "pipeline":
                names.update(f"pipeline.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            raise AssertionError(f"{path}: relative import; use the absolute name")
    return {name.removeprefix("pipeline.") for name in names if name.startswith("pipeline.")}


def _is_type_checking_block(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"


def top(name: str) -> str:
    return name.split(".")[0]


def test_the_core_modules_are_the_ones_the_design_names() -> None:
    top_level = {name for name, path in modules() if "." not in name}
    assert top_level - APPLICATION == CORE


@pytest.mark.parametrize(("module", "path"), modules(), ids=[name for name, _ in modules()])
def test_imports_point_down_only(module: str, path: Path) -> None:
    imported = {top(name) for name in imported_pipeline_modules(path)}
    home = top(module)
    if module in APPLICATION - {"cli"}:
        assert imported <= CORE | {"cli"}, f"{module} imports extras {imported - CORE}"
    elif home in CORE:
        assert imported <= CORE, f"core module {module} imports extras {imported - CORE}"
    elif home not in {"cli", "demos"}:
        others = imported - CORE - {home}
        unexplained = {other for other in others if (home, other) not in ALLOWED_BETWEEN_EXTRAS}
        assert not unexplained, f"extra {module} imports other extras {unexplained}"


def test_only_the_cli_imports_the_demos() -> None:
    importers = {
        module
        for module, path in modules()
        if top(module) != "demos" and "demos" in {top(n) for n in imported_pipeline_modules(path)}
    }
    assert importers <= {"cli"}


def test_every_moved_name_is_public_in_its_folder() -> None:
    for name, home in pipeline._MOVED.items():
        extra = __import__(home, fromlist=["__all__"])
        new_name = pipeline._RENAMED.get(name, name)
        assert new_name in extra.__all__, f"{home} does not export {new_name}"
        assert top(home.removeprefix("pipeline.")) in EXTRAS


def test_import_pipeline_loads_no_extra_and_a_moved_name_loads_only_its_folder() -> None:
    script = (
        "import sys, warnings\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "import pipeline\n"
        f"extras = {EXTRAS!r}\n"
        "def loaded(): return sorted(e for e in extras if 'pipeline.' + e in sys.modules)\n"
        "print(loaded())\n"
        "pipeline.ResilientStage\n"
        "print(loaded())\n"
        "pipeline.FunctionStage\n"
        "print(loaded())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.splitlines() == ["[]", "['resilience']", "['resilience', 'stages']"]
