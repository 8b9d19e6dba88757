"""`python -m pipeline queue FILE status|peek|requeue-dead`: look inside a queue file.

- `status`: every queue of the file (or `--name`): ready, leased and dead counts, the
  age of the oldest ready item, the codec; and the file's size on disk.
- `peek`: the next ready items of each queue, leasing nothing. JSON items are shown as
  JSON; pickled ones are never unpickled here (that could run code), only sized.
- `requeue-dead`: move the dead-letter rows back to ready, attempts reset.

Opening a queue releases the leases of stopped processes of this host, as any open does.
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


def run_queue_command(args: argparse.Namespace) -> int:
    """Run `queue FILE ACTION`; print to stdout, errors to stderr; return the exit code."""
    from pipeline.queues.codecs import JSON, PICKLE, Codec
    from pipeline.queues.durable import DurableQueue, queues_in
    from pipeline.queues.errors import NotAQueueFile, SchemaTooNew

    prog = "pipeline queue"
    try:
        names = queues_in(args.file)
    except (FileNotFoundError, NotAQueueFile, SchemaTooNew) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.name is not None:
        names = [(name, codec) for name, codec in names if name == args.name]
        if not names:
            print(f"{prog}: error: no queue named {args.name!r} in {args.file!r}", file=sys.stderr)
            return EXIT_USAGE
    codecs: dict[str, Codec] = {"json": JSON, "pickle": PICKLE}
    if args.action == "status":
        size = sum(_size(Path(args.file + suffix)) for suffix in ("", "-wal", "-shm"))
        print(f"{args.file}: {len(names)} queue(s), {size:,} bytes on disk (with WAL)")
    for name, codec_name in names:
        codec = codecs.get(codec_name) or _Opaque(codec_name)
        with DurableQueue[Any](args.file, name, codec=codec) as queue:
            if args.action == "status":
                counts = queue.counts()
                oldest = (
                    "-"
                    if counts.oldest_ready_seconds is None
                    else f"{counts.oldest_ready_seconds:.1f} s"
                )
                print(
                    f"{name}: ready {counts.ready}, leased {counts.leased}, dead {counts.dead}, "
                    f"oldest ready {oldest}, codec {codec_name}"
                )
            elif args.action == "peek":
                print(f"{name}:")
                for row_id, priority, payload in queue.peek(args.items):
                    print(f"  #{row_id} priority {priority}: {_show(payload, codec_name)}")
            else:
                print(f"{name}: {queue.requeue_dead()} dead item(s) back to ready")
    return EXIT_OK


class _Opaque:
    """A codec known only by name: its items are shown by size, never decoded or encoded."""

    def __init__(self, name: str) -> None:
        self.name = name

    def encode(self, item: Any) -> bytes:
        raise TypeError(f"codec {self.name!r} is not available to this command")

    def decode(self, data: bytes) -> Any:
        raise TypeError(f"codec {self.name!r} is not available to this command")


def _show(payload: bytes, codec_name: str) -> str:
    if codec_name == "json":
        try:
            return json.dumps(json.loads(payload), ensure_ascii=False)
        except ValueError as exc:
            return f"<corrupt: {exc}>"
    return f"<{len(payload)} bytes, codec {codec_name}: not decoded here>"


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0
