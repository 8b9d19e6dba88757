"""Tests of the command line (`pipeline.cli.main`), `python -m pipeline` and the launchers."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from pipeline import StageError, cli
from pipeline.cli import main
from pipeline.demos import MultiplyStage, classic, text

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = [
    "run_pipeline.py",
    "run_custom_example.py",
    "run_data_example.py",
    "run_etl_example.py",
]
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


def test_demo_shows_the_filter_dropping_items_with_x_times_3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [
        "x*2+10 is always even, so FilterStage kept every item; with x*3 it drops the odd results:",
        "outputs:   [16, 22] (FilterStage kept 2 of 5)",
    ]


def test_demo_quiet_prints_only_the_classic_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-q", "--items", "4"]) == 0
    assert capsys.readouterr().out == "[12, 14, 16, 18]\n"


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
    lines = err.splitlines()
    assert lines[0].startswith("[INFO] running Pipeline(MultiplyStage >> AddStage")
    # As the classic example prints them: each stage processing each item, each output.
    assert lines[1:6] == [
        f"[INFO] MultiplyStage processing item: {n} -> {2 * n}" for n in range(1, 6)
    ]
    assert "[INFO] AddStage processing item: 2 -> 12" in lines
    assert "[INFO] FilterStage processing item: 12 kept" in lines
    assert [line for line in lines if "Final output" in line] == [
        f"[INFO] Final output: {2 * n + 10}" for n in range(1, 6)
    ]


def test_very_verbose_logs_each_item_with_its_stage_and_thread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "-vv"]) == 0
    err = capsys.readouterr().err.splitlines()
    prefix = "[INFO] pipeline-{}-0 pipeline.demos.classic: {} processing item: "
    assert prefix.format("MultiplyStage", "MultiplyStage") + "1 -> 2" in err
    assert prefix.format("AddStage", "AddStage") + "2 -> 12" in err
    assert prefix.format("FilterStage", "FilterStage") + "20 kept" in err


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


@pytest.mark.parametrize("command", ["demo", "custom", "data"])
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
        (["custom", "--workers", "0"], "argument --workers: must be >= 1, got 0"),
        (["data", "--threads", "0"], "argument --threads: must be >= 1, got 0"),
        (["data", "--threads", "two"], "argument --threads: not an integer: 'two'"),
        (["data", "--count", "-1"], "argument --count: must be >= 0, got -1"),
        (["data", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
        (["data", "--seed", "x"], "argument --seed: not an integer: 'x'"),
        (["data", "--implementation", "gpu"], "argument --implementation: invalid choice"),
        (
            ["data", "--count", "5", "--input", str(ROOT / "README.md")],
            "argument --input: not allowed with argument --count",
        ),
        (["data", "--output", "/"], "argument --output: cannot write '/': it is a directory"),
        (
            ["data", "--output", "/no/such/dir/results.csv"],
            "argument --output: cannot write '/no/such/dir/results.csv': no such directory",
        ),
        (["data", "-v", "-q"], "argument -q/--quiet: not allowed with argument -v/--verbose"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("command", "option"), [("custom", []), ("data", ["--input"])])
def test_an_unreadable_input_file_is_a_usage_error(
    command: str, option: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(SystemExit) as exit_info:
        main([command, *option, missing])
    assert exit_info.value.code == 2
    assert f"cannot read {missing!r}: No such file or directory\n" in capsys.readouterr().err


# failures and Ctrl-C


def test_a_failing_stage_exits_1_with_the_error_and_its_cause(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pipeline.demos.classic.MultiplyStage", FailingMultiplyStage)
    assert main(["demo", "--batch-size", "1"]) == 1
    captured = capsys.readouterr()
    assert "outputs:" not in captured.out
    assert captured.err.splitlines() == [
        "pipeline: error: stage 'FailingMultiplyStage' failed in process_batch(): "
        "ZeroDivisionError: three is right out",
    ]


def test_a_failure_with_very_verbose_also_prints_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("pipeline.demos.classic.MultiplyStage", FailingMultiplyStage)
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
    assert len(err) == 1  # the message names the cause: one error, one line


def test_ctrl_c_during_the_run_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: object, source: object) -> list[int]:
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.pipeline.Pipeline.run", interrupted)
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


# data: the wiring; the example itself is tested in test_sensors.py


def hide_the_c_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import pipeline.native.compiled` fail as it does where the C code is not built."""
    monkeypatch.setitem(sys.modules, "pipeline.native._native", None)
    monkeypatch.delitem(sys.modules, "pipeline.native.compiled", raising=False)


