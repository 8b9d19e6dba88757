"""What mypy infers for pipelines: checked by `mypy --strict` (`make check`), as typeshed does.

`assert_type` pins an inferred type; a `# type: ignore[code]` marks a line mypy must reject,
since --strict reports an ignore that is not needed (`warn_unused_ignores`), so a
mistake that stops being caught fails the check. `tests/typechecks/test_mypy.py` runs
mypy on this file too, so that pytest alone also checks it.
"""

from __future__ import annotations

from typing import Any, assert_type

from pipeline import FilteringStage, Pipeline, PipelineStage, PipelineStatistics, StageChain
from pipeline.graph import Graph, GraphPipeline, GraphStatistics, JoinStatistics, SequenceJoin
from pipeline.stages import FunctionStage, PredicateStage


class IntToStr(PipelineStage[int, str]):
    def process(self, item: int) -> str:
        return str(item)


class StrToFloat(PipelineStage[str, float]):
    def process(self, item: str) -> float:
        return float(item)


class Double(PipelineStage[int, int]):
    def process(self, item: int) -> int:
        return 2 * item


class Even(FilteringStage[int]):
    def keep(self, item: int) -> bool:
        return item % 2 == 0


def increment(item: int) -> int:
    return item + 1


# `>>` checks every link and types the chain from its ends.
assert_type(Double() >> IntToStr(), StageChain[int, str])
assert_type(Pipeline(Double() >> Even() >> IntToStr() >> StrToFloat()), Pipeline[int, float])
assert_type(Pipeline(IntToStr()), Pipeline[int, str])
IntToStr() >> IntToStr()  # type: ignore[operator]
Double() >> StrToFloat()  # type: ignore[operator]

# A tuple of up to four stages is checked the same way.
assert_type(Pipeline((IntToStr(),)), Pipeline[int, str])
assert_type(Pipeline((Double(), IntToStr())), Pipeline[int, str])
assert_type(Pipeline((Double(), IntToStr(), StrToFloat())), Pipeline[int, float])
assert_type(Pipeline((Double(), Even(), IntToStr(), StrToFloat())), Pipeline[int, float])
assert_type(Pipeline((Double(), Even()), queue_size=4, ordered=False), Pipeline[int, int])
Pipeline((IntToStr(), IntToStr()))  # type: ignore[arg-type]
Pipeline((Double(), StrToFloat()), batch_size=3)  # type: ignore[arg-type]
Pipeline((IntToStr(), StrToFloat(), StrToFloat()))  # type: ignore[arg-type]
Pipeline((Double(), Double(), Double(), StrToFloat()))  # type: ignore[arg-type]

# A list (or a longer tuple) is typed when every stage maps a type to itself, else Any.
assert_type(Pipeline([Double(), Even(), Double()]), Pipeline[int, int])
assert_type(Pipeline((Double(), Double(), Double(), Double(), Even())), Pipeline[int, int])
assert_type(Pipeline([Double(), IntToStr()]), Pipeline[Any, Any])
assert_type(Pipeline((Double(),) * 2 + (IntToStr(),) * 3), Pipeline[Any, Any])

# What goes in and comes out is checked against the pipeline's types.
assert_type(Pipeline(Double() >> IntToStr()).run([1, 2]), list[str])
Pipeline(Double() >> IntToStr()).run(["1"])  # type: ignore[list-item]
doubled: list[str] = Pipeline(Double()).run([1])  # type: ignore[assignment]

# Keyword arguments are checked whatever the form of the stages.
Pipeline(Double(), queue_size="8")  # type: ignore[call-overload]
Pipeline((Double(),), bogus=1)  # type: ignore[call-overload]

# A lambda has no types of its own: give them to FunctionStage, or use a def.
assert_type(FunctionStage[int, int](lambda x: x + 1), FunctionStage[int, int])
assert_type(FunctionStage(increment), FunctionStage[int, int])
assert_type(Pipeline(FunctionStage[int, int](lambda x: x + 1) >> IntToStr()), Pipeline[int, str])
untyped = FunctionStage(lambda x: x + 1)  # type: ignore[var-annotated]

# The README's example.
add_one = FunctionStage[int, int](lambda x: x + 1)
keep_even = PredicateStage[int](lambda x: x % 2 == 0)
label = FunctionStage[int, str](lambda x: f"#{x}")
assert_type(Pipeline(add_one >> keep_even >> label), Pipeline[int, str])
label >> add_one  # type: ignore[operator]

# A plain function is not a stage: mypy rejects chaining it (and so does the run time,
# with a TypeError that says to wrap it in FunctionStage).
Double() >> (lambda x: x + 1)  # type: ignore[operator]
Double() >> increment  # type: ignore[operator]

# stats() is a snapshot before, during and after a run: never None.
assert_type(Pipeline(Double()).stats(), PipelineStatistics)
assert_type(Pipeline(Double()).stats().stages[0].items_in, int)

# A graph's items are not typed across its edges: build() is GraphPipeline[Any, Any],
# and an annotation types what goes in and out. Its stats() is a GraphStatistics.
graph = (
    Graph()
    .add(FunctionStage(increment, name="read"))
    .add(FunctionStage(increment, name="one"), after="read")
    .add(FunctionStage(increment, name="two"), after="read")
    .add(SequenceJoin(name="pair"), after=["one", "two"])
)
assert_type(graph.build(), GraphPipeline[Any, Any])
typed_graph: GraphPipeline[int, tuple[int, int]] = graph.build(queue_size=4)
assert_type(typed_graph.run([1, 2]), list[tuple[int, int]])
assert_type(typed_graph.stats(), GraphStatistics)
assert_type(typed_graph.stats().joins, tuple[JoinStatistics, ...])
assert_type(typed_graph.stats().edges, tuple[tuple[str, str], ...])
