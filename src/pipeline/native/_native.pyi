"""Type stub for the cffi-generated extension built by csrc/build_native.py.

Hand-written: it declares only what pipeline.native.compiled uses, so mypy --strict
checks that module without needing type information for cffi itself.
"""

from typing import Literal, overload

class CData:
    """A cffi pointer or array (opaque to Python code)."""

    def __int__(self) -> int: ...

class TransformCountsPointer(CData):
    """A ``pl_transform_counts *``; cffi exposes the struct's fields directly."""

    kept: int
    negative: int
    invalid_input: int
    invalid_output: int

class FFI:
    def from_buffer(
        self, cdecl: str, python_buffer: object, require_writable: bool = False
    ) -> CData: ...
    def release(self, cdata: CData) -> None: ...
    def cast(self, cdecl: str, value: CData | int) -> CData: ...
    @overload
    def new(
        self, cdecl: Literal["pl_transform_counts *"], init: object = None
    ) -> TransformCountsPointer: ...
    @overload
    def new(self, cdecl: str, init: object = None) -> CData: ...

class Lib:
    PL_OK: int
    PL_ERROR_NULL_POINTER: int
    PL_ERROR_OUTPUT_TOO_SMALL: int
    def pl_transform(
        self,
        input: CData,
        length: int,
        output: CData,
        output_capacity: int,
        counts: TransformCountsPointer,
        /,
    ) -> int: ...
    def pl_transform_backward(
        self,
        input: CData,
        length: int,
        output: CData,
        output_capacity: int,
        counts: TransformCountsPointer,
        /,
    ) -> int: ...
    def pl_move(self, destination: CData, source: CData, count: int, /) -> None: ...

ffi: FFI
lib: Lib
