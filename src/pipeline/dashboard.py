"""A small HTTP endpoint for a running pipeline: Prometheus text, JSON, and a live page.

Started only when asked, bound to 127.0.0.1 unless told otherwise, served by the
standard library's `ThreadingHTTPServer`; needs `pipeline[metrics]` for the Prometheus
text. Routes:
- `/metrics`: the Prometheus text exposition of `pipeline.metrics.PipelineCollector`;
- `/stats`: the JSON snapshot of `pipeline.metrics.json_snapshot`;
- `/`: an HTML page, with no external assets, that fetches `/stats` every second and
  draws a row per stage (busy/starved/blocked shares and queue depth).

    with Dashboard(pipeline) as dashboard:
        print("open", dashboard.url)
        pipeline.run(source)

Leaving the `with` block stops the server, waits for the requests in progress, and
joins the server's threads.
"""

from __future__ import annotations

import html
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise ImportError(
        "pipeline.dashboard needs prometheus_client: pip install pipeline[metrics]"
    ) from exc

from pipeline.checks import integer, non_empty_str
from pipeline.metrics import json_snapshot, register_metrics
from pipeline.pipeline import Pipeline

__all__ = ["DEFAULT_HOST", "Dashboard"]

DEFAULT_HOST: Final = "127.0.0.1"
REQUEST_TIMEOUT_SECONDS: Final = 5.0
MAX_PORT: Final = 65535

logger = logging.getLogger(__name__)


