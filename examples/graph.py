"""Fan out to two services and join their answers: a diamond-shaped graph.

Each order goes to two branches at once (a broadcast): `price` looks up its price, and
`stock` keeps only the orders whose item is in stock (it drops the others). A
`SequenceJoin` puts each order's two answers back together, in input order, and
drops an order a branch dropped. The queues are as small as they can be
(`queue_size=1`): a join that waited on one branch while the other's queue was full
would deadlock here, and this one does not. The graph's statistics say how much the
join had to hold.

Run: .venv/bin/python examples/graph.py
"""

from __future__ import annotations

from pipeline.graph import Graph, GraphPipeline, SequenceJoin
from pipeline.stages import FunctionStage, PredicateStage

PRICES = {"apple": 0.5, "pear": 0.75, "plum": 0.3}
IN_STOCK = {"apple", "plum"}
ORDERS = [(number, item) for number, item in enumerate(["apple", "pear", "plum"] * 400)]


def read(order: tuple[int, str]) -> tuple[int, str]:
    return order


def price(order: tuple[int, str]) -> float:
    return PRICES[order[1]]


def in_stock(order: tuple[int, str]) -> bool:
    return order[1] in IN_STOCK


def invoice(priced: float, stocked: tuple[int, str]) -> str:
    number, item = stocked
    return f"order {number}: {item} at {priced:.2f}"


def main() -> int:
    graph = (
        Graph()
        .add(FunctionStage(read, name="read"))
        .add(FunctionStage(price, name="price"), after="read")
        .add(PredicateStage(in_stock, name="stock"), after="read")
        .add(SequenceJoin(invoice, name="invoice"), after=["price", "stock"])
    )
    print(graph.to_mermaid())
    pipeline: GraphPipeline[tuple[int, str], str] = graph.build(queue_size=1, batch_size=1)
    invoices = pipeline.run(ORDERS)
    assert invoices == [invoice(price(order), order) for order in ORDERS if in_stock(order)]
    join = pipeline.stats().joins[0]
    print(f"{len(invoices)} invoices for {len(ORDERS)} orders, in order: {invoices[:2]} ...")
    print(f"the join held at most {join.high_water_mark} parts; {join.dropped} orders dropped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
