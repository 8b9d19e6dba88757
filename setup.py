"""Build hook: everything else about the package lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["csrc/build_native.py:ffibuilder"])