class Dashboard:
    """Serve `/metrics`, `/stats` and `/` for `pipeline` while the `with` block runs.

    Args:
        pipeline: the pipeline to show; its latest run is read on every request.
        host: the address to bind; the default serves this machine only.
        port: the port to bind; 0 (the default) lets the system pick a free one.
        name: the value of the `pipeline` label and the page's title.
        registry: a registry to serve at `/metrics` instead of the dashboard's own (which
            holds only this pipeline's collector); register the collector on it yourself.

    Raises:
        TypeError, ValueError: an argument is of the wrong type or out of range.
        OSError: the address cannot be bound (raised by `start()` / `__enter__`).
    """

    def __init__(
        self,
        pipeline: Pipeline[Any, Any],
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        name: str = "pipeline",
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"pipeline must be a Pipeline, got {type(pipeline).__name__}")
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, got {type(host).__name__}")
        if not 0 <= integer("port", port) <= MAX_PORT:
            raise ValueError(f"port must be in 0..{MAX_PORT}, got {port}")
        non_empty_str("name", name)
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a CollectorRegistry or None, got {type(registry).__name__}"
            )
        self.pipeline = pipeline
        self.host = host
        self.port = port
        self.name = name
        if registry is None:
            registry = CollectorRegistry()
            register_metrics(pipeline, registry, name=name)
        self.registry = registry
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the dashboard's address, such as `http://127.0.0.1:8000/`.

        Raises:
            RuntimeError: the server is not running.
        """
        if self._server is None:
            raise RuntimeError("the dashboard is not running; use it in a with block")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> None:
        """Bind the address and serve in a background thread; starting twice is an error.

        Raises:
            RuntimeError: already started.
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the dashboard is already running")
        server = _Server((self.host, self.port), _Handler)
        server.dashboard = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="pipeline-dashboard", kwargs={"poll_interval": 0.1}
        )
        self._thread.start()
        logger.info("dashboard serving at %s", self.url)

    def close(self) -> None:
        """Stop serving, finish the requests in progress, and join every thread; idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()  # returns once serve_forever has returned
        thread.join()
        server.server_close()  # joins the request threads (block_on_close)
        self._server = self._thread = None

    def __enter__(self) -> Dashboard:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    """One thread per request, joined on close rather than left running as daemons."""

    daemon_threads = False
    block_on_close = True
    dashboard: Dashboard


class _Handler(BaseHTTPRequestHandler):
    """Answer one request; runs in a request thread of `_Server`."""

    server: _Server
    # A client that connects and says nothing must not hold a thread (and close()) forever.
    timeout = REQUEST_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        dashboard = self.server.dashboard
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(dashboard.registry))
        elif path == "/stats":
            body = json_snapshot(dashboard.pipeline, name=dashboard.name).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        elif path in ("/", "/index.html"):
            page = PAGE.replace("{{title}}", html.escape(dashboard.name))
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


# The page draws everything with textContent and DOM nodes, never innerHTML, so a stage
# name cannot inject markup.
PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{title}}: pipeline dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .3em; }
  #summary, #bottleneck, #status { margin: .3em 0; }
  #bottleneck { font-weight: 600; }
  #status { color: #777; font-size: .9em; }
  table { border-collapse: collapse; margin-top: .8em; }
  th, td { padding: .25em .6em; text-align: right; border-bottom: 1px solid #ddd; }
  th:first-child, td:first-child { text-align: left; }
  .bar { display: flex; width: 220px; height: 14px; background: #eee; }
  .bar span { display: block; height: 100%; }
  .busy { background: #2ca02c; } .starved { background: #9ecae1; }
  .blocked { background: #d62728; } .queue { background: #ff7f0e; }
  .legend span { display: inline-block; width: .9em; height: .9em; margin: 0 .3em 0 1em; }
</style>
</head>
<body>
<h1>{{title}}</h1>
<div id="summary">waiting for the first snapshot...</div>
<div id="bottleneck"></div>
<div class="legend">time of each stage's workers:
  <span class="busy"></span>busy <span class="starved"></span>starved (waiting for items)
  <span class="blocked"></span>blocked (waiting for room downstream)</div>
<table>
  <thead><tr><th>stage</th><th>workers</th><th>in</th><th>out</th><th>failed</th>
  <th>busy</th><th>starved</th><th>blocked</th><th>time</th><th>p50</th><th>p99</th>
  <th>queue</th><th>input queue now / peak / max</th></tr></thead>
  <tbody id="stages"></tbody>
</table>
<div id="status"></div>
<script>
"use strict";
function grouped(count) { return String(count).replace(/\\B(?=(\\d{3})+(?!\\d))/g, ","); }
function percent(share) { return Math.round(share * 100) + "%"; }
function duration(seconds) {
  if (seconds === null) { return "-"; }
  const units = [["s", 1], ["ms", 1e-3], ["\\u00b5s", 1e-6]];
  for (const [unit, scale] of units) {
    if (seconds >= scale) { return (seconds / scale).toPrecision(3) + " " + unit; }
  }
  return (seconds / 1e-9).toPrecision(3) + " ns";
}
function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) { td.className = className; }
  row.appendChild(td);
  return td;
}
function bar(parts) {
  const outer = document.createElement("div");
  outer.className = "bar";
  for (const [className, share] of parts) {
    const inner = document.createElement("span");
    inner.className = className;
    inner.style.width = (Math.min(1, Math.max(0, share)) * 100).toFixed(1) + "%";
    outer.appendChild(inner);
  }
  return outer;
}
function render(snapshot) {
  const stats = snapshot.stats;
  const summary = document.getElementById("summary");
  const rows = document.getElementById("stages");
  if (stats === null) { summary.textContent = "no run yet"; return; }
  summary.dataset.state = stats.running ? "running" : "finished";
  summary.textContent = (stats.running ? "running for " : "finished in ") +
    stats.elapsed_seconds.toFixed(2) + " s: " + grouped(stats.items_read) + " items read, " +
    grouped(stats.items_delivered) + " delivered";
  const verdict = stats.bottleneck;
  document.getElementById("bottleneck").textContent = verdict === null ?
    "bottleneck: none stands out" : "bottleneck: " + verdict.culprit + ": " + verdict.reason;
  const fresh = [];
  for (const stage of stats.stages) {
    const row = document.createElement("tr");
    row.dataset.stage = stage.name;
    cell(row, stage.name, "stage-name");
    cell(row, String(stage.workers), "workers");
    cell(row, grouped(stage.items_in), "items-in");
    cell(row, grouped(stage.items_out), "items-out");
    cell(row, grouped(stage.failed), "failed");
    cell(row, percent(stage.busy_share), "busy");
    cell(row, percent(stage.starved_share), "starved");
    cell(row, percent(stage.blocked_share), "blocked");
    cell(row, "", "time").appendChild(bar([["busy", stage.busy_share],
      ["starved", stage.starved_share], ["blocked", stage.blocked_share]]));
    cell(row, duration(stage.latency_p50), "p50");
    cell(row, duration(stage.latency_p99), "p99");
    const fill = stage.queue_maxsize ? stage.queue_depth / stage.queue_maxsize : 0;
    cell(row, "", "queue-bar").appendChild(bar([["queue", fill]]));
    cell(row, stage.queue_depth + " / " + stage.queue_high_water_mark + " / " +
      stage.queue_maxsize, "queue");
    fresh.push(row);
  }
  rows.replaceChildren(...fresh);
}
async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/stats", {cache: "no-store"});
    render(await response.json());
    status.textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    status.textContent = "cannot reach the pipeline: " + error;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"""
