"""Tests for the HTTP endpoint, over a real socket, and its page in headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import logging
import os
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pipeline import Pipeline
from pipeline.observe.dashboard import Dashboard, Panel
from pipeline.observe.metrics import register_metrics
from pipeline.resilience import ResilientStage
from pipeline.stages import FunctionStage, InRange, QualityStage, Required

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT = 10.0  # seconds, for one HTTP request
BROWSER_TIMEOUT = 60.0  # seconds, for Chromium to start, render and exit
ITEMS = 1000


def finished_pipeline() -> Pipeline[int, int]:
    double = FunctionStage[int, int](lambda item: item * 2, name="double")
    keep_small = FunctionStage[int, int](lambda item: item, name="copy", workers=2)
    pipeline = Pipeline(double >> keep_small, queue_size=64)
    pipeline.run(range(ITEMS))
    return pipeline


def fetch(url: str) -> tuple[int, str, str]:
    """Return the status, content type and body of a GET of `url`."""
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.status, response.headers["Content-Type"], response.read().decode()


def dashboard_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name != "MainThread"]


def test_it_serves_metrics_stats_and_the_page_over_a_socket() -> None:
    pipeline = finished_pipeline()
    with Dashboard(pipeline, name="demo") as dashboard:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", dashboard.url)
        status, content_type, text = fetch(dashboard.url + "metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=")
        families = {family.name: family for family in text_string_to_metric_families(text)}
        read = families["pipeline_items_read"].samples
        assert [(sample.labels, sample.value) for sample in read] == [({"pipeline": "demo"}, ITEMS)]

        status, content_type, body = fetch(dashboard.url + "stats")
        assert (status, content_type) == (200, "application/json")
        snapshot = json.loads(body)
        assert snapshot["pipeline"] == "demo"
        assert [stage["name"] for stage in snapshot["stats"]["stages"]] == ["double", "copy"]
        assert snapshot["stats"]["items_delivered"] == ITEMS

        status, content_type, page = fetch(dashboard.url)
        assert (status, content_type) == (200, "text/html; charset=utf-8")
        assert "<title>demo: pipeline dashboard</title>" in page
        assert 'fetch("/stats"' in page
        assert "setInterval(refresh, 1000)" in page
        assert not re.search(r"""(src|href)=["']?https?:""", page)  # no external assets

        with pytest.raises(urllib.error.HTTPError) as missing:
            fetch(dashboard.url + "missing")
        assert missing.value.code == 404
        missing.value.close()
    assert dashboard_threads() == []


def test_stats_follow_a_run_in_progress() -> None:
    pipeline = Pipeline(FunctionStage[int, int](lambda item: item, name="copy"), batch_size=1)
    with Dashboard(pipeline) as dashboard:
        before = json.loads(fetch(dashboard.url + "stats")[2])
        assert (before["pipeline"], before["panels"]) == ("pipeline", {})
        assert (before["stats"]["running"], before["stats"]["elapsed_seconds"]) == (False, 0.0)
        assert before["stats"]["stages"][0]["items_in"] == 0
        with pipeline:  # leaving the block stops the run, even if an assert fails
            outputs = pipeline.stream(range(ITEMS))
            next(outputs)  # the run is going, and waits for this consumer
            running = json.loads(fetch(dashboard.url + "stats")[2])["stats"]
            assert running["running"] is True
            assert running["items_read"] >= 1
            assert list(outputs) == list(range(1, ITEMS))
        finished = json.loads(fetch(dashboard.url + "stats")[2])["stats"]
        assert finished["running"] is False
        assert finished["stages"][0]["items_out"] == ITEMS


def quality_run() -> tuple[Pipeline[Mapping[str, Any], Mapping[str, Any]], QualityStage]:
    validate = QualityStage([Required("id"), InRange("age", 0, 130)], name="validate")
    pipeline = Pipeline(validate)
    records: list[dict[str, object]] = [{"id": 1, "age": 30}, {"age": 40}, {"id": 3, "age": 200}]
    assert pipeline.run(records) == [{"id": 1, "age": 30}]
    return pipeline, validate


