"""The production stage: drop NaN/Inf and negatives, then sqrt(x) * 2, in C with the GIL released.

- `compiled`: the C transform of `csrc/` through cffi (needs the built extension);
- `reference`: the same transform in pure Python, bit for bit;
- `buffers`: the float64 buffers both accept;
- `production`: `DataPipeline` and `TransformStage`, the transform as pipeline stages.

Choosing an implementation is choosing a module. Nothing here falls back from C to
Python silently: importing `compiled` without the built extension raises ImportError
that says how to build it.
"""
