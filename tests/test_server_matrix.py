"""The middleware under eight real servers, each in its own process on 127.0.0.1 (tests/matrix_app.py).

gunicorn (sync, gthread, gevent workers), uWSGI, waitress, wsgiref, werkzeug and cheroot each serve the
same traced app for the whole module; every test makes real HTTP requests and reads what the worker
wrote: its spans, its probes (closes, sendfile calls, what the server was handed) and its metrics.
A server is started once per module and stopped after it; a missing server fails, never skips.
Waits are bounded; the only durations asserted are lower bounds set by the app's own sleeps.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Final, Literal

import pytest
import span_lines as served_app
from load_client import check, read_spans, run_clients

TESTS_DIR: Final = Path(__file__).resolve().parent
REPO_DIR: Final = TESTS_DIR.parent
DEADLINE: Final = 15.0
BLOB_SIZE: Final = 1 << 20
STREAMED: Final = b"".join(f"chunk {index}\n".encode() for index in range(served_app.STREAM_CHUNKS))
BASE_METRIC: Final = {"http.request.method": "GET", "url.scheme": "http", "network.protocol.version": "1.1"}
_QUERIES: Final = count()

Record = dict[str, Any]


@dataclass(frozen=True)
class ServerKind:
    """A server configuration and what it is known to do with a `wsgi.file_wrapper` response."""

    name: str
    #: The type the middleware hands the server for `/file`: the server's own object, or our body wrapper.
    file_result: str
    #: How the file is sent: `os.sendfile` (counted in the worker), uWSGI's own C sendfile, or read().
    sendfile: Literal["os", "uwsgi", "none"]
    command: Callable[[], list[str]]
    #: What the client gets when the app raises before answering: the server's 500, or nothing at all.
    on_raise: int | None = 500


def _gunicorn(*worker: str, workers: int = 1) -> Callable[[], list[str]]:
    return lambda: [
        sys.executable, "-m", "gunicorn", *worker, "-w", str(workers), "-b", "127.0.0.1:0",
        "--no-control-socket", "--graceful-timeout", "5", "--pythonpath", str(TESTS_DIR), "matrix_app:app",
    ]  # fmt: skip


def _uwsgi() -> list[str]:
    binary = shutil.which("uwsgi", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.fail("uwsgi is not installed (it is in the dev extra)")
    return [
        binary, "--http-socket", "127.0.0.1:0", "--home", sys.prefix, "--pythonpath", str(TESTS_DIR),
        "--module", "matrix_app:app", "--master",
        "--processes", "1", "--threads", "2", "--die-on-term",
    ]  # fmt: skip


def _python_server(name: str) -> Callable[[], list[str]]:
    return lambda: [sys.executable, str(TESTS_DIR / "matrix_serve.py"), name]


GUNICORN_FILE: Final = "gunicorn.http.wsgi.FileWrapper"
BODY: Final = "otel_wsgi.body.Body"
KINDS: Final = [
    ServerKind("gunicorn-sync", GUNICORN_FILE, "os", _gunicorn("-k", "sync")),
    ServerKind("gunicorn-gthread", GUNICORN_FILE, "os", _gunicorn("-k", "gthread", "--threads", "4")),
    ServerKind("gunicorn-gevent", GUNICORN_FILE, "none", _gunicorn("-k", "gevent")),
    ServerKind("uwsgi", "matrix_app.LoggedFile", "uwsgi", _uwsgi, on_raise=None),
    ServerKind("waitress", "waitress.buffers.ReadOnlyFileBasedBuffer", "none", _python_server("waitress")),
    ServerKind("wsgiref", "wsgiref.util.FileWrapper", "none", _python_server("wsgiref")),
    ServerKind("werkzeug", BODY, "none", _python_server("werkzeug")),
    ServerKind("cheroot", BODY, "none", _python_server("cheroot")),
]
#: How each server says where it listens (all bind port 0).
LISTENING: Final = re.compile(
    r"Listening at: http://127\.0\.0\.1:(\d+)|bound to TCP address 127\.0\.0\.1:(\d+)|^LISTENING (\d+)", re.M
)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll `predicate` until it holds; fail the test (not hang) if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@dataclass(frozen=True)
class Running:
    """A server process serving matrix_app, and the files it writes."""

    kind: ServerKind
    port: int
    events: Path
    log: Path
    blob: Path

    def records(self) -> list[Record]:
        """Every complete line of the events file (a line being appended now is left for later)."""
        return [json.loads(line) for line in self.events.read_text().split("\n")[:-1]]

    def of(self, kind: str, query: str) -> list[Record]:
        return [r for r in self.records() if r["kind"] == kind and _query_of(r) == query]

    def span(self, query: str) -> Record:
        """Wait for the span of the request with this query; fail unless there is exactly one."""
        wait_until(lambda: self.of("span", query) != [], f"the span of ?{query} ({self.kind.name})")
        (span,) = self.of("span", query)
        assert [r for r in self.records() if r["kind"] == "log"] == []
        return span

    def metrics(self) -> Record:
        status, body = get(self.port, served_app.METRICS_PATH)
        assert status == 200
        snapshot: Record = json.loads(body)
        return snapshot


def _query_of(record: Record) -> object:
    return record["attributes"].get("url.query") if record["kind"] == "span" else record.get("query")


def _start(kind: ServerKind, directory: Path) -> tuple[subprocess.Popen[bytes], Running]:
    events, log, blob = directory / "events.jsonl", directory / "server.log", directory / "blob"
    blob.write_bytes(os.urandom(BLOB_SIZE))
    events.touch()
    env = {**os.environ, "OTEL_WSGI_TEST_EVENTS": str(events), "OTEL_WSGI_TEST_FILE": str(blob)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            kind.command(), cwd=REPO_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    found: list[int] = []

    def listening() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{kind.name} exited with {process.returncode}:\n{log.read_text()}")
        match = LISTENING.search(log.read_text())
        if match is not None:
            found.append(int(next(group for group in match.groups() if group)))
        return bool(found)

    try:
        wait_until(listening, f"{kind.name} to listen")
        running = Running(kind, found[0], events, log, blob)
        # Ready once a request is answered (the worker has imported the app).
        wait_until(lambda: _answers(running.port), f"{kind.name} to answer")
    except BaseException:
        stop(process)
        raise
    return process, running


def _answers(port: int) -> bool:
    try:
        return get(port, served_app.METRICS_PATH)[0] == 200
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group a test started (the server, its master and workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(DEADLINE)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module", params=KINDS, ids=[kind.name for kind in KINDS])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    kind: ServerKind = request.param
    process, running = _start(kind, tmp_path_factory.mktemp(kind.name))
    try:
        yield running
    finally:
        stop(process)


def get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 GET; return the status and the whole body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _status_or_none(port: int, target: str) -> int | None:
    """The status of a GET, or None when the server closes the connection without answering."""
    try:
        return get(port, target)[0]
    except http.client.RemoteDisconnected:
        return None


def new_query(case: str) -> str:
    """A query no other request of the module carries: it finds the request's span and probes."""
    return f"case={case}-{next(_QUERIES)}"