def test_data_help_needs_no_c_extension(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hide_the_c_extension(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "--help"])
    assert exit_info.value.code == 0
    assert "--threads N" in capsys.readouterr().out


def test_data_without_the_c_extension_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hide_the_c_extension(monkeypatch)
    assert main(["data", "--count", "10", "--output", str(tmp_path / "out.csv")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "pipeline data: error: the C stage is not built (import of "
        "pipeline.native._native halted; None in sys.modules); reinstall with a C compiler "
        "and Python's headers (`make install` in a checkout), or add "
        "`--implementation reference --skip-reference`\n"
    )
    assert not (tmp_path / "out.csv").exists()


def test_data_runs_the_reference_without_the_c_extension(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    hide_the_c_extension(monkeypatch)
    output = tmp_path / "out.csv"
    argv = ["data", "--count", "100", "--output", str(output), "--implementation", "reference"]
    assert main([*argv, "--skip-reference"]) == 0
    assert "100 sensor readings generated (seed 42)" in capsys.readouterr().out
    assert output.read_text().startswith("result\n")


def test_data_defaults_are_the_data_examples() -> None:
    from pipeline import cli
    from pipeline.demos import sensors

    assert cli.DATA_DEFAULT_COUNT == sensors.DEFAULT_COUNT
    assert cli.DATA_DEFAULT_BATCH_SIZE == sensors.DEFAULT_BATCH_SIZE
    assert cli.build_parser().parse_args(["data"]).seed == sensors.DEFAULT_SEED


@pytest.mark.c_stage
def test_data_passes_its_options_to_the_data_example(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []

    def run(**options: object) -> int:
        calls.append(options)
        return 3

    monkeypatch.setattr("pipeline.demos.sensors.run", run)
    assert main(["data", "--count", "7", "--threads", "3", "--skip-reference"]) == 3
    assert calls == [
        {
            "input_path": None,
            "column": "value",
            "count": 7,
            "seed": 42,
            "threads": 3,
            "batch_size": 65_536,
            "output": Path("results.csv"),
            "implementation": "native",
            "skip_reference": True,
        }
    ]


@pytest.mark.c_stage
def test_a_stage_error_in_the_data_example_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(**options: object) -> int:
        error = StageError("NativeStage", "process", detail="ValueError: bad buffer")
        raise error from ValueError("bad buffer")

    monkeypatch.setattr("pipeline.demos.sensors.run", run)
    assert main(["data"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "pipeline: error: stage 'NativeStage' failed in process_batch(): ValueError: bad buffer"
    ]


@pytest.mark.c_stage
def test_a_cause_the_message_does_not_name_gets_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(**options: object) -> int:
        raise StageError("NativeStage", "process") from ValueError("bad buffer")

    monkeypatch.setattr("pipeline.demos.sensors.run", run)
    assert main(["data"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "pipeline: error: stage 'NativeStage' failed in process_batch()",
        "pipeline: caused by ValueError: bad buffer",
    ]


@pytest.mark.parametrize(
    "arguments",
    [
        ["demo"],
        ["custom"],
        ["data", "--count", "10", "--skip-reference", "--output", os.devnull],
        ["etl", "--rows", "20"],
        ["queue", os.devnull, "status"],
    ],
    ids=lambda arguments: arguments[0],
)
def test_a_closed_standard_output_is_one_line_of_error_and_a_failure_status(
    arguments: list[str],
) -> None:
    result = run_command("sh", "-c", 'exec "$0" -m pipeline "$@" >&-', sys.executable, *arguments)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"pipeline {arguments[0]}: error: standard output is closed: there is nowhere to print"
    ]


def test_stream_with_a_plot_but_no_matplotlib_says_so_before_the_stream_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    plot = tmp_path / "windows.png"
    arguments = ["etl", "--stream", "--readings", "50", "--rate", "1e6", "--plot", str(plot)]
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing streamed
    assert captured.err.splitlines() == [
        "pipeline etl: error: plotting needs matplotlib: pip install 'threaded-pipeline[plot]'"
    ]
    assert not plot.exists()


def test_the_demo_report_comes_under_its_own_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--report"]) == 0
    out = capsys.readouterr().out
    assert out.index("elapsed:") < out.index("bottleneck:") < out.index("x*2+10 is always even")


def test_data_with_a_cell_that_is_not_a_number_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readings = tmp_path / "readings.csv"
    readings.write_text("value\n1.5\nabc\n")
    output = tmp_path / "out.csv"
    argv = ["data", "--input", str(readings), "--output", str(output), "--skip-reference"]
    assert main([*argv, "--implementation", "reference"]) == 1
    assert capsys.readouterr().err == (
        f"pipeline data: error: {readings}, line 3: 'abc' is not a number\n"
    )


# what -v and -vv say they log, each subcommand


def verbose_help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    return help_text.split("-v, --verbose log more: ")[1].split(" -q, --quiet")[0]


def test_demo_very_verbose_logs_every_item_in_every_stage_as_its_help_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert verbose_help("demo", capsys) == (
        "-v the runs, each stage processing each item and each final output; -vv also the "
        "thread and the logger of each record"
    )
    assert main(["demo", "-vv", "--items", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    for stage, line in [
        ("MultiplyStage", "MultiplyStage processing item: 3 -> 6"),
        ("AddStage", "AddStage processing item: 6 -> 16"),
        ("FilterStage", "FilterStage processing item: 16 kept"),
    ]:
        assert f"[INFO] pipeline-{stage}-0 pipeline.demos.classic: {line}" in err
    assert "[INFO] MainThread pipeline.demos.classic: Final output: 16" in err


def test_custom_very_verbose_logs_every_line_in_every_stage_as_its_help_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "-vv also every line in every stage, with its thread" in verbose_help("custom", capsys)
    path = tmp_path / "two.txt"
    path.write_text("a  b\nlonger   line\n", encoding="utf-8")
    assert main(["custom", str(path), "-vv", "--min-length", "5"]) == 0
    err = capsys.readouterr().err.splitlines()
    for stage, line in [
        ("NormaliseWhitespace", "NormaliseWhitespace: 'a  b' -> 'a b'"),
        ("TitleCase", "TitleCase: 'a b' -> 'A B'"),
        ("MinimumLength", "MinimumLength: 'A B' dropped"),
        ("MinimumLength", "MinimumLength: 'Longer Line' kept"),
    ]:
        assert f"[DEBUG] pipeline-{stage}-0 pipeline.demos.text: {line}" in err


def test_data_verbose_logs_each_step_as_its_help_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "-v each step of the run" in verbose_help("data", capsys)
    output = tmp_path / "out.csv"
    argv = ["data", "--count", "10", "--output", str(output), "--implementation", "reference"]
    assert main([*argv, "-vv"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "[INFO] MainThread pipeline.demos.sensors: generating 10 readings",
        "[INFO] MainThread pipeline.demos.sensors: transforming with reference on 2 threads",
        f"[INFO] MainThread pipeline.demos.sensors: writing the results to {output}",
        "[INFO] MainThread pipeline.demos.sensors: transforming with the pure-Python reference "
        "on 1 thread",
    ]


# the version


@pytest.mark.parametrize("argv", [["--version"], ["demo", "--version"], ["data", "--version"]])
def test_version_prints_the_package_version(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"pipeline {pipeline.__version__}\n"


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_launchers_answer_version(launcher: str) -> None:
    result = run_python(launcher, "--version")
    assert (result.returncode, result.stdout) == (0, f"pipeline {pipeline.__version__}\n")


# a reader that goes away: `pipeline ... | head`


def read_a_little_then_close(*argv: str) -> tuple[int, str]:
    """Run `python -m pipeline ARGV`, read 100 bytes of its output, close the pipe, wait."""
    command = [sys.executable, "-m", "pipeline", *argv]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        assert len(process.stdout.read(100)) == 100
        process.stdout.close()
        err = process.stderr.read()
        return process.wait(timeout=TIMEOUT), err


def test_a_closed_stdout_ends_the_demo_quietly() -> None:
    # Far more output than a pipe holds, so the demo is still writing when the pipe closes.
    status, err = read_a_little_then_close("demo", "-q", "--items", "300000")
    assert (status, err) == (141, "")


def test_a_closed_stdout_ends_a_streaming_run_quietly(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_text("a line long enough to be kept\n" * 100_000, encoding="utf-8")
    status, err = read_a_little_then_close("custom", "-q", str(path), "--workers", "2")
    assert (status, err) == (141, "")


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


@pytest.mark.c_stage
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
    assert capsys.readouterr().err == (
        "pipeline demo: error: pipeline.observe.progress needs tqdm: "
        "pip install 'threaded-pipeline[progress]'\n"
    )


# adding a subcommand, as cli.py's docstring says


def add_echo(commands: cli.Commands) -> None:
    def echo(args: argparse.Namespace) -> int:
        print(" ".join([args.word] * args.times))
        logging.getLogger("echo").debug("echoed %r", args.word)
        return 0

    parser = commands.add(
        "echo",
        handler=echo,
        help="say a word again",
        description="Print WORD --times times.",
        verbose="-vv the word echoed",
    )
    parser.add_argument("word")
    parser.add_argument("--times", type=cli.positive_int, default=2, metavar="N")


def test_a_registered_subcommand_gets_the_shared_options_and_checks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "SUBCOMMANDS", [*cli.SUBCOMMANDS, add_echo])
    assert main(["echo", "hey", "-vv"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "hey hey\n"
    assert captured.err == "[DEBUG] MainThread echo: echoed 'hey'\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["echo", "hey", "--times", "0"])
    assert exit_info.value.code == 2
    assert "argument --times: must be >= 1, got 0" in capsys.readouterr().err
    assert "-v, --verbose  log more: -vv the word echoed" in verbose_help_text("echo", capsys)


def verbose_help_text(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return capsys.readouterr().out


def test_the_demos_are_plain_calls() -> None:
    out = io.StringIO()
    assert classic.run(3, quiet=True, out=out) == 0
    assert out.getvalue() == "[12, 14, 16]\n"
    out, err = io.StringIO(), io.StringIO()
    lines = ["a  short  one", "a   line  long enough"]
    assert text.run(lines, min_length=12, out=out, err=err) == 0
    assert out.getvalue() == "A Line Long Enough\n"
    assert err.getvalue().startswith("kept 1 lines of at least 12 characters in ")


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_etl_very_verbose_logs_the_library_records_as_its_help_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert "-vv the library's records, such as windows still open when a stream stops" in (
        verbose_help("etl", capsys)
    )
    command = [sys.executable, "run_etl_example.py", "--stream", "--rate", "2000", "-vv"]
    with subprocess.Popen(
        [*command, "--window", "0.05"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"streaming sensor readings")
        assert process.stdout.readline().startswith(b"[    0.00,     0.05) n=")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130
    assert re.search(
        r"^\[DEBUG\] pipeline-windows-0 pipeline\.stages\.windows: windows: the run stopped "
        r"with \d+ window\(s\) open$",
        err.decode(),
        re.MULTILINE,
    )
