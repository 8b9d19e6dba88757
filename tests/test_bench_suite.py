"""Tests of benchmarks/suite.py: reading figures from benchmark output, and the comparison."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "suite.py"


@pytest.fixture(scope="module")
def suite() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_suite", SUITE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_suite"] = module
    spec.loader.exec_module(module)
    return module


def results(**figures: tuple[float, str | None]) -> dict[str, Any]:
    return {
        "benchmarks": {
            "bench_x.py": {
                "figures": {
                    name.replace("_", " "): {"value": value, "better": better}
                    for name, (value, better) in figures.items()
                }
            }
        }
    }


def test_only_figures_worse_than_the_threshold_are_listed(suite: ModuleType) -> None:
    before = results(rate=(100.0, "higher"), seconds=(2.0, "lower"), hangs=(0.0, "lower"))
    after = results(rate=(80.0, "higher"), seconds=(2.1, "lower"), hangs=(1.0, "lower"))
    assert suite.compare(after, before, 0.15) == [
        "bench_x.py: rate: 100 -> 80 (-20%; higher is better)",
        "bench_x.py: hangs: 0 -> 1 (+from 0; lower is better)",
    ]
    assert suite.compare(before, before, 0.15) == []


def test_figures_without_a_direction_or_a_baseline_are_not_compared(suite: ModuleType) -> None:
    before = results(share=(0.5, None))
    after = results(share=(0.9, None), new=(1.0, "higher"))
    assert suite.compare(after, before, 0.0) == []


def test_figures_read_from_the_chain_and_stress_outputs(suite: ModuleType) -> None:
    chain = (
        "chain                                             items/s  vs sequential  vs item\n"
        "sequential generator chain                      5,501,777          1.00x     92.1x\n"
        "Pipeline, classic stages, statistics off*       3,851,098          0.70x     64.5x\n"
    )
    figures = suite.chain_figures(chain)
    assert figures["sequential generator chain: items/s"] == {
        "value": 5_501_777.0,
        "better": "higher",
    }
    assert figures["Pipeline, classic stages, statistics off: vs sequential"]["value"] == 0.70
    stress = "scenarios: 30  hangs: 0  leaked threads: 2  lost: 0  duplicated: 0  wrong: 0"
    assert suite.stress_figures(stress)["leaked threads"] == {"value": 2.0, "better": "lower"}
    order = "runs 300, failing at a position 150, wrong 1; 29000 source items; 4.0 s"
    assert suite.order_figures(order) == {"wrong": {"value": 1.0, "better": "lower"}}


def test_every_benchmark_file_has_a_quick_preset(suite: ModuleType) -> None:
    benchmarks = {path.name for path in SUITE.parent.glob("*.py")} - suite.SKIP
    assert benchmarks <= set(suite.PRESETS)