def _duration_points(snapshot: Record, attributes: dict[str, object]) -> list[Record]:
    return [
        point
        for point in snapshot["points"]
        if point["name"] == "http.server.request.duration" and point["attributes"] == attributes
    ]


def _histogram(snapshot: Record, attributes: dict[str, object]) -> tuple[int, float]:
    """(count, sum) of the duration histogram for exactly this attribute set; (0, 0) if never recorded."""
    points = _duration_points(snapshot, attributes)
    return (points[0]["count"], points[0]["sum"]) if points else (0, 0.0)


def _active(snapshot: Record) -> list[object]:
    return [p["value"] for p in snapshot["points"] if p["name"] == "http.server.active_requests"]


@dataclass(frozen=True)
class Case:
    """A route and what the client, the span and the duration metric must show for it."""

    path: str
    status: int
    body: bytes | None
    span_name: str
    span_status: str
    #: `http.response.status_code` on the span and the metric (None: the app raised before answering).
    status_code: int | None
    error_type: str | None
    #: How many `close()` of the app's body (or served file) the worker logs for the request.
    closes: int


CASES: Final = [
    pytest.param(Case("/hello", 200, None, "GET /hello", "UNSET", 200, None, 0), id="200"),
    pytest.param(Case("/nope", 404, b"not found\n", "GET", "UNSET", 404, None, 0), id="404"),
    pytest.param(Case("/fail", 500, b"failed\n", "GET", "ERROR", 500, "500", 0), id="500"),
    pytest.param(Case("/boom", 500, None, "GET", "ERROR", None, "RuntimeError", 0), id="exception"),
    pytest.param(Case("/stream", 200, STREAMED, "GET", "UNSET", 200, None, 1), id="stream"),
    pytest.param(Case("/file", 200, None, "GET", "UNSET", 200, None, 1), id="file"),
]


