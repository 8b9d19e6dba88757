"""Build hook: everything else about the package lives in pyproject.toml.

The C stage (`pipeline.native`) is built by cffi. cffi refuses to build on a
free-threaded CPython 3.13 ("upgrade to free-threaded 3.14"), so there the
package is installed without it: every pure-Python part works, and
`import pipeline.native.compiled` raises an ImportError that says why. Standard
packaging cannot express this (no environment marker tells a free-threaded
interpreter apart), so on 3.13t install with
`pip install --no-build-isolation --no-deps -e .` after installing setuptools;
docs/gil-free.md ("Free-threaded Python") has the steps.
"""

import sys
import sysconfig

from setuptools import setup

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

if FREE_THREADED and sys.version_info < (3, 14):
    sys.stderr.write(
        "pipeline: free-threaded Python "
        f"{sys.version_info.major}.{sys.version_info.minor}t: cffi cannot build the C stage "
        "here, so pipeline.native.compiled is not built; everything else works "
        "(use pipeline.native.reference for the transform)\n"
    )
    setup()
else:
    setup(cffi_modules=["csrc/build_native.py:ffibuilder"])
