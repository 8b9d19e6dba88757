"""`python -m pipeline queue FILE status|peek|dead|requeue-dead`: look inside a queue file.

- `status`: every queue of the file (or `--name`): ready, leased and dead counts, the
  age of the oldest ready item, the codec; and the file's size on disk.
- `peek`: the next ready items of each queue, leasing nothing. JSON items are shown as
  JSON; pickled ones are never unpickled here (that could run code), only sized.
- `dead`: the dead letters of each queue, oldest first, with their attempts and error.
- `requeue-dead`: move the dead-letter rows back to ready, attempts reset.

`status`, `peek` and `dead` only look: the file is opened read-only, so they work on a
file this user may not write, and change nothing on disk (not even the -wal and -shm
files SQLite keeps beside a file in use). Leases of stopped processes show as leased
until the queue is next opened for work. `requeue-dead` opens the file for writing.

Everything printed that comes from the file (queue and codec names, items, errors) has
its control characters escaped, so a file cannot retitle, clear or rewrite the
terminal. An error is one line on stderr: exit status 2 for a file that is missing or
not a queue file, 1 for a queue file that cannot be used (damaged, locked, read-only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["run_queue_command"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PROG = "pipeline queue"


def run_queue_command(args: argparse.Namespace) -> int:
    """Run `queue FILE ACTION`; print to stdout, errors to stderr; return the exit code."""
    from pipeline.errors import PipelineError
    from pipeline.queues.errors import NotAQueueFile, SchemaTooNew

    try:
        return _run(args)
    except (FileNotFoundError, NotAQueueFile, SchemaTooNew) as exc:
        _say_error(str(exc))
        return EXIT_USAGE
    except KeyError as exc:  # the queue went away between listing and opening
        _say_error(str(exc.args[0]) if exc.args else str(exc))
        return EXIT_FAILURE
    except (PipelineError, OSError) as exc:
        _say_error(str(exc))
        return EXIT_FAILURE


def _run(args: argparse.Namespace) -> int:
    from pipeline.queues.codecs import JSON, PICKLE, Codec
    from pipeline.queues.durable import DurableQueue, queues_in

    names = queues_in(args.file)
    if args.name is not None:
        names = [(name, codec) for name, codec in names if name == args.name]
        if not names:
            _say_error(f"no queue named {args.name!r} in {args.file!r}")
            return EXIT_USAGE
    codecs: dict[str, Codec] = {"json": JSON, "pickle": PICKLE}
    if args.action == "status":
        size = sum(_size(Path(args.file + suffix)) for suffix in ("", "-wal", "-shm"))
        _say(f"{args.file}: {len(names)} queue(s), {size:,} bytes on disk (with WAL)")
    read_only = args.action != "requeue-dead"
    for name, codec_name in names:
        codec = codecs.get(codec_name) or _Opaque(codec_name)
        with DurableQueue[Any](args.file, name, codec=codec, read_only=read_only) as queue:
            if args.action == "status":
                counts = queue.counts()
                oldest = (
                    "-"
                    if counts.oldest_ready_seconds is None
                    else f"{counts.oldest_ready_seconds:.1f} s"
                )
                _say(
                    f"{name}: ready {counts.ready}, delayed {counts.delayed}, "
                    f"leased {counts.leased}, dead {counts.dead}, "
                    f"oldest ready {oldest}, codec {codec_name}"
                )
            elif args.action == "peek":
                _say(f"{name}:")
                for row_id, priority, payload in queue.peek(args.items):
                    _say(f"  #{row_id} priority {priority}: {_show(payload, codec_name)}")
            elif args.action == "dead":
                dead = queue.dead_letters(args.items)
                _say(f"{name}: {queue.counts().dead} dead item(s)")
                for item in dead:
                    _say(
                        f"  #{item.id} priority {item.priority}, attempts {item.attempts}: "
                        f"{_show(item.payload, codec_name)}"
                    )
                    _say(f"    error: {item.error}")
            else:
                _say(f"{name}: {queue.requeue_dead()} dead item(s) back to ready")
    return EXIT_OK


class _Opaque:
    """A codec known only by name: its items are shown by size, never decoded or encoded."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, item: Any) -> bytes:
        raise TypeError(f"codec {self.name!r} is not available to this command")

    def decode(self, data: bytes) -> Any:
        raise TypeError(f"codec {self.name!r} is not available to this command")


def _say(line: str) -> None:
    print(_printable(line))


def _say_error(message: str) -> None:
    print(f"{PROG}: error: {_printable(message)}", file=sys.stderr)


def _printable(text: str) -> str:
    """Return `text` with every character a terminal would act on escaped, as repr does."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escaped(char) for char in text)


def _escaped(char: str) -> str:
    escapes = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    if char in escapes:
        return escapes[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _show(payload: bytes, codec_name: str) -> str:
    if codec_name == "json":
        try:
            return json.dumps(json.loads(payload), ensure_ascii=False)
        except ValueError as exc:
            return f"<corrupt: {exc}>"
    return f"<{len(payload)} bytes, codec {codec_name}: not decoded here>"


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0
