"""The command line: the `pipeline` console script, `python -m pipeline` and the launchers.

Every entry point calls `main`. Subcommands:
- `demo` (the default): the classic MultiplyStage -> AddStage -> FilterStage over 1..N;
- `custom`: the text pipeline of `pipeline.demos.text` over a file or a sample text;
- `data`: the sensor-data example of `pipeline.demos.sensors` on the native stage;
- `etl`: the ETL job and the windowed sensor stream of `pipeline.demos.etl`;
- `queue FILE status|peek|dead|requeue-dead`: look inside a durable queue file
  (`pipeline.queues.command`).

Adding a subcommand: write one function `add_NAME(commands: Commands) -> None` and list it
in `SUBCOMMANDS`. It calls `commands.add(...)`, which returns the subcommand's parser with
--version, -v/-q (and, if asked, --report/--progress) already declared, and records the
handler: a function of the parsed namespace that calls a plain `run(...)` and returns the
exit status. It then declares its own options with the argument types below
(`positive_int`, `non_negative_int`, `positive_number`, `non_negative_number`,
`readable_file`, `writable_file`), so that every subcommand rejects a bad value the same
way, naming the option, with exit status 2, before any work starts. A handler imports
what needs an optional extra inside its body, so that the other subcommands work
without it. `main` turns what a handler raises into the same exit statuses for every
subcommand (below).

This is the only module that configures logging, and only for the duration of `main`:
the library just logs to `logging.getLogger(__name__)`.

Exit statuses: 0 success; 1 the run failed (a stage, the input data, or writing the
output); 2 a usage error, or a missing optional part (an extra, the C extension), said in
one line; 130 interrupted (Ctrl-C); 141 stdout was closed early (`| head`), quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from pipeline import __version__
from pipeline.errors import StageError, describe
from pipeline.pipeline import DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE

if TYPE_CHECKING:
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = [
    "DEBUG_LOG_FORMAT",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "LOG_FORMAT",
    "SUBCOMMANDS",
    "Commands",
    "Handler",
    "add_custom",
    "add_data",
    "add_demo",
    "add_etl",
    "build_parser",
    "main",
    "non_negative_int",
    "non_negative_number",
    "positive_int",
    "positive_number",
    "readable_file",
    "writable_file",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` leaves `yes` with

# -v: the level and the message, as the classic pipeline example prints them; -vv also
# names the thread and the logger of every record.
LOG_FORMAT = "[%(levelname)s] %(message)s"
DEBUG_LOG_FORMAT = "[%(levelname)s] %(threadName)s %(name)s: %(message)s"

PROG = "pipeline"
DEFAULT_COMMAND = "demo"

Handler: TypeAlias = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: `sys.argv[1:]`), run the subcommand, and return the exit status.

    Without a subcommand, `demo` runs: `pipeline --items 3` means `pipeline demo --items 3`.

    Raises:
        SystemExit: for `--help` and `--version` (status 0) and usage errors (status 2),
            as argparse does.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (
        args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version")
    ):
        args_list.insert(0, DEFAULT_COMMAND)
    args = build_parser().parse_args(args_list)
    handler: Handler = args.handler
    very_verbose = args.verbose >= 2
    if sys.stdout is None:  # started with its standard output closed (`>&-`)
        _say_error(args.command, "standard output is closed: there is nowhere to print", None)
        return EXIT_FAILURE
    with logging_to_stderr(_log_level(args.verbose, args.quiet)):
        try:
            status = handler(args)
            sys.stdout.flush()  # a closed pipe shows up here, not as a warning at exit
        except StageError as error:
            report_failure(error, show_traceback=very_verbose)
            return EXIT_FAILURE
        except ImportError as error:
            # A missing extra or C extension: the message says what to install.
            _say_error(args.command, str(error), error if very_verbose else None)
            return EXIT_USAGE
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, as command-line tools do.
            _discard_stdout()
            return EXIT_BROKEN_PIPE
        except OSError as error:
            _say_error(args.command, str(error), error if very_verbose else None)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            # Pipeline re-raises Ctrl-C only after it has stopped and joined its threads.
            print(f"{PROG}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    return status


class Commands:
    """The subcommands of the command line, each made with the options they all share.

    Args:
        subparsers: what `ArgumentParser.add_subparsers` returned.
    """

    def __init__(self, subparsers: Subparsers) -> None:
        self._subparsers = subparsers
        self._observing = _observing_options()

    def add(
        self,
        name: str,
        *,
        handler: Handler,
        help: str,
        description: str,
        verbose: str,
        observing: bool = False,
    ) -> argparse.ArgumentParser:
        """Add the subcommand `name` and return its parser, for its own options.

        Args:
            name: what the user types.
            handler: called with the parsed options; returns the exit status.
            help: one line for the list of subcommands in `pipeline --help`.
            description: the paragraph at the top of `pipeline NAME --help`.
            verbose: what -v and -vv log, for the help of -v/--verbose; say only what
                the subcommand really logs (a test runs each one with -vv).
            observing: also declare --report and --progress (for a run of a `Pipeline`).
        """
        parents = [_shared_options(verbose)]
        if observing:
            parents.append(self._observing)
        parser = self._subparsers.add_parser(
            name, parents=parents, help=help, description=description
        )
        parser.set_defaults(handler=handler)
        return parser


def add_demo(commands: Commands) -> None:
    """Declare `demo`: the classic chain over 1..N, with a summary."""
    demo = commands.add(
        "demo",
        handler=_run_demo,
        help="the classic MultiplyStage -> AddStage -> FilterStage over 1..N (the default)",
        description="Run x*2 -> x+10 -> keep evens over 1..N and print a summary, then the "
        "same with x*3, whose odd results the filter drops.",
        verbose="-v the runs, each stage processing each item and each final output; -vv "
        "also the thread and the logger of each record",
        observing=True,
    )
    demo.add_argument(
        "--items", type=non_negative_int, default=5, metavar="N", help="items 1..N (default 5)"
    )
    demo.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="threads per stage (1)"
    )
    _add_queue_options(demo)


def add_custom(commands: Commands) -> None:
    """Declare `custom`: the text pipeline made by subclassing the stage classes."""
    custom = commands.add(
        "custom",
        handler=_run_custom,
        help="a text pipeline made by subclassing PipelineStage",
        description="Normalise whitespace -> title-case -> keep lines of at least "
        "--min-length characters, and print the lines kept.",
        verbose="-v each worker's line count (logged by its teardown), -vv also every line "
        "in every stage, with its thread",
        observing=True,
    )
    custom.add_argument(
        "file",
        nargs="?",
        type=readable_file,
        metavar="FILE",
        help="a UTF-8 text file to read (default: a built-in sample text)",
    )
    custom.add_argument(
        "--min-length",
        type=non_negative_int,
        default=20,
        metavar="N",
        help="keep lines of at least N characters (default 20)",
    )
    custom.add_argument(
        "--workers", type=positive_int, default=1, metavar="N", help="threads per stage (1)"
    )


# The data example's defaults, repeated here so that `data --help` works without cffi.
DATA_DEFAULT_COUNT = 1_000_000
DATA_DEFAULT_BATCH_SIZE = 65_536


def add_data(commands: Commands) -> None:
    """Declare `data`: the sensor-data example on the native stage."""
    data = commands.add(
        "data",
        handler=_run_data,
        help="the production example: validate and transform float64 data in C, GIL released",
        description="Generate sensor readings (or read them from a CSV file), validate, "
        "filter and transform them in C on --threads threads with the GIL released, write "
        "the results to a CSV file, and compare with the pure-Python reference.",
        verbose="-v each step of the run; the readings are transformed in C, a chunk at a "
        "time, so -vv logs nothing per reading",
    )
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--input",
        type=readable_file,
        metavar="CSV",
        help="read readings from this CSV file (a header row, then one reading per row) "
        "instead of generating them",
    )
    source.add_argument(
        "--count",
        type=non_negative_int,
        default=DATA_DEFAULT_COUNT,
        metavar="N",
        help=f"readings to generate (default {DATA_DEFAULT_COUNT:,})",
    )
    data.add_argument(
        "--column", default="value", help="the CSV column holding the readings (default: value)"
    )
    data.add_argument("--seed", type=_int, default=42, help="seed for generated readings (42)")
    data.add_argument(
        "--threads", type=positive_int, default=2, metavar="N", help="worker threads (2)"
    )
    data.add_argument(
        "--batch-size",
        type=positive_int,
        default=DATA_DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"readings per chunk handed to a worker (default {DATA_DEFAULT_BATCH_SIZE:,})",
    )
    data.add_argument(
        "--output",
        type=writable_file,
        default=Path("results.csv"),
        metavar="CSV",
        help="where to write the results (default: results.csv)",
    )
    data.add_argument(
        "--implementation",
        choices=["native", "reference"],
        default="native",
        help="the transform for the main run (default: native, the C core)",
    )
    data.add_argument(
        "--skip-reference",
        action="store_true",
        help="do not run the pure-Python reference for comparison",
    )


def add_etl(commands: Commands) -> None:
    """Declare `etl`: the ETL job into SQLite, or with --stream the windowed sensor stream."""
    from pipeline.demos import etl  # for its defaults; it needs nothing optional

    parser = commands.add(
        "etl",
        handler=_run_etl,
        help="CSV -> validate -> clean -> enrich -> SQLite with a quality report; "
        "--stream windows a sensor stream",
        description="Generate a CSV of orders (some malformed), or read one, and run it "
        "through parse -> clean -> validate -> region lookup -> currency conversion into "
        "SQLite, then print the quality report and where the time went. With --stream, "
        "window a sensor stream and flag anomalies until Ctrl-C.",
        verbose="-v and -vv the library's records, such as windows still open when a stream "
        "stops; the printed reports say what each step did",
    )
    parser.add_argument(
        "--rows",
        type=positive_int,
        default=etl.DEFAULT_ROWS,
        metavar="N",
        help=f"rows to generate (default {etl.DEFAULT_ROWS:,})",
    )
    parser.add_argument("--input", type=readable_file, metavar="CSV", help="read this CSV instead")
    parser.add_argument(
        "--workdir", type=Path, help="keep the CSV and the databases here (default: a temp dir)"
    )
    parser.add_argument(
        "--sequential", action="store_true", help="run every step in one thread, for comparison"
    )
    parser.add_argument(
        "--io-workers",
        type=positive_int,
        default=etl.DEFAULT_IO_WORKERS,
        metavar="N",
        help=f"workers of the I/O-bound conversion (default {etl.DEFAULT_IO_WORKERS})",
    )
    parser.add_argument(
        "--io-latency",
        type=non_negative_number,
        default=etl.DEFAULT_IO_LATENCY * 1e3,
        metavar="MS",
        help=f"milliseconds per rate request (default {etl.DEFAULT_IO_LATENCY * 1e3:g})",
    )
    parser.add_argument(
        "--write-target",
        type=positive_number,
        default=etl.DEFAULT_WRITE_TARGET * 1e3,
        metavar="MS",
        help=f"latency objective of one write, in ms (default {etl.DEFAULT_WRITE_TARGET * 1e3:g})",
    )
    parser.add_argument(
        "--quality-json",
        type=writable_file,
        metavar="JSON",
        help="also write the quality report here",
    )
    parser.add_argument("--seed", type=_int, default=1, help="seed of the generated data (1)")
    stream = parser.add_argument_group("the stream (--stream)")
    stream.add_argument(
        "--stream", action="store_true", help="window a sensor stream until Ctrl-C instead"
    )
    stream.add_argument(
        "--rate",
        type=positive_number,
        default=etl.DEFAULT_RATE,
        help=f"readings a second (default {etl.DEFAULT_RATE:g})",
    )
    stream.add_argument(
        "--window", type=positive_number, default=1.0, metavar="SECONDS", help="window size (1)"
    )
    stream.add_argument(
        "--readings",
        type=positive_int,
        metavar="N",
        help="stop after this many readings (default: never)",
    )
    stream.add_argument(
        "--plot",
        type=writable_file,
        metavar="PNG",
        help="plot the windows there (needs `pip install 'threaded-pipeline[plot]'`)",
    )


def add_queue(commands: Commands) -> None:
    """Declare `queue FILE ACTION`: show what a durable queue file holds, or requeue its dead."""
    parser = commands.add(
        "queue",
        handler=_run_queue,
        help="look inside a durable queue file: status, peek, dead, requeue-dead",
        description="Show what a durable queue file holds, or move its dead letters back.",
        verbose="nothing more: the queue subcommand logs nothing",
    )
    parser.add_argument("file", metavar="FILE", help="the queue file (SQLite)")
    parser.add_argument(
        "action",
        choices=["status", "peek", "dead", "requeue-dead"],
        help="status: counts per queue; peek: the next ready items; dead: the dead letters "
        "with their attempts and error (these three only read the file); "
        "requeue-dead: move the dead letters back to ready",
    )
    parser.add_argument("--name", metavar="NAME", help="only this queue of the file")
    parser.add_argument(
        "-n",
        "--items",
        type=positive_int,
        default=10,
        metavar="N",
        help="peek, dead: how many items per queue (default 10)",
    )


def _run_queue(args: argparse.Namespace) -> int:
    from pipeline.queues.command import run_queue_command

    return run_queue_command(args)


SUBCOMMANDS: list[Callable[[Commands], None]] = [
    add_demo,
    add_custom,
    add_data,
    add_etl,
    add_queue,
]


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the whole command line, with one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run a threaded pipeline of stages joined by bounded queues.",
        epilog=f"Without a subcommand, {DEFAULT_COMMAND!r} runs; "
        f"`{PROG} SUBCOMMAND --help` shows its options.",
    )
    _add_version(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)
    commands = Commands(subparsers)
    for add_subcommand in SUBCOMMANDS:
        add_subcommand(commands)
    return parser


# The handlers: from parsed options to a plain call.


def _run_demo(args: argparse.Namespace) -> int:
    from pipeline.demos import classic

    return classic.run(
        args.items,
        workers=args.workers,
        queue_size=args.queue_size,
        batch_size=args.batch_size,
        quiet=args.quiet,
        report=args.report,
        progress=args.progress,
    )


def _run_custom(args: argparse.Namespace) -> int:
    from pipeline.demos import text

    options = {
        "min_length": args.min_length,
        "workers": args.workers,
        "quiet": args.quiet,
        "report": args.report,
        "progress": args.progress,
    }
    if args.file is None:
        return text.run(text.SAMPLE_TEXT.splitlines(), **options)
    with open(args.file, encoding="utf-8") as lines:  # read lazily, by the source thread
        return text.run(lines, **options)


def _run_data(args: argparse.Namespace) -> int:
    if args.implementation == "native":
        try:
            import_module("pipeline.native.compiled")
        except ImportError as error:
            reason = error.__cause__ or error
            _say_error(
                "data",
                f"the C stage is not built ({reason}); reinstall with a C compiler and "
                "Python's headers (`make install` in a checkout), or add "
                "`--implementation reference --skip-reference`",
                error if args.verbose >= 2 else None,
            )
            return EXIT_USAGE
    from pipeline.demos import sensors  # the native stage needs cffi: imported when asked for

    try:
        return sensors.run(
            input_path=args.input,
            column=args.column,
            count=args.count,
            seed=args.seed,
            threads=args.threads,
            batch_size=args.batch_size,
            output=args.output,
            implementation=args.implementation,
            skip_reference=args.skip_reference,
        )
    except ValueError as error:  # the CSV file lacks the column or holds a non-number
        _say_error("data", str(error), error if args.verbose >= 2 else None)
        return EXIT_FAILURE


def _run_etl(args: argparse.Namespace) -> int:
    from pipeline.demos import etl

    if args.stream:
        etl.run_stream(
            rate=args.rate,
            window=args.window,
            readings=args.readings,
            plot=args.plot,
            seed=args.seed,
        )
        return EXIT_OK
    try:
        result = etl.run(
            args.rows,
            input_csv=args.input,
            workdir=args.workdir,
            sequential=args.sequential,
            io_workers=args.io_workers,
            io_latency=args.io_latency / 1e3,
            write_target=args.write_target / 1e3,
            seed=args.seed,
            quality_json=args.quality_json,
        )
    except ValueError as error:  # not the CSV this job reads: a usage error
        _say_error("etl", str(error), error if args.verbose >= 2 else None)
        return EXIT_USAGE
    return EXIT_OK if result.reconciled else EXIT_FAILURE


# Argument types: every subcommand rejects bad values with these, before any work.


def positive_int(text: str) -> int:
    """Return `text` as an int >= 1, or raise the error argparse reports as a usage error."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """Return `text` as an int >= 0, or raise the error argparse reports as a usage error."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_number(text: str) -> float:
    """Return `text` as a finite float > 0, or raise the error argparse reports."""
    value = _number(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_number(text: str) -> float:
    """Return `text` as a finite float >= 0, or raise the error argparse reports."""
    value = _number(text)
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def readable_file(text: str) -> Path:
    """Return `text` as a path after opening the file once, or raise a usage error."""
    path = Path(text)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {exc.strerror or exc}") from None
    return path


def writable_file(text: str) -> Path:
    """Return `text` as a path if its folder exists and it is not a folder itself."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: it is a directory")
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: no such directory")
    return path


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


# Logging, failures, and the options every subcommand shares.


@contextlib.contextmanager
def logging_to_stderr(level: int) -> Iterator[None]:
    """Send log records of `level` and above to the current `sys.stderr` while the block runs.

    The root logger is configured for the duration of `main` only, and restored after,
    rather than with `logging.basicConfig` for the life of the process, so that tests
    can call `main` again and again and read what it logged from stderr.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(DEBUG_LOG_FORMAT if level <= logging.DEBUG else LOG_FORMAT)
    )
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