@pytest.mark.parametrize("case", CASES)
def test_route(server: Running, case: Case) -> None:
    query = new_query(case.path.strip("/"))
    metric_attributes: dict[str, object] = {**BASE_METRIC}
    if case.status_code is not None:
        metric_attributes["http.response.status_code"] = case.status_code
    if case.span_name != "GET":
        metric_attributes["http.route"] = case.span_name.split(" ", 1)[1]
    if case.error_type is not None:
        metric_attributes["error.type"] = case.error_type
    before = _histogram(server.metrics(), metric_attributes)

    if case.path == "/boom":
        status, body = _status_or_none(server.port, f"{case.path}?{query}"), b""
    else:
        status, body = get(server.port, f"{case.path}?{query}")
    span = server.span(query)
    wait_until(lambda: len(server.of("closed", query)) >= case.closes, "the app's close()")
    after = server.metrics()

    assert status == (server.kind.on_raise if case.path == "/boom" else case.status)
    assert body == (server.blob.read_bytes() if case.path == "/file" else case.body or body)
    assert (span["name"], span["span_kind"], span["status"]) == (case.span_name, "SERVER", case.span_status)
    attributes = span["attributes"]
    assert (attributes["url.path"], attributes["url.query"]) == (case.path, query)
    assert attributes["server.port"] == server.port
    assert attributes.get("http.response.status_code") == case.status_code
    assert attributes.get("error.type") == case.error_type
    assert span["events"] == (["exception"] if case.error_type == "RuntimeError" else [])
    assert span["parent_id"] is None
    closed = server.of("closed", query)
    assert len(closed) == case.closes
    # The span ends after the app's close(), so it covers the whole stream (and the file's sending).
    assert all(span["end_ns"] >= record["time_ns"] >= span["start_ns"] for record in closed)
    if case.path == "/stream":
        assert closed[0]["chunks"] == served_app.STREAM_CHUNKS
        assert span["end_ns"] - span["start_ns"] >= served_app.STREAM_CHUNKS * served_app.STREAM_PAUSE * 1e9
    # One more request in this attribute set, measured over exactly the span's interval.
    count_after, sum_after = _histogram(after, metric_attributes)
    assert count_after == before[0] + 1
    assert sum_after - before[1] == pytest.approx((span["end_ns"] - span["start_ns"]) / 1e9, abs=1e-6)
    assert _active(after) == [0]


def test_traceparent_is_the_parent(server: Running) -> None:
    query = new_query("traceparent")
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()

    status, body = get(server.port, f"/hello?{query}", {"traceparent": f"00-{trace_id}-{parent_id}-01"})
    span = server.span(query)

    assert status == 200
    assert (span["parent_trace_id"], span["parent_id"], span["trace_id"]) == (trace_id, parent_id, trace_id)
    # The app ran with the request's span current.
    assert body == f"hello {span['trace_id']}-{span['span_id']}\n".encode()


def test_file_download_keeps_the_servers_fast_path(server: Running) -> None:
    """The server is handed its own file object back, and sends the file the way it does without us."""
    query = new_query("sendfile")
    status, body = get(server.port, f"/file?{query}")
    span = server.span(query)
    (result,) = server.of("result", query)
    sent = [record for record in server.of("sendfile", query) if record["file"] == str(server.blob)]

    assert (status, body == server.blob.read_bytes()) == (200, True)
    assert span["attributes"]["http.response.status_code"] == 200
    assert result["type"] == server.kind.file_result
    assert result["server_object"] is result["file_wrapper"]
    if server.kind.sendfile == "os":
        # gunicorn's socket.sendfile went through os.sendfile (counted inside the worker) for every byte.
        assert sum(record["bytes"] for record in sent) == BLOB_SIZE
        assert len(sent) >= 1
    else:
        assert sent == []
    if server.kind.sendfile == "uwsgi":
        # uWSGI's request log marks responses sent by its C sendfile loop (not os.sendfile).
        line = rf"GET /file\?{query} => generated {BLOB_SIZE} bytes in \d+ msecs via sendfile\(\)"
        wait_until(lambda: re.search(line, server.log.read_text()) is not None, "uWSGI's request log")


