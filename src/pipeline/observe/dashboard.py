"""A small HTTP endpoint for a running pipeline: Prometheus text, JSON, and a live page.

Started only when asked, bound to 127.0.0.1 unless told otherwise, served by the
standard library's `ThreadingHTTPServer`; needs `threaded-pipeline[metrics]` for the Prometheus
text. Routes:
- `/metrics`: the Prometheus text exposition of `pipeline.observe.metrics.PipelineCollector`;
- `/stats`: the JSON snapshot of `pipeline.observe.metrics.json_snapshot`, plus a
  `"panels"` object: what each panel (below) returned, or the error it raised;
- `/`: an HTML page, with no external assets, that fetches `/stats` every second and
  draws a row per stage (busy/starved/blocked shares and queue depth), then a table per
  panel.

A panel is any callable of no arguments returning plain JSON data (a dict, or a list of
rows as dicts), read on every `/stats` request: it shows figures the pipeline's
statistics do not hold, such as a data-quality report, without this module knowing
their kind (`panels={"quality": stage.report.to_dict}`). Each panel is read in a thread
of its own, never in a connection's: a request waits at most `panel_timeout` seconds
for it, and a panel slower than that is served as an error while it goes on running.

    with Dashboard(pipeline) as dashboard:
        print("open", dashboard.url)
        pipeline.run(source)

A slow or stalled client cannot hold the dashboard: each connection has
`request_timeout` seconds in all to send its request and take the answer (a client
trickling a byte at a time is cut off at that deadline, not kept alive by each byte),
and at most `max_connections` are served at once; another one is answered
"503 Service Unavailable" at once and closed. Leaving the `with` block stops the
server, shuts down the connections still open (their threads end at once), and joins
every thread of the server and of the panels. A panel still running then is waited for
at most `panel_timeout` seconds: no thread can be killed, so past that bound `close()`
logs a warning naming the panel and returns, and the panel's thread ends when the panel
returns (a daemon thread, so that a panel which never returns cannot hold the program's
exit either).
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import TracebackType
from typing import Any, Final

from pipeline._checks import positive_int, seconds
from pipeline.errors import describe

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the module
    raise ImportError(
        "pipeline.observe.dashboard needs prometheus_client: "
        "pip install 'threaded-pipeline[metrics]'"
    ) from exc

from pipeline._checks import integer, non_empty_str
from pipeline.observe.metrics import register_metrics, statistics_to_dict
from pipeline.pipeline import Pipeline

__all__ = ["DEFAULT_HOST", "Dashboard", "Panel"]

DEFAULT_HOST: Final = "127.0.0.1"
REQUEST_TIMEOUT_SECONDS: Final = 5.0
PANEL_TIMEOUT_SECONDS: Final = 1.0
PANEL_THREAD_PREFIX: Final = "pipeline-dashboard-panel "
MAX_CONNECTIONS: Final = 8
_BUSY: Final = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 19\r\nConnection: close\r\n\r\ntoo many clients\r\n\r\n"
)
MAX_PORT: Final = 65535

Panel = Callable[[], object]
"""A dashboard panel: called with no arguments for each `/stats` request, in a thread
of the panel's own; returns plain JSON data (a dict, or a list of rows as dicts)."""

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
        request_timeout: seconds a connection has, in all, to send its request and
            take the answer.
        max_connections: connections served at once, each by its own thread.
        panels: extra tables for `/stats` and the page, by name (see `add_panel`).
        panel_timeout: seconds a request waits for the panels' readings, and `close()`
            for a panel still running.

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
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        panels: Mapping[str, Panel] | None = None,
        panel_timeout: float = PANEL_TIMEOUT_SECONDS,
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
        self.request_timeout = seconds("request_timeout", request_timeout)
        self.max_connections = positive_int("max_connections", max_connections)
        self.panel_timeout = seconds("panel_timeout", panel_timeout)
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
        # Guards _panels and _readers (the thread reading each panel while the dashboard
        # runs): add_panel may run while connection threads read them.
        self._panels_lock = threading.Lock()
        self._panels: dict[str, Panel] = {}
        self._readers: dict[str, _PanelReader] = {}
        if panels is not None:
            if not isinstance(panels, Mapping):
                raise TypeError(
                    f"panels must be a mapping of names to callables or None, "
                    f"got {type(panels).__name__}"
                )
            for panel_name, read in panels.items():
                self.add_panel(panel_name, read)

    def add_panel(self, name: str, read: Panel) -> None:
        """Show what `read()` returns as a table named `name`, from the next request on.

        While the dashboard runs, `read` runs in a thread of this panel's own, once per
        `/stats` request (requests that come while it runs share its next reading), so
        it should be quick and safe to call while the pipeline runs. Whatever goes
        wrong in it (it raises, SystemExit included, returns something `json` cannot
        encode, NaN included, or takes longer than `panel_timeout`) is shown as that
        panel's error text; the rest of `/stats` is served as usual.

        Args:
            name: the panel's title, unique within this dashboard.
            read: a callable of no arguments returning plain JSON data.

        Raises:
            TypeError, ValueError: `name` is not a non-empty str, or is taken; `read`
                is not callable.
        """
        non_empty_str("panel name", name)
        if not callable(read):
            raise TypeError(f"panel {name!r} must be callable, got {type(read).__name__}")
        with self._panels_lock:
            if name in self._panels:
                raise ValueError(f"there is a panel named {name!r} already")
            self._panels[name] = read
            if self._server is not None:
                self._readers[name] = _PanelReader(name, read)

    def snapshot(self) -> dict[str, Any]:
        """Return what `/stats` serves: the pipeline's statistics and every panel's value.

        Each panel appears as `{"value": data}` or, when reading it failed,
        `{"error": "Type: message"}`. While the dashboard runs, the panels are read in
        their threads, and waited for at most `panel_timeout` seconds in all; else in
        this thread.
        """
        return self._snapshot(time.monotonic() + self.panel_timeout, in_request=False)

    def _snapshot(self, deadline: float, *, in_request: bool) -> dict[str, Any]:
        """Return `snapshot()`, waiting for the panels' readings until `deadline`.

        A request never reads a panel itself: one without a reader (the dashboard is
        closing) is served as an error, since close() joins the request threads.
        """
        stats = self.pipeline.stats()
        with self._panels_lock:
            panels = [(name, read, self._readers.get(name)) for name, read in self._panels.items()]
        # Every reading is asked for before any is waited for, so they run side by side.
        asked = {name: reader.ask() for name, _, reader in panels if reader is not None}
        values = {}
        for name, read, reader in panels:
            if reader is None:
                closing = {"error": "the dashboard is closing"}
                values[name] = closing if in_request else _read_panel(name, read)
            else:
                values[name] = reader.answer(asked[name], deadline, self.panel_timeout)
        return {
            "pipeline": self.name,
            "stats": statistics_to_dict(stats),
            "panels": values,
        }

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
        server = _Server((self.host, self.port), self, self.request_timeout, self.max_connections)
        with self._panels_lock:
            self._server = server
            self._readers = {name: _PanelReader(name, read) for name, read in self._panels.items()}
        self._thread = threading.Thread(
            target=server.serve_forever, name="pipeline-dashboard", kwargs={"poll_interval": 0.1}
        )
        self._thread.start()
        logger.info("dashboard serving at %s", self.url)

    def close(self) -> None:
        """Stop serving, cut the open connections, and join every thread; idempotent.

        Returns promptly: a request still being read or answered is cut off (its
        client sees the connection close), it is not waited for; a panel still being
        read is waited for at most `panel_timeout` seconds, then left to end in its
        thread, with a warning.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()  # returns once serve_forever has returned
        thread.join()
        with self._panels_lock:
            readers = list(self._readers.values())
            self._readers = {}
            self._server = None
        for reader in readers:
            reader.stop()  # wakes the requests waiting for it
        server.drop_connections()
        server.server_close()  # joins the request threads (block_on_close)
        deadline = time.monotonic() + self.panel_timeout
        for reader in readers:
            if not reader.join(deadline):
                logger.warning(
                    "dashboard: panel %r is still running after %g s; its thread %r ends "
                    "when the panel returns",
                    reader.name,
                    self.panel_timeout,
                    reader.thread_name,
                )
        self._thread = None

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
    """One thread per connection, at most `max_connections`, joined on close."""

    daemon_threads = False
    block_on_close = True

    def __init__(
        self,
        address: tuple[str, int],
        dashboard: Dashboard,
        request_timeout: float,
        max_connections: int,
    ) -> None:
        self.dashboard = dashboard
        self.request_timeout = request_timeout
        # A slot per connection thread: taken by the serving thread before it starts one,
        # given back by that thread when it ends.
        self._slots = threading.BoundedSemaphore(max_connections)
        # Guards _open (the sockets of connections being served, removed before they
        # are closed, so drop_connections never touches a closed one) and _dropping.
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._dropping = False
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve `request` in a thread of its own, or refuse it when every slot is taken."""
        if not self._slots.acquire(blocking=False):
            logger.warning(
                "dashboard: %d connections served already; refusing one",
                self.dashboard.max_connections,
            )
            _refuse(request)
            super().shutdown_request(request)
            return
        with self._lock:
            refused = self._dropping
            if not refused:
                self._open.add(request)
        if refused:
            self._slots.release()
            super().shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.shutdown_request(request)
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection, then give its slot back; a connection thread's target."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut down every open connection, so that its thread stops reading and writing."""
        with self._lock:
            self._dropping = True
            for connection in self._open:
                with contextlib.suppress(OSError):  # the client has gone already
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed request (a client that went away, say) instead of printing it."""
        logger.debug("dashboard: request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Answer one request; runs in a connection thread of `_Server`."""

    server: _Server

    def setup(self) -> None:
        """Read the request through a reader that enforces the whole request's deadline."""
        super().setup()
        self.deadline = time.monotonic() + self.server.request_timeout
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.deadline))

    def do_GET(self) -> None:
        dashboard = self.server.dashboard
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(dashboard.registry))
        elif path == "/stats":
            deadline = min(self.deadline, time.monotonic() + dashboard.panel_timeout)
            body = json.dumps(dashboard._snapshot(deadline, in_request=True)).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        elif path in ("/", "/index.html"):
            page = PAGE.replace("{{title}}", html.escape(dashboard.name))
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        # sendall() takes its timeout as a bound on the whole send.
        self.connection.settimeout(max(self.deadline - time.monotonic(), 0.001))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class _DeadlineReader(io.RawIOBase):
    """Read from a socket until a deadline for all the reads together, not each one."""

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        super().__init__()
        self._connection = connection
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request was not read within request_timeout")
        self._connection.settimeout(remaining)
        return self._connection.recv_into(buffer)