def test_a_quality_report_is_served_as_a_panel_over_a_socket() -> None:
    pipeline, validate = quality_run()
    with Dashboard(pipeline, panels={"quality": validate.report.to_dict}) as dashboard:
        snapshot = json.loads(fetch(dashboard.url + "stats")[2])
        assert snapshot["stats"]["items_delivered"] == 1  # the statistics are still there
        quality = snapshot["panels"]["quality"]["value"]
        assert quality == validate.report.summary().to_dict()
        assert (quality["records"], quality["passed"], quality["rejected"]) == (3, 1, 2)
        assert [rule["failed"] for rule in quality["rules"]] == [1, 1]
        # A panel added while serving shows from the next request on, after the others.
        dashboard.add_panel("rows", lambda: [{"stage": "validate", "rejected": 2}])
        panels = json.loads(fetch(dashboard.url + "stats")[2])["panels"]
    assert list(panels) == ["quality", "rows"]
    assert panels["rows"] == {"value": [{"stage": "validate", "rejected": 2}]}
    assert dashboard_threads() == []


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message")


def _raise(exc: Exception) -> object:
    raise exc


def test_a_bad_panel_shows_its_error_and_the_rest_is_served() -> None:
    pipeline, validate = quality_run()
    panels = {
        "raises": lambda: _raise(KeyError("gone")),
        "unprintable": lambda: _raise(_Unprintable()),
        "not json": lambda: {"keys": {1, 2}},
        "nan": lambda: {"rate": float("nan")},
        "quality": validate.report.to_dict,
    }
    with Dashboard(pipeline, panels=panels) as dashboard:
        status, _, body = fetch(dashboard.url + "stats")
    assert status == 200
    served = json.loads(body)  # strict JSON: no NaN slipped through
    assert served["stats"]["items_read"] == 3
    errors = {name: panel.get("error") for name, panel in served["panels"].items()}
    assert errors["raises"] == "KeyError: 'gone'"
    assert errors["unprintable"] == "_Unprintable: <str() failed>"
    assert errors["not json"] == "TypeError: Object of type set is not JSON serializable"
    assert re.fullmatch(
        r"ValueError: Out of range float values are not JSON compliant(: nan)?", errors["nan"]
    )
    assert errors["quality"] is None
    assert served["panels"]["quality"]["value"]["rejected"] == 2
    assert dashboard_threads() == []


