"""A pipeline run that can be killed at any moment and resumed: inputs acked with their outputs.

`run_resumable(pipeline, source, sink)` leases a batch from the durable `source`, runs
it through the pipeline, stores the outputs, then acks the batch. The guarantee:

- Same-file sink (`sink` is a `DurableQueue` in the source's file): the outputs are
  inserted and the inputs deleted in one SQLite transaction, so a crash at any moment
  either keeps both (the batch is done) or neither (the batch is leased again, by the
  next run or once its lease lapses). Every input's outputs are stored exactly once.
- Any other sink (a queue in another file, or a function): the sink is called first
  and the ack follows. A crash between the two runs the batch again, so its outputs
  can be stored twice: at least once. Make such a sink idempotent (key the outputs by
  the input) if duplicates matter.

Each batch is one `Pipeline.run`, so the outputs of a batch are exactly the outputs of
its inputs whatever the stages do (filter, expand, reorder); the price is starting the
pipeline's threads once per batch, so batches should carry some milliseconds of work.
The stages themselves may run twice for an item (a crash after they ran but before the
commit): side effects inside stages are at least once even with a same-file sink.

A consumer killed in the middle of a batch costs its items no attempt: their leases
lapse, and a lapse is counted apart from failures (the source's `max_lapses`, 20 by
default), so killing the consumer again and again in one batch dead-letters nothing.
Only a batch whose stages fail is counted against `max_attempts`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty
from typing import Any, TypeVar

from pipeline._checks import positive_int
from pipeline._interrupts import ctrl_c_held
from pipeline.errors import ShutDown, StageError, describe
from pipeline.pipeline import Pipeline
from pipeline.queues.durable import DurableQueue, Leased
from pipeline.queues.errors import CodecError, LeaseLost

__all__ = ["ResumableRun", "run_resumable"]

In = TypeVar("In")
Out = TypeVar("Out")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResumableRun:
    """What one `run_resumable` call did: batches committed, inputs acked, outputs stored."""

    batches: int
    items_in: int
    items_out: int
    exactly_once: bool


def run_resumable(
    pipeline: Pipeline[In, Out],
    source: DurableQueue[In],
    sink: DurableQueue[Out] | Callable[[list[Out]], object],
    *,
    batch_size: int = 1000,
    wait: bool = False,
    on_commit: Callable[[ResumableRun], object] | None = None,
) -> ResumableRun:
    """Run the ready items of `source` through `pipeline` into `sink`, acking as outputs are stored.

    Blocks until `source` has nothing ready (or, with `wait`, until `source` is shut
    down). Safe to kill at any moment and call again: see the module for what is
    guaranteed with a same-file sink and with any other.

    Args:
        pipeline: the stages; run once per batch.
        source: the durable queue the inputs are leased from.
        sink: a `DurableQueue` (exactly once if in the source's file), or a function
            taking each batch's outputs (at least once).
        batch_size: the most inputs leased, run and committed together.
        wait: keep waiting for new inputs instead of returning when none is ready.
        on_commit: called in this thread after each batch is committed, with the totals
            so far (for progress).

    Raises:
        StageError: a stage failed; the batch was nacked (its items come back, or go to
            the dead-letter table after the source's `max_attempts`).
        CodecError: the sink cannot encode an output; the batch was nacked the same way.
        TypeError, ValueError: a bad argument, named, before anything is leased.
    """
    positive_int("batch_size", batch_size)
    if not isinstance(source, DurableQueue):
        raise TypeError(f"source must be a DurableQueue, got {type(source).__name__}")
    if not isinstance(sink, DurableQueue) and not callable(sink):
        raise TypeError(
            "sink must be a DurableQueue or a function taking each batch's outputs, "
            f"got {type(sink).__name__}"
        )
    if on_commit is not None and not callable(on_commit):
        raise TypeError(f"on_commit must be callable or None, got {type(on_commit).__name__}")
    same_file = isinstance(sink, DurableQueue) and _same_file(source, sink)
    batches = items_in = items_out = 0
    while True:
        batch: list[Leased[In]] = []
        try:
            # Held, so that a Ctrl-C during the claim is raised here, with the batch in
            # hand to give back, and not between the commit of its leases and the return.
            with ctrl_c_held():
                batch = source.get_many(batch_size, block=False)
        except Empty:
            if not wait:
                break
            source.wait_for_change(source.poll_interval)
            continue
        except ShutDown:
            break
        except BaseException:
            _give_back(source, batch)
            raise
        try:
            outputs = pipeline.run([leased.item for leased in batch])
            if isinstance(sink, DurableQueue):
                if same_file:
                    with source.transaction() as connection:
                        sink.insert_in(connection, outputs)
                        source.ack_in(connection, batch)
                else:
                    sink.put_many(outputs)
                    source.ack_many(batch)
            else:
                sink(outputs)
                source.ack_many(batch)
        except (StageError, CodecError) as exc:
            with ctrl_c_held():  # every lease is given back, even if Ctrl-C comes meanwhile
                _fail(source, batch, describe(exc))
            raise
        except BaseException:
            _give_back(source, batch)
            raise
        batches += 1
        items_in += len(batch)
        items_out += len(outputs)
        if on_commit is not None:
            on_commit(ResumableRun(batches, items_in, items_out, exactly_once=same_file))
    logger.info("resumable run: %d batches, %d in, %d out", batches, items_in, items_out)
    return ResumableRun(batches, items_in, items_out, exactly_once=same_file)


def _fail(source: DurableQueue[Any], batch: list[Leased[Any]], error: str) -> None:
    """Nack every item of a failed batch: it comes back, or goes dead after `max_attempts`."""
    lapsed = 0
    for leased in batch:
        try:
            source.nack(leased, error)
        except LeaseLost:  # the lease lapsed while the batch ran: it is back already
            lapsed += 1
    if lapsed:
        logger.warning(
            "%d of the failed batch's %d leases had lapsed; those items were back already",
            lapsed,
            len(batch),
        )


def _give_back(source: DurableQueue[Any], batch: list[Leased[Any]]) -> None:
    """Release a batch stopped by no fault of its items (Ctrl-C, a lost lease, a sink error).

    Uncounted, and held against a second Ctrl-C. If even that fails, the leases lapse
    on their own.
    """
    if not batch:
        return
    try:
        with ctrl_c_held():
            source.release(batch)
    except Exception:
        logger.exception("could not release %d leased items; they return on expiry", len(batch))


def _same_file(source: DurableQueue[Any], sink: DurableQueue[Any]) -> bool:
    try:
        return source.path.resolve(strict=True).samefile(sink.path.resolve(strict=True))
    except OSError:
        return False
