"""Every exception class the package defines survives pickling, so errors cross processes.

An exception class that cannot be rebuilt from its pickled form breaks a process pool
that sends one back (python/cpython#103061, bpo-32696). The walk finds every class in
every module of the package; a new class needs an entry in SAMPLE_ARGUMENTS only if it
cannot be made without arguments, and the test says so.
"""

from __future__ import annotations

import importlib
import pickle
import pkgutil
from typing import Any

import pytest

import pipeline
from pipeline.errors import StageError

# Arguments to build each exception class that needs some, by qualified name.
SAMPLE_ARGUMENTS: dict[str, tuple[Any, ...]] = {
    "pipeline.errors.StageError": ("parse", "process", ("an", "item"), "ValueError: bad"),
    "pipeline.stage.ItemFailed": (("an", "item"), 3),
    "pipeline.resilience.resilient._GaveUp": (4,),
    "pipeline.executors.executor.BatchFailure": (ValueError("bad"), 2, "Traceback ..."),
    "pipeline.graph.errors.PipelineDeadlock": ("nothing moves", {"parse": "waits on its inbox"}),
    "pipeline.graph.errors.TaskGraphFailed": ("2 tasks failed", ("a", "result")),
    "pipeline.queues.durable._Undecodable": (7, ValueError("bad bytes")),
    "pipeline.stages.windows.LateItem": (("an", "item"), 3.0, 5.0),
    "pipeline.stages.windows.WindowFull": (0.0, 10.0, 1000),
}


def exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if module_info.name == "pipeline.__main__":
            continue  # running it is running the command line
        try:
            module = importlib.import_module(module_info.name)
        except ImportError as problem:
            if _optional_dependency_missing(problem):
                continue  # an extra whose optional dependency is not installed
            raise
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__.startswith("pipeline")
            ):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


def _optional_dependency_missing(problem: ImportError) -> bool:
    """Whether `problem` comes from a third-party module (or a built extension) missing."""
    chain: BaseException | None = problem
    while chain is not None:
        if isinstance(chain, ModuleNotFoundError) and chain.name:
            return chain.name.split(".")[0] != "pipeline" or chain.name.endswith("._native")
        chain = chain.__cause__ or chain.__context__
    return False


CLASSES = exception_classes()


def test_the_walk_finds_the_exceptions_of_the_core_and_the_extras() -> None:
    names = {kind.__name__ for kind in CLASSES}
    assert {"StageError", "PipelineClosed", "ItemFailed", "CircuitOpen", "NotPicklable"} <= names


@pytest.mark.parametrize("kind", CLASSES, ids=[kind.__qualname__ for kind in CLASSES])
def test_an_exception_survives_a_pickle_round_trip(kind: type[BaseException]) -> None:
    arguments = SAMPLE_ARGUMENTS.get(f"{kind.__module__}.{kind.__qualname__}", ("a message",))
    try:
        original = kind(*arguments)
    except TypeError as exc:
        pytest.fail(f"add sample arguments for {kind.__qualname__} to SAMPLE_ARGUMENTS: {exc}")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is kind
    assert str(copy) == str(original)
    assert repr(copy.args) == repr(original.args)
    assert repr(vars(copy)) == repr(vars(original))


def test_a_stage_error_without_an_item_stays_without_one() -> None:
    copy = pickle.loads(pickle.dumps(StageError("parse", "setup")))
    assert not copy.has_item
    assert copy.item is None
    assert str(copy) == "stage 'parse' failed in setup()"