def report_failure(error: StageError, *, show_traceback: bool) -> None:
    """Print the error on stderr in one line, which names its cause (the traceback with -vv).

    A cause the error's message does not already end with gets a line of its own.
    """
    print(f"{PROG}: error: {error}", file=sys.stderr)
    cause = error.__cause__
    if cause is not None and not str(error).endswith(describe(cause)):
        print(f"{PROG}: caused by {describe(cause)}", file=sys.stderr)
    if show_traceback:
        traceback.print_exception(error, file=sys.stderr)


def _say_error(command: str, message: str, error: BaseException | None) -> None:
    """Print `pipeline COMMAND: error: MESSAGE` on stderr, and `error`'s traceback if given."""
    print(f"{PROG} {command}: error: {message}", file=sys.stderr)
    if error is not None:
        traceback.print_exception(error, file=sys.stderr)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that flushing what is left at exit cannot fail again.

    As the standard library's documentation of SIGPIPE advises; where stdout has no
    file descriptor (a test's capture), there is nothing to flush into a closed pipe.
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _log_level(verbose: int, quiet: bool) -> int:
    """Return the level for -q (errors only), nothing (warnings), -v (info) or -vv (debug)."""
    if quiet:
        return logging.ERROR
    if verbose >= 2:
        return logging.DEBUG
    return logging.INFO if verbose == 1 else logging.WARNING


def _shared_options(verbose: str) -> argparse.ArgumentParser:
    """Return a parent parser holding --version, -v/--verbose (saying `verbose`), -q/--quiet.

    --version is here too so that the launchers, which name the subcommand, answer it.
    """
    options = argparse.ArgumentParser(add_help=False)
    _add_version(options)
    group = options.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0, help=f"log more: {verbose}")
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print only the results, log only errors"
    )
    return options


def _add_version(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {__version__}",
        help="print the version and exit",
    )


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
        help="show a live bar per stage on stderr, on a terminal "
        "(needs `pip install 'threaded-pipeline[progress]'`)",
    )
    return parser


def _add_queue_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue-size",
        type=positive_int,
        default=DEFAULT_QUEUE_SIZE,
        metavar="N",
        help=f"the most items each queue between stages holds (default {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"the most items a thread moves in one handoff (default {DEFAULT_BATCH_SIZE})",
    )