class _PanelReader:
    """Read one panel in a thread of its own, for the requests that ask, until stopped.

    A request asks for a reading (`ask`) and waits for it until a deadline (`answer`);
    requests that ask while a reading runs share the next one. The thread is a daemon
    only so that a panel which never returns cannot hold the program's exit: `close()`
    joins it whenever the panel returns within its bound.
    """

    def __init__(self, name: str, read: Panel) -> None:
        self.name = name
        self.read = read
        self.thread_name = PANEL_THREAD_PREFIX + name
        # Guards every field below. Notified when a reading is asked for, when one
        # ends, when the reader is told to stop, and when its thread ends.
        self._changed = threading.Condition()
        self._asked = 0  # readings asked for so far
        self._answered = 0  # the last reading asked for before the latest one started
        self._result: dict[str, Any] = {}
        self._stopping = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def ask(self) -> int:
        """Ask for a reading; return its number, for `answer`."""
        with self._changed:
            self._asked += 1
            self._changed.notify_all()
            return self._asked

    def answer(self, asked: int, deadline: float, timeout: float) -> dict[str, Any]:
        """Return reading `asked` once it ends, or an error at `deadline` or a stop."""
        with self._changed:
            while self._answered < asked and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return {"error": f"the panel did not return within panel_timeout={timeout:g} s"}
                self._changed.wait(remaining)
            if self._answered < asked:
                return {"error": "the dashboard is closing"}
            return self._result

    def stop(self) -> None:
        """Tell the thread to end once the reading in progress, if any, returns."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()

    def join(self, deadline: float) -> bool:
        """Wait until the thread has ended or `deadline`; return whether it ended."""
        with self._changed:
            while not self._ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        self._thread.join()  # it has left its loop: only returning is left
        return True

    def _run(self) -> None:
        """Read the panel each time a reading is asked for; the panel thread's target."""
        try:
            while True:
                with self._changed:
                    while self._answered == self._asked and not self._stopping:
                        self._changed.wait()
                    if self._stopping:
                        return
                    asked = self._asked
                result = _read_panel(self.name, self.read, everything=True)
                with self._changed:
                    self._result = result
                    self._answered = asked
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()


