"""Observe a run: a bottleneck report, progress bars, Prometheus metrics, a dashboard, a timeline.

Each name reads the core's statistics snapshots (`Pipeline.stats()`) or its per-batch
observer; none changes how a run behaves. Import them from here:
`from pipeline.observe import Progress, format_report`.

- `format_report`, `diagnose`, `bottleneck`: the bottleneck report (standard library);
- `subscribe`: a shared monitor thread that samples `Pipeline.stats()` (standard library);
- `Progress`: a live bar per stage (needs tqdm, `threaded-pipeline[progress]`);
- `PipelineCollector`, `register_metrics`, `json_snapshot`, `statistics_to_dict`:
  Prometheus metrics and JSON snapshots (need prometheus_client, `[metrics]`);
- `Dashboard`: the live page, `/metrics` and `/stats` (needs prometheus_client, `[metrics]`);
- `TimelineRecorder`, `plot_timeline`, `draw_timeline`: a picture of a run (needs
  matplotlib, `[plot]`).

The names that need a third-party package are loaded the first time one is used, as
`concurrent.futures` loads its executors, so importing this folder needs none of them;
a missing package is named, with the extra that installs it, when its name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.observe.report import Diagnosis, Shares, bottleneck, diagnose, format_report
from pipeline.observe.sampler import Subscription, subscribe

if TYPE_CHECKING:
    from pipeline.observe.dashboard import Dashboard, Panel
    from pipeline.observe.metrics import (
        PipelineCollector,
        json_snapshot,
        register_metrics,
        statistics_to_dict,
    )
    from pipeline.observe.plot import StatsSample, TimelineRecorder, draw_timeline, plot_timeline
    from pipeline.observe.progress import Progress

# The names whose module needs a third-party package, and that module.
_NEEDS_A_PACKAGE: dict[str, str] = {
    "Dashboard": "pipeline.observe.dashboard",
    "Panel": "pipeline.observe.dashboard",
    "PipelineCollector": "pipeline.observe.metrics",
    "json_snapshot": "pipeline.observe.metrics",
    "register_metrics": "pipeline.observe.metrics",
    "statistics_to_dict": "pipeline.observe.metrics",
    "StatsSample": "pipeline.observe.plot",
    "TimelineRecorder": "pipeline.observe.plot",
    "draw_timeline": "pipeline.observe.plot",
    "plot_timeline": "pipeline.observe.plot",
    "Progress": "pipeline.observe.progress",
}


# Hidden from type checkers, so that mypy names a misspelt or moved name instead of
# typing it Any.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Load a name whose module needs a third-party package on first use, and keep it."""
        module = _NEEDS_A_PACKAGE.get(name)
        if module is None:
            raise AttributeError(f"module 'pipeline.observe' has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NEEDS_A_PACKAGE})


__all__ = [
    "Dashboard",
    "Diagnosis",
    "Panel",
    "PipelineCollector",
    "Progress",
    "Shares",
    "StatsSample",
    "Subscription",
    "TimelineRecorder",
    "bottleneck",
    "diagnose",
    "draw_timeline",
    "format_report",
    "json_snapshot",
    "plot_timeline",
    "register_metrics",
    "statistics_to_dict",
    "subscribe",
]
