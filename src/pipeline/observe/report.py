"""The bottleneck report: a table of what each stage did, and which one the others wait on.

In a chain of threads joined by bounded queues, the slowest link sets the pace. Its
threads are busy all the time; the stages before it fill its input queue and then wait
for room (blocked, backpressure); the stages after it empty their queues and then wait
for items (starved). So the bottleneck is the stage that is mostly busy, and the waits
on either side of it confirm it:

- a slow first stage: it is busy, the stages after it are starved;
- a slow middle stage: it is busy, the stages before it blocked, the ones after starved;
- a slow last stage: it is busy, every stage before it is blocked.

When no stage is mostly busy, the pace is set outside the stages:
- the source (the iterable the pipeline reads) is slow when the first stage spends
  most of its time starved: nothing arrives for it to work on;
- the consumer (the code reading `Pipeline.stream()`) is slow when the last stage
  spends most of its time blocked on the full results queue.

Shares are of the time a stage's workers have existed (`workers * elapsed`), so a stage
with four workers, all busy, is busy 100% of the time. A state "dominates" when it is the
largest share and at least `DOMINANT_SHARE`; otherwise (a short run, mostly thread
start-up) no bottleneck is named. Standard library only.

The report works on any snapshot: during a run ("running for"), after a run that
processed all its input ("finished in"), and after a run that was stopped early by a
failure, `close()`, a `break` or Ctrl-C ("stopped after": some items read never made it
through every stage). Stages that share a name are told apart as `name#2`, `name#3`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from pipeline.stats import PipelineStatistics, StageStatistics

__all__ = [
    "CONSUMER",
    "DOMINANT_SHARE",
    "SOURCE",
    "Diagnosis",
    "bottleneck",
    "diagnose",
    "format_report",
    "stage_labels",
]

SOURCE: Final = "source"
"""What `bottleneck()` returns when the source is too slow to keep the stages busy."""

CONSUMER: Final = "consumer"
"""What `bottleneck()` returns when the code reading the results is the slowest part."""


DOMINANT_SHARE: Final = 0.5
"""The least share of its time a stage must spend in a state for that state to count."""


@dataclass(frozen=True, slots=True)
class Shares:
    """How a stage's worker time splits, each a fraction between 0 and 1."""

    busy: float
    starved: float
    blocked: float

    @classmethod
    def of(cls, stage: StageStatistics, elapsed: float) -> Shares:
        """Return the busy, starved and blocked shares of `stage` over `elapsed` seconds."""
        return cls(
            busy=stage.share_of(stage.busy_seconds, elapsed),
            starved=stage.share_of(stage.starved_seconds, elapsed),
            blocked=stage.share_of(stage.blocked_seconds, elapsed),
        )

    @property
    def mostly(self) -> Literal["busy", "starved", "blocked"] | None:
        """Return the state that dominates this stage's time (busy wins ties), or None."""
        largest = max(self.busy, self.starved, self.blocked)
        if largest < DOMINANT_SHARE:
            return None
        if self.busy == largest:
            return "busy"
        return "starved" if self.starved == largest else "blocked"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Which part of the run sets its pace, and the figures that show it.

    `culprit` is a stage name, `SOURCE` or `CONSUMER`; `kind` says which of the three.
    """

    culprit: str
    kind: Literal["stage", "source", "consumer"]
    reason: str


def diagnose(stats: PipelineStatistics) -> Diagnosis | None:
    """Return the bottleneck of a run with the reason, or None if there is no clear one.

    None means nothing has been processed yet, or no part of the run dominates (every
    stage waits about as much for input as for room, as in a short or balanced run).
    """
    elapsed = stats.elapsed_seconds
    if not stats.stages or elapsed <= 0 or not any(stage.batches for stage in stats.stages):
        return None
    shares = [Shares.of(stage, elapsed) for stage in stats.stages]
    busiest = max(range(len(shares)), key=lambda index: shares[index].busy)
    if shares[busiest].mostly == "busy":
        return _slow_stage(stats, shares, busiest)
    highest_busy = f"no stage is busy more than {_percent(shares[busiest].busy)} of the time"
    first, last = stats.stages[0], stats.stages[-1]
    if shares[-1].mostly == "blocked":
        return Diagnosis(
            CONSUMER,
            "consumer",
            f"the consumer of the results is the bottleneck: the last stage, {last.name}, "
            f"waits for room in the full results queue {_percent(shares[-1].blocked)} of "
            f"the time, and {highest_busy}",
        )
    source_blocked = min(1.0, stats.source_blocked_seconds / elapsed)
    # A source that mostly waits for room is fast: the first stage's starved time then
    # comes from handing items between threads, not from waiting for the source.
    if shares[0].mostly == "starved" and source_blocked < DOMINANT_SHARE:
        return Diagnosis(
            SOURCE,
            "source",
            f"the source is the bottleneck: the first stage, {first.name}, waits for items "
            f"{_percent(shares[0].starved)} of the time, and {highest_busy}",
        )
    return None


def bottleneck(stats: PipelineStatistics) -> str | None:
    """Return the name of the stage the others wait on, `SOURCE`, `CONSUMER`, or None."""
    diagnosis = diagnose(stats)
    return None if diagnosis is None else diagnosis.culprit


def stage_labels(stats: PipelineStatistics) -> list[str]:
    """Return a distinct label per stage: its name, with `#2`, `#3`... on repeated names."""
    seen: dict[str, int] = {}
    labels = []
    for stage in stats.stages:
        seen[stage.name] = seen.get(stage.name, 0) + 1
        count = seen[stage.name]
        labels.append(stage.name if count == 1 else f"{stage.name}#{count}")
    return labels


def completed(stats: PipelineStatistics) -> bool:
    """Return whether a run that is over processed every item it read through every stage.

    In a complete run, each stage took in exactly what the one before it passed on, and
    the caller received what the last one passed on; a stopped run leaves a gap.
    """
    flowing_in = stats.items_read
    for stage in stats.stages:
        if stage.items_in != flowing_in:
            return False
        flowing_in = stage.items_out
    return flowing_in == stats.items_delivered


def format_report(stats: PipelineStatistics) -> str:
    """Return a table of every stage's figures, the run's totals, and the bottleneck.

    Columns for the counts extras keep (`StageStatistics.extra`, such as "skipped") are
    added after "failed" when any stage has one.
    """
    elapsed = stats.elapsed_seconds
    if stats.running:
        state = "running for"
    else:
        state = "finished in" if completed(stats) else "stopped after"
    source_share = min(1.0, stats.source_blocked_seconds / elapsed) if elapsed > 0 else 0.0
    lines = [
        f"pipeline {state} {elapsed:.3f} s: {stats.items_read:,} items read, "
        f"{stats.items_delivered:,} delivered; the source waited for room "
        f"{stats.source_blocked_seconds:.3f} s ({_percent(source_share)})",
        "",
    ]
    extra_names = sorted({name for stage in stats.stages for name in stage.extra})
    header = (
        "stage",
        "workers",
        "in",
        "out",
        "failed",
        *extra_names,
        "busy",
        "starved",
        "blocked",
        "p50",
        "p90",
        "p99",
        "queue now/peak/max",
    )
    rows = [header]
    for label, stage in zip(stage_labels(stats), stats.stages, strict=True):
        shares = Shares.of(stage, elapsed)
        rows.append(
            (
                label,
                str(stage.workers),
                f"{stage.items_in:,}",
                f"{stage.items_out:,}",
                f"{stage.failed:,}",
                *(f"{stage.extra.get(name, 0):,}" for name in extra_names),
                f"{stage.busy_seconds:.3f}s {_percent(shares.busy):>4}",
                f"{stage.starved_seconds:.3f}s {_percent(shares.starved):>4}",
                f"{stage.blocked_seconds:.3f}s {_percent(shares.blocked):>4}",
                _duration(stage.latency_p50),
                _duration(stage.latency_p90),
                _duration(stage.latency_p99),
                f"{stage.queue_depth}/{stage.queue_high_water_mark}/{stage.queue_maxsize}",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        name, *figures = row
        cells = [name.ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(figures, widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append("busy: in the stage's code; starved: waiting for items; blocked: waiting for")
    lines.append("room downstream (backpressure); latencies are per item, estimated per batch.")
    lines.append(f"bottleneck: {_verdict(stats)}")
    return "\n".join(lines)


def _verdict(stats: PipelineStatistics) -> str:
    """Return the report's last line: the bottleneck and why, or why none is named."""
    diagnosis = diagnose(stats)
    if diagnosis is not None:
        return f"{diagnosis.culprit}: {diagnosis.reason}"
    if not any(stage.batches for stage in stats.stages):
        return "none yet: no stage has processed a batch"
    busiest = max(stats.stages, key=lambda stage: Shares.of(stage, stats.elapsed_seconds).busy)
    busy = Shares.of(busiest, stats.elapsed_seconds).busy
    return (
        f"none stands out: no part of the run spends most of its time working or waiting "
        f"on one side (the busiest stage, {busiest.name}, is busy {_percent(busy)}); the "
        "threads wait on each other, so the work per item is small next to the handoffs"
    )


def _slow_stage(stats: PipelineStatistics, shares: list[Shares], index: int) -> Diagnosis:
    """Describe stage `index` as the bottleneck, with the waits on either side of it."""
    stage = stats.stages[index]
    reason = f"{stage.name} is busy {_percent(shares[index].busy)} of the time"
    if index == 0:
        elapsed = stats.elapsed_seconds
        waiting = min(1.0, stats.source_blocked_seconds / elapsed)
        reason += f"; the source waits for room in {stage.name}'s input queue {_percent(waiting)}"
    else:
        upstream = stats.stages[index - 1].name
        reason += (
            f"; {upstream}, before it, waits for room in {stage.name}'s input queue "
            f"{_percent(shares[index - 1].blocked)}"
        )
    reason += " of the time"
    if index + 1 < len(stats.stages):
        downstream = stats.stages[index + 1].name
        reason += (
            f"; {downstream}, after it, waits for items {_percent(shares[index + 1].starved)} "
            "of the time"
        )
    return Diagnosis(stage.name, "stage", reason)


def _percent(share: float) -> str:
    return f"{share:.0%}"


def _duration(seconds: float | None) -> str:
    """Return `seconds` in a unit a reader takes in at a glance: 12 ms, 340 µs."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"
