"""Configure cffi to build ``pipeline.native._native`` from the C core in ``csrc/``.

This is the only place cffi is configured. setuptools runs it from the
repository root through ``setup.py``'s ``cffi_modules``; running it directly
(``python csrc/build_native.py`` from the root) compiles the module in place
for a quick experiment.

API (out-of-line) mode is used rather than ABI mode because the C compiler
then checks every declaration below against ``transform.h``, the call is a
direct C call instead of a libffi trampoline, and cffi releases the GIL around
it, which is what lets several worker threads transform batches at once.
"""

import sys

from cffi import FFI  # type: ignore[import-untyped]  # cffi ships no type information

__all__ = ["ffibuilder"]

# The declarations Python may use; a subset of transform.h, copied exactly.
CDEF = """
typedef struct pl_transform_counts {
    uint64_t kept;
    uint64_t negative;
    uint64_t invalid_input;
    uint64_t invalid_output;
} pl_transform_counts;

enum { PL_OK = 0, PL_ERROR_NULL_POINTER = -1, PL_ERROR_OUTPUT_TOO_SMALL = -2 };

int pl_transform(const double *input, size_t length, double *output,
                 size_t output_capacity, pl_transform_counts *counts);

int pl_transform_backward(const double *input, size_t length, double *output,
                          size_t output_capacity, pl_transform_counts *counts);

void pl_move(double *destination, const double *source, size_t count);
"""


def compile_arguments(platform: str) -> list[str]:
    """Return the optimisation flags for the compiler used on ``platform``.

    -O3 is what lets GCC vectorise the square-root loop; -fno-math-errno lets
    ``sqrt`` compile to one instruction without an errno side path. Never add
    -ffast-math or -ffinite-math-only: they allow the compiler to assume NaN
    and Inf never occur, which silently deletes the validation step.
    """
    if platform == "win32":
        return ["/O2"]
    return ["-O3", "-fno-math-errno"]


ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "pipeline.native._native",
    '#include "transform.h"',
    sources=["csrc/transform.c"],
    include_dirs=["csrc"],
    depends=["csrc/transform.h"],
    extra_compile_args=compile_arguments(sys.platform),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
