"""The command line: `python -m pipeline`, and the `run_*.py` launchers, which all call `main`.

Subcommands:
- `demo` (the default): the classic MultiplyStage -> AddStage -> FilterStage over 1..N;
- `custom`: the text pipeline of `pipeline.demos.text` over a file or a sample text;
- `data`: the native production example of `pipeline.demos.sensors`, imported only when
  asked for, because it needs the compiled C module;
- `etl`: the ETL and stream demo of `pipeline.demos.etl`;
- `queue FILE status|peek|requeue-dead`: look inside a durable queue file
  (`pipeline.queues.command`).

This is the only module that configures logging, and only for the duration of `main`:
the library just logs to `logging.getLogger(__name__)`.

Exit codes: 0 success, 1 the pipeline failed, 2 a usage error, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from importlib import import_module
from types import ModuleType
from typing import Any

from pipeline.demos import etl as etl_demo
from pipeline.demos.classic import AddStage, FilterStage, MultiplyStage
from pipeline.demos.text import SAMPLE_TEXT, text_pipeline
from pipeline.errors import StageError
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, Pipeline
from pipeline.queues.command import add_queue_command, run_queue_command

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "LOG_FORMAT", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

LOG_FORMAT = "%(threadName)s %(name)s: %(message)s"

PROG = "pipeline"
DEFAULT_COMMAND = "demo"
SHOWN_OUTPUTS = 20  # the demo summary lists at most this many outputs

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: `sys.argv[1:]`), run the subcommand, and return the exit code.

    Without a subcommand, `demo` runs: `pipeline --items 3` means `pipeline demo --items 3`.

    Raises:
        SystemExit: for `--help` (code 0) and usage errors (code 2), as argparse does.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, DEFAULT_COMMAND)
    parser = build_parser()
    # `data` takes the options pipeline.demos.sensors defines; they are left unparsed here.
    args, unparsed = parser.parse_known_args(args_list)
    command: Callable[[argparse.Namespace], int]
    if args.command == "data":
        data_example = _import_data_example()
        if data_example is None:
            return EXIT_USAGE
        args = _data_parser(data_example).parse_args(unparsed)
        command = data_example.run
    elif args.command == "etl":
        args = _data_parser(etl_demo, "etl").parse_args(unparsed)
        command = etl_demo.main
    elif unparsed:
        parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
    elif args.command == "queue":
        command = run_queue_command
    else:
        command = run_custom if args.command == "custom" else run_demo
    with logging_to_stderr(_log_level(args.verbose, args.quiet)):
        try:
            return command(args)
        except StageError as error:
            report_failure(error, show_traceback=args.verbose >= 2)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            # Pipeline re-raises Ctrl-C only after it has stopped and joined its threads.
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line, with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a threaded pipeline of stages joined by bounded queues.",
        epilog=f"Without a subcommand, {DEFAULT_COMMAND!r} runs; "
        f"`{PROG} SUBCOMMAND --help` shows its options.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    logging_options = _logging_options()
    observing_options = _observing_options()

    demo = subparsers.add_parser(
        "demo",
        parents=[logging_options, observing_options],
        help="the classic MultiplyStage -> AddStage -> FilterStage over 1..N (the default)",
        description="Run x*2 -> x+10 -> keep evens over 1..N and print a summary. "
        "With -vv each stage logs which item it turned into what, and in which thread.",
    )
    demo.add_argument(
        "--items", type=_non_negative_int, default=5, metavar="N", help="items 1..N (default 5)"
    )
    demo.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N", help="threads per stage (1)"
    )
    _add_queue_options(demo)

    custom = subparsers.add_parser(
        "custom",
        parents=[logging_options, observing_options],
        help="a text pipeline made by subclassing PipelineStage",
        description="Normalise whitespace -> title-case -> keep lines of at least "
        "--min-length characters, and print the lines kept. -v shows each worker's "
        "line count, logged by its teardown().",
    )
    custom.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="a UTF-8 text file to read (default: a built-in sample text)",
    )
    custom.add_argument(
        "--min-length",
        type=_non_negative_int,
        default=20,
        metavar="N",
        help="keep lines of at least N characters (default 20)",
    )
    custom.add_argument(
        "--workers", type=_positive_int, default=1, metavar="N", help="threads per stage (1)"
    )

    subparsers.add_parser(
        "data",
        add_help=False,  # `pipeline data --help` is answered by the data example's own parser
        help="the production example: validate and transform float64 data in C, "
        "GIL released (needs the compiled module; see `data --help`)",
    )
    subparsers.add_parser(
        "etl",
        add_help=False,  # answered by the ETL demo's own parser, as for `data`
        help="CSV -> validate -> clean -> enrich -> SQLite with a quality report; "
        "--stream windows a sensor stream (see `etl --help`)",
    )
    add_queue_command(subparsers, parents=[logging_options])
    return parser


@contextlib.contextmanager
def logging_to_stderr(level: int) -> Iterator[None]:
    """Send log records of `level` and above to the current `sys.stderr` while the block runs.

    The root logger is configured for the duration of `main` only, and restored after,
    rather than with `logging.basicConfig` for the life of the process, so that tests
    can call `main` again and again and read what it logged from stderr.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)
        handler.close()


