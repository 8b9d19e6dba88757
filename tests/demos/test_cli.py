"""Tests of the command line (`pipeline.cli.main`), `python -m pipeline` and the launchers."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pipeline import MultiplyStage, StageError
from pipeline.cli import main

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = ["run_pipeline.py", "run_custom_example.py", "run_data_example.py"]
TIMEOUT = 30  # seconds; every subprocess here finishes in well under one


def run_python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return run_command(sys.executable, *args, cwd=cwd)


def run_command(*command: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


class FailingMultiplyStage(MultiplyStage):
    def process_batch(self, items: list[int]) -> list[int]:
        if 3 in items:
            raise ZeroDivisionError("three is right out")
        return super().process_batch(items)


# demo


def test_demo_prints_the_classic_outputs_and_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "outputs:   [12, 14, 16, 18, 20]" in out
    assert "items in:  5" in out
    assert "items out: 5" in out
    assert "elapsed:" in out


def test_demo_is_the_default_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "[12, 14, 16, 18, 20]" in capsys.readouterr().out
    assert main(["--items", "3", "-q"]) == 0
    assert capsys.readouterr().out == "[12, 14, 16]\n"


def test_demo_options_keep_the_outputs_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "-q", "--items", "1000", "--workers", "3", "--queue-size", "8"]
    assert main([*argv, "--batch-size", "4"]) == 0
    assert capsys.readouterr().out == f"{[x * 2 + 10 for x in range(1, 1001)]}\n"


def test_demo_summary_shortens_long_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--items", "100"]) == 0
    out = capsys.readouterr().out
    assert "items out: 100" in out
    assert "50, ...] (80 more)" in out


def test_demo_with_no_items(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--items", "0"]) == 0
    assert "outputs:   []" in capsys.readouterr().out


def test_demo_logs_nothing_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    assert capsys.readouterr().err == ""


def test_verbose_logs_the_run_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-v"]) == 0
    err = capsys.readouterr().err
    assert "MainThread pipeline.cli: running Pipeline(MultiplyStage >> AddStage" in err
    assert "MultiplyStage: 1 -> 2" not in err  # per-item lines are debug


def test_very_verbose_logs_each_item_with_its_stage_and_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "-vv"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert "pipeline-MultiplyStage-0 pipeline.demos.classic: MultiplyStage: 1 -> 2" in err
    assert "pipeline-AddStage-0 pipeline.demos.classic: AddStage: 2 -> 12" in err
    assert "pipeline-FilterStage-0 pipeline.demos.classic: FilterStage: 20 kept" in err


def test_main_leaves_the_logging_configuration_as_it_found_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    assert main(["demo", "-vv"]) == 0
    assert root.handlers == handlers
    assert root.level == level


# usage errors


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pipeline")
    for command in ("demo", "custom", "data"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "custom"])
def test_subcommand_help_exits_0(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: pipeline {command}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--items", "-1"], "argument --items: must be >= 0, got -1"),
        (["demo", "--items", "many"], "argument --items: not an integer: 'many'"),
        (["demo", "--workers", "0"], "argument --workers: must be >= 1, got 0"),
        (["demo", "--queue-size", "0"], "argument --queue-size: must be >= 1, got 0"),
        (["--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["demo", "-v", "-q"], "argument -q/--quiet: not allowed with argument -v/--verbose"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["bogus"], "argument SUBCOMMAND: invalid choice: 'bogus'"),
        (["custom", "--min-length", "-3"], "argument --min-length: must be >= 0, got -3"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_an_unreadable_input_file_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.txt"
    assert main(["custom", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"pipeline custom: error: cannot read {str(missing)!r}: No such file or directory\n"
    )


# failures and Ctrl-C


def test_a_failing_stage_exits_1_with_the_error_and_its_cause(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pipeline.cli.MultiplyStage", FailingMultiplyStage)
    assert main(["demo", "--batch-size", "1"]) == 1
    captured = capsys.readouterr()
    assert "outputs:" not in captured.out
    assert captured.err.splitlines() == [
        "pipeline: error: stage 'FailingMultiplyStage' failed in process_batch(): "
        "ZeroDivisionError: three is right out",
        "pipeline: caused by ZeroDivisionError: three is right out",
    ]


def test_a_failure_with_very_verbose_also_prints_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pipeline.cli.MultiplyStage", FailingMultiplyStage)
    assert main(["demo", "-vv"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last):" in err
    assert 'raise ZeroDivisionError("three is right out")' in err


def test_undecodable_input_fails_in_the_source_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert main(["custom", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(
        "pipeline: error: stage 'source' failed while reading the source iterable: "
        "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xe9"
    )
    assert err[1].startswith("pipeline: caused by UnicodeDecodeError:")


def test_ctrl_c_during_the_run_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: object, source: object) -> list[int]:
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.cli.Pipeline.run", interrupted)
    assert main(["demo"]) == 130
    assert capsys.readouterr().err == "pipeline: interrupted\n"


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_sigint_stops_a_long_demo_and_exits_130() -> None:
    command = [sys.executable, "run_pipeline.py", "-v", "--items", "1000000000"]
    with subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        # The run has started once main has logged it (and installed Python's SIGINT handler).
        assert "running Pipeline(" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=TIMEOUT) == 130
        assert "pipeline: interrupted" in process.stderr.read()


# custom


def test_custom_prints_the_long_lines_of_the_sample_title_cased(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["custom", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "The Quick Brown Fox Jumps Over The Lazy Dog",
        "Threads Share Memory, So They Share Mistakes",
        "Bounded Queues Turn A Fast Producer Into A Patient One",
        "The First Failure Stops Every Stage, And Nobody Hangs",
    ]
    assert captured.err == ""


def test_custom_reads_a_file_with_several_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "input.txt"
    path.write_text("".join(f"line   number\t{index}\n" for index in range(500)), encoding="utf-8")
    assert main(["custom", str(path), "--workers", "4", "--min-length", "15"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"Line Number {index}" for index in range(100, 500)]
    assert captured.err.startswith("kept 400 lines of at least 15 characters in ")


def test_custom_verbose_logs_each_workers_line_count_from_teardown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["custom", "-v", "--workers", "2"]) == 0
    counts = [
        int(line.split()[-2])
        for line in capsys.readouterr().err.splitlines()
        if "this worker normalised" in line
    ]
    assert len(counts) == 2
    assert sum(counts) == 8  # the sample's lines, however the two workers shared them


# data: the wiring only; the data example itself is tested with it


def test_data_without_its_module_exits_2_with_the_import_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pipeline.demos.sensors", None)
    assert main(["data", "--help"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipeline data: ")
    assert "pipeline.demos.sensors" in err
    assert "Traceback" not in err


def fake_data_example(calls: list[argparse.Namespace], status: int = 0) -> types.ModuleType:
    module = types.ModuleType("pipeline.demos.sensors", "Fake data example.\n\nMore text.")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rows", type=int, default=10)

    def run(args: argparse.Namespace) -> int:
        calls.append(args)
        return status

    module.add_arguments = add_arguments  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    return module


def test_data_parses_the_options_of_the_data_example_and_runs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[argparse.Namespace] = []
    monkeypatch.setitem(sys.modules, "pipeline.demos.sensors", fake_data_example(calls, 3))
    assert main(["data", "--rows", "7", "-v"]) == 3
    assert len(calls) == 1
    assert calls[0].rows == 7
    assert calls[0].verbose == 1


def test_data_help_is_the_data_examples(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pipeline.demos.sensors", fake_data_example([]))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pipeline data [-h] [-v | -q] [--rows ROWS]")
    assert "Fake data example." in out


def test_data_bad_option_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pipeline.demos.sensors", fake_data_example([]))
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--rows", "many"])
    assert exit_info.value.code == 2
    assert "argument --rows: invalid int value: 'many'" in capsys.readouterr().err


def test_a_stage_error_in_the_data_example_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = fake_data_example([])

    def run(args: argparse.Namespace) -> int:
        error = StageError("NativeStage", "process", detail="ValueError: bad buffer")
        raise error from ValueError("bad buffer")

    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pipeline.demos.sensors", module)
    assert main(["data"]) == 1
    assert capsys.readouterr().err.splitlines()[1] == "pipeline: caused by ValueError: bad buffer"


# entry points, as subprocesses


def test_python_dash_m_pipeline_help_exits_0() -> None:
    result = run_python("-m", "pipeline", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pipeline")


def test_python_dash_m_pipeline_runs_the_demo() -> None:
    result = run_python("-m", "pipeline", "--items", "3", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[12, 14, 16]\n"


def test_run_pipeline_launcher() -> None:
    result = run_python("run_pipeline.py", "--items", "3")
    assert result.returncode == 0, result.stderr
    assert "outputs:   [12, 14, 16]" in result.stdout


def test_run_custom_example_launcher() -> None:
    result = run_python("run_custom_example.py", "--min-length", "40")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "The Quick Brown Fox Jumps Over The Lazy Dog",
        "Threads Share Memory, So They Share Mistakes",
        "Bounded Queues Turn A Fast Producer Into A Patient One",
        "The First Failure Stops Every Stage, And Nobody Hangs",
    ]


def test_run_data_example_launcher(tmp_path: Path) -> None:
    pytest.importorskip("pipeline.demos.sensors", reason="pipeline.demos.sensors not written yet")
    # In a scratch directory, because the example writes results.csv there.
    result = run_python(str(ROOT / "run_data_example.py"), "--count", "1000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results.csv").exists()


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launchers_are_executable_scripts(launcher: str) -> None:
    path = ROOT / launcher
    assert path.read_text(encoding="utf-8").startswith("#!/usr/bin/env python3\n")
    assert os.access(path, os.X_OK)


def python_without_the_package() -> str:
    """Return an interpreter that cannot import pipeline (the venv's base one), or skip."""
    base = getattr(sys, "_base_executable", None)
    if not base or not Path(base).exists() or Path(sys.prefix) == Path(sys.base_prefix):
        pytest.skip("not running in a virtualenv")
    if run_command(base, "-c", "import pipeline").returncode == 0:
        pytest.skip("the base interpreter has pipeline installed")
    return str(base)


def test_a_launcher_run_without_the_package_reexecutes_with_the_venv() -> None:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv next to the launchers")
    result = run_command(python_without_the_package(), "run_pipeline.py", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[12, 14, 16, 18, 20]\n"


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_launcher_without_the_package_or_a_venv_says_to_install(
    launcher: str, tmp_path: Path
) -> None:
    python = python_without_the_package()
    shutil.copy(ROOT / launcher, tmp_path)
    shutil.copy(ROOT / "launcher.py", tmp_path)
    result = run_command(python, tmp_path / launcher, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "pipeline is not installed: run `make install` first\n"


# seeing the run


def test_report_prints_the_stages_and_the_bottleneck(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--items", "1000", "--report"]) == 0
    out = capsys.readouterr().out
    assert "pipeline finished in " in out
    assert "\nMultiplyStage " in out
    assert "\nFilterStage " in out
    assert "\nbottleneck: " in out


def test_custom_report_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["custom", "--report"]) == 0
    captured = capsys.readouterr()
    assert "bottleneck: " in captured.err
    assert "bottleneck: " not in captured.out


def test_progress_draws_nothing_off_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--items", "1000", "--progress"]) == 0
    assert "item/s" not in capsys.readouterr().err


def test_progress_without_tqdm_exits_2_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "tqdm"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pipeline.observe.progress", raising=False)
    assert main(["demo", "--progress"]) == 2
    assert "pip install pipeline[progress]" in capsys.readouterr().err
