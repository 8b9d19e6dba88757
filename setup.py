"""Build hook: the optional C stage. Everything else about the package is in pyproject.toml.

The C stage (`pipeline.native.compiled`) is an extension built by cffi; the rest of the
package is pure Python. Like the packages with optional C speed-ups (markupsafe,
simplejson, msgpack), the extension is built when it can be and left out when it cannot:
no C compiler, no Python headers, a compiler that fails, or free-threaded 3.13, where
cffi does not build. Then everything else is installed, one line on stderr says what was
left out (pip shows a build's output with `-v`), and `pipeline.native` says so at use.

`PIPELINE_NATIVE` chooses:
- `auto` (the default): build the C stage if possible, else leave it out;
- `required`: a C stage that cannot be built fails the install (for CI and packagers);
- `skip`: never build it: a pure `py3-none-any` wheel.

With the C stage, the wheel is built for CPython's stable ABI (`cp311-abi3`): one wheel
serves every CPython from 3.11 on (cffi compiles against the limited API). Free-threaded
builds have no stable ABI, so there the wheel is for that interpreter alone. The runtime
dependency on cffi exists only when the C stage is built: cffi calls into it at run time.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

sys.path.insert(0, str(Path(__file__).resolve().parent / "csrc"))
from check_compiler import INSTALL_HINT, missing_build_tool

MODES = ("auto", "required", "skip")
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
LIMITED_API = "cp311"  # the oldest Python the package supports, as requires-python says
RUNTIME_DEPENDENCIES = ["cffi>=1.17"]


class NativeBuildFailed(Exception):
    """The C stage's extension did not compile or link."""


class OptionalBuildExt(build_ext):
    """`build_ext` that turns a failed build of the C stage into `NativeBuildFailed`."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, ExecError, PlatformError, OSError) as exc:
            raise NativeBuildFailed(exc) from exc

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except (CCompilerError, ExecError, PlatformError, OSError, ValueError) as exc:
            raise NativeBuildFailed(exc) from exc


def native_mode() -> str:
    mode = os.environ.get("PIPELINE_NATIVE", "auto").strip().lower() or "auto"
    if mode not in MODES:
        sys.exit(f"pipeline: PIPELINE_NATIVE must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def reason_not_to_build(mode: str) -> str | None:
    """Return why the C stage will not be attempted here, or None to attempt it."""
    if mode == "skip":
        return "PIPELINE_NATIVE=skip"
    if FREE_THREADED and sys.version_info < (3, 14):
        return "cffi does not build on free-threaded Python 3.13 (it does from 3.14t)"
    return missing_build_tool()


def left_out(reason: str, mode: str) -> None:
    """Say in one line that the C stage is not built, or fail if it was required."""
    if mode == "required":
        sys.exit(f"pipeline: PIPELINE_NATIVE=required, but the C stage cannot be built: {reason}")
    hint = "" if mode == "skip" else f"; to get it, {INSTALL_HINT}, then reinstall"
    sys.stderr.write(
        f"pipeline: the C stage (pipeline.native.compiled) is not built: {reason}; "
        f"everything else is installed{hint}\n"
    )


def pure() -> None:
    setup(install_requires=[])


def with_native() -> None:
    options = {} if FREE_THREADED else {"bdist_wheel": {"py_limited_api": LIMITED_API}}
    setup(
        cffi_modules=["csrc/build_native.py:ffibuilder"],
        cmdclass={"build_ext": OptionalBuildExt},
        install_requires=RUNTIME_DEPENDENCIES,
        options=options,
    )


def main() -> None:
    mode = native_mode()
    reason = reason_not_to_build(mode)
    if reason is not None:
        left_out(reason, mode)
        pure()
        return
    try:
        with_native()
    except NativeBuildFailed as failure:
        detail = " ".join(str(failure).split())
        left_out(f"the build failed ({detail[:160]}{'...' if len(detail) > 160 else ''})", mode)
        pure()


main()