def _read_panel(name: str, read: Panel, *, everything: bool = False) -> dict[str, Any]:
    """Return `{"value": ...}` with what `read()` returned, as plain JSON data, or
    `{"error": ...}`, so one bad panel cannot break `/stats`.

    With `everything` (in a panel's own thread, where it would end the thread) a
    BaseException such as SystemExit is an error too; otherwise (in the caller's
    thread) it propagates, so Ctrl-C in the main thread still stops the program.
    """
    caught = BaseException if everything else Exception
    try:
        # Encoded once to check it (json.dumps would print NaN, which browsers refuse),
        # then decoded: the value served is a copy that later changes cannot touch.
        value = json.loads(json.dumps(read(), allow_nan=False))
    except caught as exc:
        logger.debug("dashboard: panel %r failed", name, exc_info=True)
        return {"error": describe(exc)}
    return {"value": value}


def _refuse(connection: socket.socket) -> None:
    """Tell a client it was refused, without ever blocking the serving thread."""
    try:
        connection.setblocking(False)
        connection.send(_BUSY)
    except OSError:  # a full buffer or a gone client: it sees the connection close
        pass


# The page (a package data file) draws everything with textContent and DOM nodes,
# never innerHTML, so a stage name cannot inject markup.
PAGE: Final = (
    resources.files("pipeline.observe").joinpath("dashboard.html").read_text(encoding="utf-8")
)
