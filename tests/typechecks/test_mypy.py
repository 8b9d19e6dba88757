"""Run mypy --strict on code that must pass and on snippets that must fail, as typeshed does.

`types_pipeline.py` pins what mypy infers (`assert_type`) and marks lines it must reject
(`# type: ignore[code]`, which --strict reports when unused). The snippets below are the
mistakes a user makes with the stage types; each must fail with its error code on its
last line and nowhere else.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 300  # seconds; mypy with a cold cache checks the whole package first

HEADER = """\
from pipeline import Pipeline, PipelineStage
from pipeline.stages import FunctionStage


class IntToStr(PipelineStage[int, str]):
    def process(self, item: int) -> str:
        return str(item)


class StrToFloat(PipelineStage[str, float]):
    def process(self, item: str) -> float:
        return float(item)


"""

# Each snippet's last line must be rejected with this error code.
MISTAKES = {
    "chain_links_that_do_not_fit": ("IntToStr() >> IntToStr()", "operator"),
    "tuple_links_that_do_not_fit": ("Pipeline((IntToStr(), IntToStr()))", "arg-type"),
    "four_stages_whose_last_link_does_not_fit": (
        "Pipeline((IntToStr(), StrToFloat(), IntToStr(), IntToStr()))",
        "arg-type",
    ),
    "source_of_the_wrong_type": ("Pipeline(IntToStr() >> StrToFloat()).run(['1'])", "list-item"),
    "outputs_of_the_wrong_type": (
        "outputs: list[str] = Pipeline(IntToStr() >> StrToFloat()).run([1])",
        "assignment",
    ),
    "lambda_without_types": ("stage = FunctionStage(lambda x: x + 1)", "var-annotated"),
}

ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")


def mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run mypy with the project's configuration (--strict) on `paths`."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_mypy_passes_the_typed_forms_and_rejects_the_marked_lines() -> None:
    result = mypy(Path(__file__).with_name("types_pipeline.py"))
    assert result.returncode == 0, result.stdout


def test_mypy_rejects_each_mistake_on_its_line(tmp_path: Path) -> None:
    expected: dict[str, tuple[int, str]] = {}
    for name, (line, code) in MISTAKES.items():
        source = HEADER + line + "\n"
        (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
        expected[name] = (source.count("\n"), code)
    result = mypy(*sorted(tmp_path.glob("*.py")))
    found: dict[str, list[tuple[int, str]]] = {}
    for output_line in result.stdout.splitlines():
        error = ERROR.match(output_line)
        if error:
            found.setdefault(Path(error["path"]).stem, []).append(
                (int(error["line"]), error["code"])
            )
    assert found == {name: [where] for name, where in expected.items()}, result.stdout