def run_demo(args: argparse.Namespace) -> int:
    """Run the classic chain over 1..N and print the outputs and a summary."""
    workers: int = args.workers
    chain = (
        MultiplyStage(workers=workers) >> AddStage(workers=workers) >> FilterStage(workers=workers)
    )
    pipeline = Pipeline(chain, queue_size=args.queue_size, batch_size=args.batch_size)
    logger.info("running %r over 1..%d", pipeline, args.items)
    try:
        progress = _progress_bars(pipeline, args.progress, total=args.items)
    except ImportError as exc:
        print(f"{PROG} demo: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    with progress:
        outputs = pipeline.run(range(1, args.items + 1))
    elapsed = time.perf_counter() - started
    logger.info("finished in %.6f s", elapsed)
    if args.quiet:
        print(outputs)
    else:
        shown = repr(outputs[:SHOWN_OUTPUTS])
        if len(outputs) > SHOWN_OUTPUTS:
            shown = f"{shown[:-1]}, ...] ({len(outputs) - SHOWN_OUTPUTS} more)"
        print(f"pipeline:  {' -> '.join(stage.name for stage in pipeline.stages)}")
        print(f"workers:   {workers} per stage")
        print(f"items in:  {args.items}")
        print(f"items out: {len(outputs)}")
        print(f"outputs:   {shown}")
        print(f"elapsed:   {elapsed:.6f} s")
    if args.report:
        print(f"\n{_report(pipeline)}")
    return EXIT_OK


def run_custom(args: argparse.Namespace) -> int:
    """Stream the text pipeline over a file (or the sample text) and print the lines kept."""
    pipeline = text_pipeline(min_length=args.min_length, workers=args.workers)
    try:
        progress = _progress_bars(pipeline, args.progress)
    except ImportError as exc:
        print(f"{PROG} custom: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.enter_context(progress)
        if args.file is None:
            lines: Iterator[str] = iter(SAMPLE_TEXT.splitlines())
        else:
            try:
                lines = stack.enter_context(open(args.file, encoding="utf-8"))
            except OSError as exc:
                print(
                    f"{PROG} custom: error: cannot read {args.file!r}: {exc.strerror or exc}",
                    file=sys.stderr,
                )
                return EXIT_USAGE
        kept = 0
        # The file is read lazily by the pipeline's source thread, and each line is
        # printed as soon as it comes out of the last stage.
        for line in pipeline.stream(line.rstrip("\r\n") for line in lines):
            print(line)
            kept += 1
    elapsed = time.perf_counter() - started
    if args.report:
        print(_report(pipeline), file=sys.stderr)
    if not args.quiet:
        print(
            f"kept {kept} lines of at least {args.min_length} characters in {elapsed:.6f} s",
            file=sys.stderr,
        )
    return EXIT_OK


def _progress_bars(
    pipeline: Pipeline[Any, Any], wanted: bool, *, total: int | None = None
) -> contextlib.AbstractContextManager[object]:
    """Return live bars per stage if `wanted` (drawn only on a terminal), else a no-op.

    Raises:
        ImportError: tqdm is not installed (`pip install pipeline[progress]`).
    """
    if not wanted:
        return contextlib.nullcontext()
    from pipeline.observe.progress import Progress  # only when asked for: tqdm is an optional extra

    return Progress(pipeline, total=total)


def _report(pipeline: Pipeline[Any, Any]) -> str:
    """Return the bottleneck report of the pipeline's last run (see `pipeline.observe.report`)."""
    from pipeline.observe.report import format_report

    stats = pipeline.stats()
    return "no run yet" if stats is None else format_report(stats)


def _import_data_example() -> ModuleType | None:
    """Import `pipeline.demos.sensors` now, or explain on stderr why it cannot be imported."""
    try:
        # Imported here, not at the top: it needs the compiled C module, and the other
        # subcommands must work without it.
        return import_module("pipeline.demos.sensors")
    except ImportError as exc:
        print(f"{PROG} data: {exc}", file=sys.stderr)
        return None


def _data_parser(data_example: ModuleType, name: str = "data") -> argparse.ArgumentParser:
    """Return the parser of `pipeline data` (or `name`): -v/-q plus the example's options."""
    summary = (data_example.__doc__ or "").strip().splitlines()
    parser = argparse.ArgumentParser(
        prog=f"{PROG} {name}",
        parents=[_logging_options()],
        description=summary[0] if summary else None,
    )
    data_example.add_arguments(parser)
    return parser


def report_failure(error: StageError, *, show_traceback: bool) -> None:
    """Print the error and its cause on stderr, one line each (the traceback too with -vv)."""
    print(f"{PROG}: error: {error}", file=sys.stderr)
    cause = error.__cause__
    if cause is not None:
        print(f"{PROG}: caused by {type(cause).__name__}: {cause}", file=sys.stderr)
    if show_traceback:
        traceback.print_exception(error, file=sys.stderr)


def _log_level(verbose: int, quiet: bool) -> int:
    """Return the level for -q (errors only), nothing (warnings), -v (info) or -vv (debug)."""
    if quiet:
        return logging.ERROR
    if verbose >= 2:
        return logging.DEBUG
    return logging.INFO if verbose == 1 else logging.WARNING


def _logging_options() -> argparse.ArgumentParser:
    """Return a parent parser holding -v/--verbose and -q/--quiet, shared by the subcommands."""
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more: -v info, -vv debug (each stage logs every item, with its thread)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print only the results, log only errors"
    )
    return options


def _observing_options() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("seeing the run")
    group.add_argument(
        "--report",
        action="store_true",
        help="after the run, print each stage's figures and name the bottleneck",
    )
    group.add_argument(
        "--progress",
        action="store_true",
        help="show a live bar per stage on stderr, on a terminal (needs pipeline[progress])",
    )
    return parser


def _add_queue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue-size",
        type=_positive_int,
        default=DEFAULT_QUEUE_SIZE,
        metavar="N",
        help=f"the most items each queue between stages holds (default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"the most items a thread moves in one handoff (default {DEFAULT_BATCH_SIZE})",
    )


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
