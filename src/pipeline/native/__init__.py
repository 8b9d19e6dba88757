"""The production stage: drop NaN/Inf and negatives, then sqrt(x) * 2, in C with the GIL released.

- `compiled`: the C transform of `csrc/` through cffi (needs the built extension);
- `reference`: the same transform in pure Python, bit for bit;
- `counts`: `TransformCounts`, the one counts type both return;
- `buffers`: the float64 buffers both accept, their argument checks, and fresh
  output memory (lazily zeroed, on transparent huge pages where available);
- `production`: `DataPipeline` and `TransformStage`, the transform as pipeline stages,
  imported from here: `from pipeline.native import DataPipeline`.

Choosing an implementation is choosing a module: `compiled` and `reference` offer
`transform(values, *, out=None)`, `transform_into(values, output)` and
`move(source, destination)` with the same signatures, checks and messages.
Nothing here falls back from C to Python silently: importing `compiled` without
the built extension raises ImportError that says how to build it.
"""

from pipeline.native.counts import TransformCounts
from pipeline.native.production import (
    DataPipeline,
    DataStats,
    Implementation,
    SegmentTransformStage,
    TransformResult,
    TransformStage,
)

__all__ = [
    "DataPipeline",
    "DataStats",
    "Implementation",
    "SegmentTransformStage",
    "TransformCounts",
    "TransformResult",
    "TransformStage",
]
