"""Serve a live dashboard while a pipeline runs: a page, a JSON snapshot, Prometheus text.

`Dashboard` starts a small HTTP server on a free port of 127.0.0.1 for as long as the
`with` block runs: open the printed address in a browser to watch the stages (the
page asks for `/stats` every second); a Prometheus server would scrape `/metrics`. The
run here takes about two seconds, and the script reads `/stats` itself halfway, as the
page does, then exits; pass a number of seconds to keep the page up longer after it.
Needs `pipeline[metrics]` (prometheus_client).

Run: .venv/bin/python examples/dashboard.py [SECONDS]
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any

from pipeline import Pipeline
from pipeline.observe import Dashboard
from pipeline.stages import FunctionStage, QualityStage, Required

ITEMS = 1000
halfway = threading.Event()  # set by the stage at the middle of the run
pause = threading.Event()  # never set: waiting on it stands in for a slow call


def enrich(record: Mapping[str, Any]) -> dict[str, Any]:
    pause.wait(0.002)
    if record["id"] >= ITEMS // 2:
        halfway.set()
    return {**record, "score": record["id"] % 7}


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        text: str = response.read().decode()
        return text


def look_halfway(url: str) -> None:
    """Read `/stats` once the run is halfway, as the page does every second."""
    halfway.wait(30)
    live = json.loads(read(url + "stats"))["stats"]
    delivered = live["items_delivered"]
    print(f"halfway, from /stats: running={live['running']}, {delivered} records delivered so far")


def main(argv: list[str]) -> int:
    linger = float(argv[0]) if argv else 0.0
    validate = QualityStage([Required("email")], name="validate")
    pipeline = Pipeline(
        validate >> FunctionStage(enrich, name="enrich"), queue_size=64, batch_size=8
    )
    records = [
        {"id": n, "email": "" if n % 50 == 0 else f"user{n}@example.com"} for n in range(ITEMS)
    ]
    panels = {"quality": validate.report.to_dict}
    with Dashboard(pipeline, name="dashboard example", panels=panels) as dashboard:
        print(f"open {dashboard.url} in a browser while the run goes on")
        watcher = threading.Thread(target=look_halfway, args=(dashboard.url,), name="watcher")
        watcher.start()
        try:
            pipeline.run(records)
        finally:
            halfway.set()  # the watcher ends even if the run failed before halfway
            watcher.join()
        stats = json.loads(read(dashboard.url + "stats"))
        metrics = read(dashboard.url + "metrics").splitlines()
        pause.wait(linger)  # time to look at the finished run's page
    delivered = stats["stats"]["items_delivered"]
    rejected = stats["panels"]["quality"]["value"]["rejected"]
    print(f"at the end, from /stats: {delivered} records delivered, {rejected} rejected")
    print(next(line for line in metrics if line.startswith("pipeline_items_delivered_total")))
    assert delivered + rejected == ITEMS
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
