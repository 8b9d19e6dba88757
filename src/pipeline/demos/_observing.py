"""What the `demo` and `custom` runs share: `--progress` bars and the `--report` table."""

from __future__ import annotations

import contextlib
from typing import Any

from pipeline.pipeline import Pipeline

__all__ = ["progress_bars", "report_of"]


def progress_bars(
    pipeline: Pipeline[Any, Any], wanted: bool, *, total: int | None = None
) -> contextlib.AbstractContextManager[object]:
    """Return live bars per stage if `wanted` (drawn only on a terminal), else a no-op.

    Raises:
        ImportError: tqdm is not installed; the message says what to install.
    """
    if not wanted:
        return contextlib.nullcontext()
    from pipeline.observe.progress import Progress  # only when asked for: tqdm is an optional extra

    return Progress(pipeline, total=total)


def report_of(pipeline: Pipeline[Any, Any]) -> str:
    """Return the bottleneck report of the pipeline's last run (see `pipeline.observe.report`)."""
    from pipeline.observe.report import format_report

    stats = pipeline.stats()
    return "no run yet" if stats is None else format_report(stats)