class Stuck:
    """A panel that does not return until released: a panel waiting on a dead service."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

    def __call__(self) -> object:
        self.entered.set()
        self.release.wait(STUCK_SECONDS)
        self.returned.set()
        return {"late": True}


STUCK_SECONDS = 30.0  # beyond TIMEOUT: the test releases the panel itself


def panel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("pipeline-dashboard-panel")]


def test_a_panel_that_does_not_return_is_an_error_and_close_does_not_wait_for_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Before, the panel ran in the request thread: /stats hung with it, and close()
    # joined that thread, so it waited for the panel however long it took.
    stuck = Stuck()
    panels: dict[str, Panel] = {"stuck": stuck, "quick": lambda: {"rows": 1}}
    # The quick panel has the whole panel_timeout to answer: ample on a loaded machine.
    dashboard = Dashboard(finished_pipeline(), panels=panels, panel_timeout=1.0)
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.observe.dashboard"), dashboard:
            served = json.loads(fetch(dashboard.url + "stats")[2])
            assert stuck.entered.is_set()
            assert served["panels"] == {
                "stuck": {"error": "the panel did not return within panel_timeout=1 s"},
                "quick": {"value": {"rows": 1}},
            }
            assert served["stats"]["items_delivered"] == ITEMS
        assert not stuck.returned.is_set()  # close() returned while the panel still ran
        assert "dashboard: panel 'stuck' is still running after 1 s" in caplog.text
        assert [thread.name for thread in panel_threads()] == ["pipeline-dashboard-panel stuck"]
    finally:
        stuck.release.set()
        for thread in panel_threads():
            thread.join(TIMEOUT)
    assert stuck.returned.is_set()
    assert dashboard_threads() == []


def test_a_request_served_while_the_dashboard_closes_never_reads_a_panel_itself() -> None:
    # close() drops the panels' readers before it joins the request threads; a request
    # that got that far must not fall back to reading the panel in its own thread.
    stuck = Stuck()
    dashboard = Dashboard(finished_pipeline(), panels={"stuck": stuck})
    deadline = time.monotonic() + TIMEOUT
    served = dashboard._snapshot(deadline, in_request=True)
    assert served["panels"] == {"stuck": {"error": "the dashboard is closing"}}
    assert not stuck.entered.is_set()


def test_a_panel_raising_system_exit_is_an_error_and_is_read_again() -> None:
    calls: list[int] = []

    def exits() -> object:
        calls.append(1)
        raise SystemExit(3)

    with Dashboard(finished_pipeline(), panels={"exits": exits}) as dashboard:
        first = json.loads(fetch(dashboard.url + "stats")[2])["panels"]
        second = json.loads(fetch(dashboard.url + "stats")[2])["panels"]
    assert first == second == {"exits": {"error": "SystemExit: 3"}}
    assert len(calls) == 2
    assert dashboard_threads() == []


def test_bad_panels_are_refused() -> None:
    pipeline = finished_pipeline()
    with pytest.raises(
        TypeError, match=r"^panels must be a mapping of names to callables or None, got list$"
    ):
        Dashboard(pipeline, panels=[])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^panel 'x' must be callable, got int$"):
        Dashboard(pipeline, panels={"x": 3})  # type: ignore[dict-item]
    dashboard = Dashboard(pipeline, panels={"x": dict})
    with pytest.raises(ValueError, match=r"^there is a panel named 'x' already$"):
        dashboard.add_panel("x", dict)
    with pytest.raises(ValueError, match=r"^panel name must not be empty$"):
        dashboard.add_panel("", dict)
    with pytest.raises(TypeError, match=r"^panel name must be a str, got int$"):
        dashboard.add_panel(3, dict)  # type: ignore[arg-type]


def test_the_page_escapes_the_name() -> None:
    with Dashboard(finished_pipeline(), name="<b>x</b>") as dashboard:
        page = fetch(dashboard.url)[2]
    assert "<h1>&lt;b&gt;x&lt;/b&gt;</h1>" in page


def test_it_binds_to_this_machine_only_by_default() -> None:
    dashboard = Dashboard(finished_pipeline())
    assert dashboard.host == "127.0.0.1"
    with dashboard:
        assert dashboard.url.startswith("http://127.0.0.1:")


def test_a_caller_registry_is_served_as_it_is() -> None:
    pipeline = finished_pipeline()
    registry = CollectorRegistry()
    register_metrics(pipeline, registry, name="mine")
    with Dashboard(pipeline, registry=registry) as dashboard:
        text = fetch(dashboard.url + "metrics")[2]
    assert 'pipeline_items_read_total{pipeline="mine"} 1000.0' in text


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"host": 3}, TypeError, "host must be a str, got int"),
        ({"port": "x"}, TypeError, "port must be an int, got str"),
        ({"port": 8000.0}, TypeError, "port must be an int, got float"),
        ({"port": True}, TypeError, "port must be an int, got bool"),
        ({"port": -1}, ValueError, "port must be in 0..65535, got -1"),
        ({"port": 65536}, ValueError, "port must be in 0..65535, got 65536"),
        ({"name": 3}, TypeError, "name must be a str, got int"),
        ({"name": ""}, ValueError, "name must not be empty"),
        ({"registry": {}}, TypeError, "registry must be a CollectorRegistry or None, got dict"),
        (
            {"request_timeout": 0},
            ValueError,
            "request_timeout must be > 0 seconds and finite, got 0",
        ),
        ({"max_connections": 0}, ValueError, "max_connections must be >= 1, got 0"),
        (
            {"panel_timeout": float("nan")},
            ValueError,
            "panel_timeout must be > 0 seconds and finite, got nan",
        ),
    ],
)
def test_bad_arguments_are_refused(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        Dashboard(finished_pipeline(), **arguments)
    assert dashboard_threads() == []


def test_only_a_pipeline_can_be_shown() -> None:
    with pytest.raises(TypeError, match=r"^pipeline must be a Pipeline, got str$"):
        Dashboard("notpipeline")  # type: ignore[arg-type]


def test_close_stops_the_server_and_joins_its_threads() -> None:
    dashboard = Dashboard(finished_pipeline())
    dashboard.start()
    url = dashboard.url
    assert "pipeline-dashboard" in dashboard_threads()
    with pytest.raises(RuntimeError, match=r"^the dashboard is already running$"):
        dashboard.start()
    dashboard.close()
    dashboard.close()  # closing twice is harmless
    assert dashboard_threads() == []
    with pytest.raises(
        RuntimeError, match=r"^the dashboard is not running; use it in a with block$"
    ):
        _ = dashboard.url
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=TIMEOUT)


def test_the_server_is_stopped_when_the_block_raises() -> None:
    with pytest.raises(KeyError), Dashboard(finished_pipeline()):
        raise KeyError("boom")
    assert dashboard_threads() == []


def trickle(client: socket.socket, stop: threading.Event, cut_off: threading.Event) -> None:
    """Send a request one byte every 50 ms, forever, until the server cuts the connection."""
    with client:
        request = b"GET /stats HTTP/1.0\r\nX-Padding: " + b"x" * 10_000
        for byte in request:
            try:
                client.sendall(bytes([byte]))
            except OSError:  # reset: the server closed it while bytes were unread
                cut_off.set()
                return
            if stop.wait(0.05):
                return
        # Every byte sent without the server giving up: it never enforced a deadline.


def address_of(dashboard: Dashboard) -> tuple[str, int]:
    host, port = dashboard.url.removeprefix("http://").rstrip("/").split(":")
    return host, int(port)


def connection_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def test_a_client_trickling_bytes_is_cut_off_at_the_request_deadline() -> None:
    # With a timeout per read, a byte every 50 ms kept the connection open for good.
    stop, cut_off = threading.Event(), threading.Event()
    with Dashboard(finished_pipeline(), request_timeout=0.3) as dashboard:
        connection = socket.create_connection(address_of(dashboard), timeout=TIMEOUT)
        client = threading.Thread(target=trickle, args=(connection, stop, cut_off))
        client.start()
        try:
            assert cut_off.wait(TIMEOUT)
        finally:
            stop.set()
            client.join()
        assert fetch(dashboard.url + "stats")[0] == 200  # and it still serves others
    assert dashboard_threads() == []


def test_close_returns_at_once_while_a_slow_client_is_connected() -> None:
    # Before, close() joined the request thread, which a trickling client held open.
    stop, cut_off = threading.Event(), threading.Event()
    dashboard = Dashboard(finished_pipeline(), request_timeout=600)
    dashboard.start()
    # Connected first, so the server accepts it before the fetch below.
    connection = socket.create_connection(address_of(dashboard), timeout=TIMEOUT)
    client = threading.Thread(target=trickle, args=(connection, stop, cut_off))
    client.start()
    closer = threading.Thread(target=dashboard.close)
    try:
        assert fetch(dashboard.url + "stats")[0] == 200  # the trickler is being served
        assert connection_threads()
        closer.start()
        closer.join(TIMEOUT)
        assert not closer.is_alive()
        assert cut_off.wait(TIMEOUT)
    finally:
        stop.set()
        client.join()
        if closer.ident is not None:
            closer.join()
        dashboard.close()
    assert dashboard_threads() == []


def test_connections_beyond_the_bound_are_refused_at_once() -> None:
    with Dashboard(finished_pipeline(), max_connections=2, request_timeout=600) as dashboard:
        address = address_of(dashboard)
        idle = [socket.create_connection(address, timeout=TIMEOUT) for _ in range(2)]
        try:
            # The server accepts in order, and takes a slot for each idle client before
            # it accepts the next connection.
            with socket.create_connection(address, timeout=TIMEOUT) as third:
                answer = b""
                while chunk := third.recv(1024):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.0 503 Service Unavailable\r\n")
            assert len(connection_threads()) <= 2
        finally:
            for connection in idle:
                connection.close()
    assert dashboard_threads() == []


class _Cells(HTMLParser):
    """Collect the text of every <td> by its class, and the data-state of #summary."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self.state: str | None = None
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "td":
            self._open = attributes.get("class") or ""
            self.cells.append((self._open, ""))
        if attributes.get("id") == "summary":
            self.state = attributes.get("data-state")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            name, text = self.cells[-1]
            self.cells[-1] = (name, text + data)