def _hang_up_mid_stream(port: int, target: str) -> bytes:
    """Read the head and some of the body, then reset the connection (SO_LINGER 0: an RST, no FIN)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or len(received) < 200_000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return received


def test_client_disconnect_mid_stream(server: Running) -> None:
    query = new_query("disconnect")
    received = _hang_up_mid_stream(server.port, f"/big?{query}")
    span = server.span(query)
    wait_until(lambda: server.of("closed", query) != [], "the app's close()")
    # The worker then serves the next request normally.
    after_query = new_query("after-disconnect")
    status, _ = get(server.port, f"/hello?{after_query}")
    after = server.span(after_query)

    assert received.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))  # wsgiref answers in HTTP/1.0
    (closed,) = server.of("closed", query)
    assert closed["chunks"] < served_app.BIG_CHUNKS
    assert span["end_ns"] >= closed["time_ns"]
    # A client that hangs up is not a server error.
    assert (span["status"], span["events"]) == ("UNSET", [])
    assert span["attributes"]["http.response.status_code"] == 200
    assert (status, after["status"], after["parent_id"]) == (200, "UNSET", None)
    assert _active(server.metrics()) == [0]


GEVENT: Final = next(kind for kind in KINDS if kind.name == "gunicorn-gevent")
CONCURRENT: Final = 100


@pytest.fixture(scope="module")
def gevent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A gunicorn gevent worker of its own, so its peak of requests in flight is this test's."""
    process, running = _start(GEVENT, tmp_path_factory.mktemp("gevent-concurrency"))
    try:
        yield running
    finally:
        stop(process)


def test_gevent_greenlets_keep_their_own_context(gevent_server: Running) -> None:
    """100 requests stream at once in one worker thread (each greenlet sleeps between chunks): each
    span keeps its own parent and query, and each body saw its own span as current throughout."""
    parents = {new_query("greenlet"): (os.urandom(16).hex(), os.urandom(8).hex()) for _ in range(CONCURRENT)}
    bodies: dict[str, tuple[int, bytes]] = {}
    ready = threading.Barrier(CONCURRENT, timeout=DEADLINE)

    def call(query: str) -> None:
        trace_id, parent_id = parents[query]
        connection = http.client.HTTPConnection("127.0.0.1", gevent_server.port, timeout=DEADLINE)
        try:
            connection.connect()
            ready.wait()  # all connected: the requests arrive together
            connection.request(
                "GET", f"/gevent?{query}", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
            )
            response = connection.getresponse()
            bodies[query] = (response.status, response.read())
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(query,)) for query in parents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    spans = {query: gevent_server.span(query) for query in parents}
    # A request without traceparent, after them all, in the same worker: a root span of a new trace.
    root_query = new_query("no-parent")
    status, root_body = get(gevent_server.port, f"/gevent?{root_query}")
    root = gevent_server.span(root_query)
    snapshot = gevent_server.metrics()

    assert len(bodies) == CONCURRENT
    for query, (trace_id, parent_id) in parents.items():
        span = spans[query]
        assert (span["parent_trace_id"], span["parent_id"], span["trace_id"]) == (
            trace_id,
            parent_id,
            trace_id,
        )
        assert (span["attributes"]["url.path"], span["attributes"]["url.query"]) == ("/gevent", query)
        line = f"{trace_id}-{span['span_id']} {query}\n"
        assert bodies[query] == (200, (line * served_app.GEVENT_CHUNKS).encode())
        assert len(gevent_server.of("closed", query)) == 1
    assert len({span["span_id"] for span in spans.values()}) == CONCURRENT
    assert (status, root["parent_id"]) == (200, None)
    assert root["trace_id"] not in {trace_id for trace_id, _ in parents.values()}
    assert (
        root_body
        == (f"{root['trace_id']}-{root['span_id']} {root_query}\n" * served_app.GEVENT_CHUNKS).encode()
    )
    # The greenlets really overlapped in the one worker (100 of 100 in every run here; half is the bar,
    # so a loaded machine that staggers the clients does not fail it), and none is still active.
    assert snapshot["max_in_flight"] >= CONCURRENT // 2
    assert _active(snapshot) == [0]


LOAD_KINDS: Final = [
    ServerKind(
        "gunicorn-gthread-2x4", GUNICORN_FILE, "os", _gunicorn("-k", "gthread", "--threads", "4", workers=2)
    ),
    GEVENT,
    next(kind for kind in KINDS if kind.name == "waitress"),
]


@pytest.mark.parametrize("kind", LOAD_KINDS, ids=[kind.name for kind in LOAD_KINDS])
def test_small_load_pairs_every_span_with_its_request(kind: ServerKind, tmp_path: Path) -> None:
    """8 keep-alive clients x 25 requests, each with its own traceparent: one span per request, each with
    its own request's parent and path (the by-hand load script runs the same client at a large size)."""
    process, running = _start(kind, tmp_path)
    try:
        sent = run_clients(running.port, clients=8, requests=25, path="/hello")
        wait_until(lambda: check(sent, read_spans(running.events)).ok, "every span of the load")
    finally:
        stop(process)
    report = check(sent, read_spans(running.events))

    assert (report.sent, report.answered, report.spans) == (200, 200, 200)
    assert (report.missing, report.duplicated, report.wrong_parent, report.wrong_path) == (0, 0, 0, 0)
    assert [r for r in running.records() if r["kind"] == "log"] == []
