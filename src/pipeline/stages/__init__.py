"""Ready-made stages built on the core's `PipelineStage`.

- `functions`: map, filter and flat-map stages made from plain functions;
- `windows`: count and time windows with one result per window, window statistics and
  anomalies (Welford);
- `quality`: declarative data-quality rules, a stage that rejects failing records
  naming the rule, and a quality report.
"""

from pipeline.stages.functions import FlatMapFunctionStage, FunctionStage, PredicateStage
from pipeline.stages.quality import (
    Consistent,
    InRange,
    IsType,
    Matches,
    OneOf,
    QualityReport,
    QualityStage,
    QualitySummary,
    Rejected,
    Rejects,
    Required,
    Rule,
    RuleFailure,
    Unique,
)
from pipeline.stages.windows import (
    Anomaly,
    CountWindows,
    LateItem,
    RunningStats,
    TimeWindows,
    Watermark,
    Window,
    WindowAnomalies,
    WindowFull,
    WindowSummary,
    anomalies,
    summarize,
)

__all__ = [
    "Anomaly",
    "Consistent",
    "CountWindows",
    "FlatMapFunctionStage",
    "FunctionStage",
    "InRange",
    "IsType",
    "LateItem",
    "Matches",
    "OneOf",
    "PredicateStage",
    "QualityReport",
    "QualityStage",
    "QualitySummary",
    "Rejected",
    "Rejects",
    "Required",
    "Rule",
    "RuleFailure",
    "RunningStats",
    "TimeWindows",
    "Unique",
    "Watermark",
    "Window",
    "WindowAnomalies",
    "WindowFull",
    "WindowSummary",
    "anomalies",
    "summarize",
]