# Runs in the child: copy the two ends above 4 first (either may be 3 or 4), then onto
# 3 and 4, and become Chromium.
_ON_THREE_AND_FOUR = """
import fcntl, os, sys
ends = [fcntl.fcntl(int(end), fcntl.F_DUPFD, 10) for end in sys.argv[1:3]]
os.dup2(ends[0], 3)
os.dup2(ends[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


class _Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4).

    Messages are JSON, each ended by a NUL byte; every read is bounded by `deadline`.
    """

    def __init__(self, profile: Path, deadline: float) -> None:
        self.deadline = deadline
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        arguments = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # A small trampoline puts the pipe's ends on the descriptors Chromium uses.
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _ON_THREE_AND_FOUR,
                str(commands_read),
                str(answers_write),
                str(CHROMIUM),
                *arguments,
            ],
            pass_fds=(commands_read, answers_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self.session = ""

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command (to the page's session once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self._next_id:
                assert "error" not in answer, (method, answer["error"])
                result: dict[str, Any] = answer["result"]
                return result

    def wait_for(self, event: str) -> None:
        while self._read().get("method") != event:
            pass

    def evaluate(self, expression: str) -> Any:
        """Return the value of `expression` in the page (awaited, if it is a promise)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self.deadline - time.monotonic()
            ready, _, _ = select.select([self._answers], [], [], max(0.0, left))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._answers, 1 << 16)
            assert chunk, "Chromium closed the pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def close(self) -> None:
        """Close the browser and wait for its process; kill it if it does not exit."""
        try:
            if self.process.poll() is None:
                self.session = ""
                with contextlib.suppress(OSError, AssertionError):
                    self.call("Browser.close")
            try:
                self.process.wait(BROWSER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(BROWSER_TIMEOUT)
        finally:
            os.close(self._commands)
            os.close(self._answers)


# In the page: wait until the script has drawn the stages and the panels.
_DRAWN = """new Promise((resolve) => {
  const drawn = () => document.getElementById("summary").dataset.state &&
    document.querySelector("[data-panel] table") !== null;
  const look = () => drawn() ? resolve(true) : setTimeout(look, 50);
  look();
})"""
# In the page: what sticks out of the viewport, and how the stage table's cells look.
_MEASURE = """(() => {
  const width = window.innerWidth, height = window.innerHeight;
  const out = [];
  for (const element of document.body.querySelectorAll("*")) {
    const box = element.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) { continue; }
    if (box.left < -0.5 || box.right > width + 0.5) {
      out.push(element.tagName.toLowerCase() + "." + element.className + " " +
        JSON.stringify(element.textContent.slice(0, 40)) + " " + box.left + ".." + box.right);
    }
  }
  const cells = [...document.querySelectorAll("#stages td")].map((td) => {
    const range = document.createRange();
    range.selectNodeContents(td);
    const tops = new Set([...range.getClientRects()].map((rect) => Math.round(rect.top)));
    return {name: td.className, text: td.textContent, lines: tops.size,
            background: getComputedStyle(td).backgroundColor};
  });
  const table = document.querySelector("table").getBoundingClientRect();
  return {width, height, scrollWidth: document.documentElement.scrollWidth,
          overflowing: out, cells, tableBottom: table.bottom,
          html: document.documentElement.outerHTML};
})()"""


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def alpha(color: str) -> float:
    """Return the opacity of a CSS colour as getComputedStyle writes it (rgb or rgba)."""
    parts = re.fullmatch(r"rgba?\(([^)]*)\)", color)
    assert parts, color
    values = [float(part) for part in parts[1].split(",")]
    return values[3] if len(values) == 4 else 1.0


def look_at_1280_by_800(url: str, tmp_path: Path) -> tuple[dict[str, Any], bytes]:
    """Open `url` in a 1280x800 viewport once it has drawn; return `_MEASURE` and a PNG."""
    browser = _Browser(tmp_path / "profile", time.monotonic() + BROWSER_TIMEOUT)
    try:
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        attached = browser.call("Target.attachToTarget", targetId=target, flatten=True)
        browser.session = attached["sessionId"]
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=800,
            deviceScaleFactor=1,
            mobile=False,
        )
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url)
        browser.wait_for("Page.loadEventFired")
        assert browser.evaluate(_DRAWN) is True
        page: dict[str, Any] = browser.evaluate(_MEASURE)
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    finally:
        browser.close()
    (tmp_path / "dashboard.png").write_bytes(shot)  # to look at, when the test fails
    return page, shot


def assert_it_fits(page: dict[str, Any], shot: bytes) -> None:
    """Assert that nothing sticks out of the 1280x800 viewport, the stage table included."""
    assert png_size(shot) == (1280, 800)
    assert (page["width"], page["height"]) == (1280, 800)
    assert page["overflowing"] == []
    assert page["scrollWidth"] <= 1280
    assert page["tableBottom"] <= 800  # the stage table is seen without scrolling
    figures = [cell for cell in page["cells"] if cell["name"] not in ("stage-name", "extra")]
    assert [cell["text"] for cell in figures if cell["lines"] != 1 and cell["text"]] == []


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"needs Chromium at {CHROMIUM} to render the page: apt-get install chromium",
)
def test_the_page_fits_1280_by_800_with_long_names_extra_counts_and_big_queues(
    tmp_path: Path,
) -> None:
    def parse(text: str) -> int:
        return int(text)

    parse_stage = ResilientStage(
        FunctionStage(parse, name="parse_and_validate_the_incoming_records"), on_error="collect"
    )
    enrich = FunctionStage[int, int](
        lambda item: item, name="enrich_from_the_customer_service", workers=4
    )
    pipeline = Pipeline(parse_stage >> enrich)
    texts = [str(n) if n % 1000 else "x" for n in range(100_000)]
    assert len(pipeline.run(texts)) == 99_900
    quality = quality_run()[1]
    with Dashboard(pipeline, panels={"quality": quality.report.to_dict}) as dashboard:
        page, shot = look_at_1280_by_800(dashboard.url, tmp_path)
    assert_it_fits(page, shot)
    extra = [cell["text"] for cell in page["cells"] if cell["name"] == "extra"]
    assert extra[0] == "dead_lettered 100"


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"needs Chromium at {CHROMIUM} to render the page: apt-get install chromium",
)
def test_the_page_fits_1280_by_800_and_shows_the_figures_as_the_report_does(
    tmp_path: Path,
) -> None:
    # Before, the stage table ran off the right edge at 1280 px (the queue column was cut
    # off), latencies wrapped ("882 / ns"), the share cells were filled with their
    # colour whatever the share, and the quality panel showed 0.6667 for 66.67%.
    pipeline = finished_pipeline()
    validate = quality_run()[1]
    panels = {"quality": validate.report.to_dict, "broken": lambda: _raise(KeyError("gone"))}
    with Dashboard(pipeline, name="demo", panels=panels) as dashboard:
        page, shot = look_at_1280_by_800(dashboard.url, tmp_path)
    assert_it_fits(page, shot)

    cells = page["cells"]
    by_name: dict[str, list[str]] = {}
    for cell in cells:
        by_name.setdefault(cell["name"], []).append(cell["text"])
    assert by_name["stage-name"] == ["double", "copy"]
    assert by_name["workers"] == ["1", "2"]
    assert by_name["items-in"] == by_name["items-out"] == [f"{ITEMS:,}"] * 2
    assert by_name["failed"] == ["0", "0"]
    assert by_name["extra"] == ["-", "-"]
    stats = pipeline.stats()
    assert by_name["queue"] == [
        f"{stage.queue_depth}/{stage.queue_high_water_mark}/{stage.queue_maxsize}"
        for stage in stats.stages
    ]
    assert all(re.fullmatch(r"[\d.]+ [nµm]?s", text) for text in by_name["p50"])
    # A share's cell is coloured as much as the share: not at all at 0%.
    for share in ("busy", "starved", "blocked"):
        shown = [
            (int(cell["text"].rstrip("%")), alpha(cell["background"]))
            for cell in cells
            if cell["name"] == share
        ]
        assert len(shown) == 2
        assert all(opacity == 0 for percent, opacity in shown if percent == 0), shown
        assert [opacity for _, opacity in sorted(shown)] == sorted(o for _, o in shown), shown

    # Each panel is a section: plain entries as name/value rows, each list of rows a table;
    # a share (a pass rate, completeness, accuracy) as a percentage, as the report prints it.
    parser = _Cells()
    parser.feed(page["html"])
    assert parser.state == "finished"  # set by the page's script from /stats
    assert f"{ITEMS:,} items read, {ITEMS:,} delivered" in page["html"]
    assert '<section data-panel="quality">' in page["html"]
    keys = [text for name, text in parser.cells if name == "panel-key"]
    assert keys == ["records", "passed", "rejected"]
    panel_cells = [text for name, text in parser.cells if name == "panel-cell"]
    assert panel_cells[:3] == ["3", "1", "2"]
    summary = validate.report.summary()
    rates = [f"{rule.pass_rate:.2%}" for rule in summary.rules]
    rates += [f"{f.completeness:.2%}" for f in summary.fields]
    rates += [f"{f.accuracy:.2%}" for f in summary.fields]
    assert sorted(text for text in panel_cells if text.endswith("%")) == sorted(rates)
    assert "66.67%" in rates
    assert not any(re.fullmatch(r"0\.\d+", text) for text in panel_cells)
    assert "<caption>rules</caption>" in page["html"]
    assert "<caption>fields</caption>" in page["html"]
    assert "cannot show this panel: KeyError: 'gone'" in page["html"]


def test_a_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pipeline.observe.dashboard")
    message = (
        "pipeline.observe.dashboard needs prometheus_client: "
        "pip install 'threaded-pipeline[metrics]'"
    )
    with pytest.raises(ImportError, match=f"^{re.escape(message)}$"):
        importlib.import_module("pipeline.observe.dashboard")
