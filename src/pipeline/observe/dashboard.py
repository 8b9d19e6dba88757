"""A small HTTP endpoint for a running pipeline: Prometheus text, JSON, and a live page.

Started only when asked, bound to 127.0.0.1 unless told otherwise, served by the
standard library's `ThreadingHTTPServer`; needs `threaded-pipeline[metrics]` for the Prometheus
text. Routes:
- `/metrics`: the Prometheus text exposition of `pipeline.observe.metrics.PipelineCollector`;
- `/stats`: the JSON snapshot of `pipeline.observe.metrics.json_snapshot`;
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
from importlib import resources
from types import TracebackType
from typing import Any, Final

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise ImportError(
        "pipeline.observe.dashboard needs prometheus_client: "
        "pip install 'threaded-pipeline[metrics]'"
    ) from exc

from pipeline._checks import integer, non_empty_str
from pipeline.observe.metrics import json_snapshot, register_metrics
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


# The page (a package data file) draws everything with textContent and DOM nodes,
# never innerHTML, so a stage name cannot inject markup.
PAGE: Final = (
    resources.files("pipeline.observe").joinpath("dashboard.html").read_text(encoding="utf-8")
)
