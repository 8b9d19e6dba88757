"""Without the dask extra, importing the Dask stage says how to install it."""

from __future__ import annotations

import importlib
import re
import sys

import pytest


def test_a_missing_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("dask", "distributed"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pipeline.executors.dask_cluster", raising=False)
    message = "pipeline.executors.dask_cluster needs Dask: pip install 'threaded-pipeline[dask]'"
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$") as caught:
        importlib.import_module("pipeline.executors.dask_cluster")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)
