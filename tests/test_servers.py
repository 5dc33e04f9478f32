"""The middleware under real servers on 127.0.0.1: wsgiref and waitress in-process, gunicorn as a subprocess.

Every test makes real HTTP requests over a socket and asserts on the spans the real SDK ended. A server
may end a span after the client has read the whole response (it closes the body after sending), so
tests wait for spans with a bounded timeout; nothing here asserts on durations.
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import FileWrapper

import pytest
from apps import DEADLINE, Served, Traced, http_get, in_threads, once, serve_wsgiref, wait_until
from matrix_servers import BLOB_SIZE, GUNICORN_FILE, Running, ServerKind, gunicorn_command, serving
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from span_lines import STREAM_CHUNKS, query_of
from typing_extensions import override
from waitress.buffers import ReadOnlyFileBasedBuffer  # type: ignore[import-untyped]

from otel_wsgi import set_route
from otel_wsgi.cli.servers import start_waitress

CHUNKS: Final = (b"alpha ", b"beta ", b"gamma\n")


# --- in-process servers ---


@dataclass(frozen=True)
class RealServer:
    """A real WSGI server: how to start one, and the class it gives as `wsgi.file_wrapper`."""

    start: Callable[[WSGIApplication], Served]
    file_wrapper: type


def _serve_waitress(app: WSGIApplication) -> Served:
    # The command's own waitress runner: its stop wakes the loop without racing the loop's own close.
    running = start_waitress(app, "127.0.0.1", 0, threads=4)
    return Served(running.port, once(running.stop))


SERVERS: Final = [
    pytest.param(RealServer(serve_wsgiref, FileWrapper), id="wsgiref"),
    pytest.param(RealServer(_serve_waitress, ReadOnlyFileBasedBuffer), id="waitress"),
]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> RealServer:
    chosen: RealServer = request.param
    return chosen


@pytest.fixture
def start_server(server: RealServer) -> Iterator[Callable[[WSGIApplication], Served]]:
    """Start `server` around an app; every server started is stopped after the test."""
    started: list[Served] = []

    def start(app: WSGIApplication) -> Served:
        served = server.start(app)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture(autouse=True)
def _no_span_ended_twice(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The SDK only logs a second `end()` (or a change to an ended span); make that a failure."""
    yield
    logged = [record.getMessage() for record in caplog.get_records("call")]
    assert [message for message in logged if "ended span" in message] == []


def _spans(exporter: InMemorySpanExporter, count: int) -> tuple[ReadableSpan, ...]:
    """Wait for at least `count` ended spans, then return all of them."""
    wait_until(lambda: len(exporter.get_finished_spans()) >= count, f"{count} span(s)")
    return exporter.get_finished_spans()


def _raw_get(port: int, path: str) -> bytes:
    """One HTTP/1.0 GET on a raw socket, read to EOF: a truncated body is still returned, not raised."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


def _status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


# --- apps ---


class _Closing:
    """A streamed body with a `close()` that counts its calls (PEP 3333: the server must call it)."""

    def __init__(self, chunks: Iterable[bytes], closes: list[str]) -> None:
        self._chunks = chunks
        self._closes = closes

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        self._closes.append("close")


def _generator(closes: list[str]) -> Iterator[bytes]:
    try:
        yield from CHUNKS
    finally:
        closes.append("close")


BodyFactory = Callable[[StartResponse, list[str]], Iterable[bytes]]


def _list_body(start_response: StartResponse, closes: list[str]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return list(CHUNKS)


def _generator_body(start_response: StartResponse, closes: list[str]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _generator(closes)


def _streaming_body(start_response: StartResponse, closes: list[str]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _Closing(iter(CHUNKS), closes)


def _write_body(start_response: StartResponse, closes: list[str]) -> Iterable[bytes]:
    # The legacy `write` callable the server's start_response returns must reach the app (rule 5).
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(CHUNKS[0])
    return _Closing(iter(CHUNKS[1:]), closes)


BODY_CASES: Final = [
    pytest.param(_list_body, 0, id="list"),
    pytest.param(_generator_body, 1, id="generator"),
    pytest.param(_streaming_body, 1, id="streaming"),
    pytest.param(_write_body, 1, id="write-callable"),
]


@pytest.mark.parametrize(("make_body", "closes_expected"), BODY_CASES)
def test_every_body_shape_is_served_whole_and_ends_one_span(
    start_server: Callable[[WSGIApplication], Served],
    traced: Traced,
    exporter: InMemorySpanExporter,
    make_body: BodyFactory,
    closes_expected: int,
) -> None:
    closes: list[str] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        set_route(environ, "/shape/{kind}")
        return make_body(start_response, closes)

    served = start_server(traced(app))
    status, body = http_get(served.port, "/shape/one?x=1")
    (span,) = _spans(exporter, 1)
    served.stop()

    assert (status, body) == (200, b"".join(CHUNKS))
    assert len(closes) == closes_expected
    assert len(exporter.get_finished_spans()) == 1
    assert span.name == "GET /shape/{kind}"
    assert span.kind is SpanKind.SERVER
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/shape/{kind}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/shape/one"
    assert span.attributes["url.query"] == "x=1"
    assert span.attributes["server.port"] == served.port


class _LoggedFile(io.FileIO):
    """A served file that records, at its first close, how many spans had ended by then."""

    def __init__(self, path: Path, exporter: InMemorySpanExporter, log: list[int]) -> None:
        super().__init__(path, "rb")
        self._exporter, self._log = exporter, log

    @override
    def close(self) -> None:
        if not self.closed:
            self._log.append(len(self._exporter.get_finished_spans()))
        super().close()


def test_file_wrapper_is_handed_back_to_the_server_and_closed_before_the_span_ends(
    server: RealServer,
    start_server: Callable[[WSGIApplication], Served],
    traced: Traced,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(BLOB_SIZE))
    spans_at_file_close: list[int] = []
    returned: list[tuple[type, object]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        result: Iterable[bytes] = environ["wsgi.file_wrapper"](
            _LoggedFile(blob, exporter, spans_at_file_close), 65536
        )
        return result

    wrapped = traced(app)

    def spy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        result = wrapped(environ, start_response)
        returned.append((type(result), environ["wsgi.file_wrapper"]))
        return result

    served = start_server(spy)
    status, body = http_get(served.port, "/blob")
    (span,) = _spans(exporter, 1)
    served.stop()

    assert (status, body == blob.read_bytes()) == (200, True)
    # The server got its own object back, so its `isinstance` fast path (sendfile, waitress's
    # write_soon of the buffer) still applies.
    assert returned == [(server.file_wrapper, server.file_wrapper)]
    # The server closed it (which closed the file) exactly once, before the span ended.
    assert spans_at_file_close == [0]
    assert len(exporter.get_finished_spans()) == 1
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200
    assert span.status.status_code is StatusCode.UNSET


RAISE_CASES: Final = [
    pytest.param("call", 500, 0, id="at-call"),
    pytest.param("iteration", 200, 1, id="during-iteration"),
]


@pytest.mark.parametrize(("where", "client_status", "closes_expected"), RAISE_CASES)
def test_app_exception_is_answered_by_the_server_and_ends_an_error_span(
    start_server: Callable[[WSGIApplication], Served],
    traced: Traced,
    exporter: InMemorySpanExporter,
    where: str,
    client_status: int,
    closes_expected: int,
) -> None:
    closes: list[str] = []

    def failing(chunks: Iterable[bytes]) -> Iterator[bytes]:
        yield from chunks
        raise RuntimeError("boom")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if where == "call":
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _Closing(failing(CHUNKS[:1]), closes)

    served = start_server(traced(app))
    raw = _raw_get(served.port, "/fail")
    (span,) = _spans(exporter, 1)
    served.stop()

    # The server, not the middleware, answers an app that raised: 500 before any byte, else a cut body.
    assert _status_of(raw) == client_status
    assert len(closes) == closes_expected
    assert len(exporter.get_finished_spans()) == 1
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "RuntimeError: boom"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "RuntimeError"
    assert [event.name for event in span.events] == ["exception"]


def test_each_concurrent_request_gets_its_own_traceparent_as_parent(
    start_server: Callable[[WSGIApplication], Served],
    traced: Traced,
    exporter: InMemorySpanExporter,
) -> None:
    """Concurrent requests, each with its own `traceparent`: each span's parent is its own header's,
    and the body code of each request sees its own span as current."""

    def current_trace_id() -> Iterator[bytes]:
        yield f"{trace.get_current_span().get_span_context().trace_id:032x}".encode()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return current_trace_id()

    served = start_server(traced(app))
    parents = {f"{index + 1:032x}": f"{index + 0xA1:016x}" for index in range(4)}
    bodies: dict[str, bytes] = {}

    def call(trace_id: str) -> None:
        header = f"00-{trace_id}-{parents[trace_id]}-01"
        bodies[trace_id] = http_get(served.port, "/", {"traceparent": header})[1]

    in_threads(call, parents)
    spans = _spans(exporter, len(parents))
    served.stop()

    assert bodies == {trace_id: trace_id.encode() for trace_id in parents}
    seen = {}
    for span in spans:
        assert span.parent is not None and span.parent.is_remote
        assert span.context is not None and span.context.trace_id == span.parent.trace_id
        seen[f"{span.parent.trace_id:032x}"] = f"{span.parent.span_id:016x}"
    assert seen == parents


def test_client_disconnect_mid_stream_closes_the_body_and_is_not_an_error(
    start_server: Callable[[WSGIApplication], Served],
    traced: Traced,
    exporter: InMemorySpanExporter,
) -> None:
    total = 1024
    produced: list[int] = []
    closes: list[str] = []

    def chunks() -> Iterator[bytes]:
        for index in range(total):
            produced.append(index)
            yield b"x" * 65536

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Closing(chunks(), closes)

    served = start_server(traced(app))
    with socket.create_connection(("127.0.0.1", served.port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /stream HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1024)
    # The client has gone after the headers; the server finds out on a later send and closes the body.
    (span,) = _spans(exporter, 1)
    wait_until(lambda: closes != [], "close() of the body")
    served.stop()

    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))
    assert len(produced) < total
    assert closes == ["close"]
    assert len(exporter.get_finished_spans()) == 1
    # A client that hangs up is not a server error.
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 200


# --- gunicorn in a subprocess (tests/matrix_app.py), under strace where it may trace ---


@dataclass(frozen=True)
class Gunicorn:
    """A running gunicorn gthread worker serving tests/matrix_app.py, and strace's log if it runs."""

    server: Running
    strace: Path | None


def _strace() -> str | None:
    """The strace binary, if present and allowed to trace here (ptrace can be forbidden)."""
    path = shutil.which("strace")
    if path is None:
        return None
    probe = [path, "-f", "--seccomp-bpf", "-e", "trace=sendfile", "-o", os.devnull, "true"]
    done = subprocess.run(probe, capture_output=True, timeout=DEADLINE, check=False)
    return path if done.returncode == 0 else None


def _traced_by(
    strace: str | None, strace_out: Path, command: Callable[[], list[str]]
) -> Callable[[], list[str]]:
    """`command`, run under strace (its sendfile calls logged to `strace_out`) when strace may run."""
    if strace is None:
        return command
    return lambda: [strace, "-f", "--seccomp-bpf", "-e", "trace=sendfile", "-o", str(strace_out), *command()]


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    directory = tmp_path_factory.mktemp("gunicorn")
    strace, strace_out = _strace(), directory / "strace.txt"
    gthread = gunicorn_command("-k", "gthread", "--threads", "4")
    kind = ServerKind("gunicorn-gthread", GUNICORN_FILE, "os", _traced_by(strace, strace_out, gthread))
    with serving(kind, directory) as server:
        yield Gunicorn(server, strace_out if strace is not None else None)


#: What matrix_app.py's /stream yields.
STREAMED: Final = b"".join(f"chunk {index}\n".encode() for index in range(STREAM_CHUNKS))

GUNICORN_CASES: Final = [
    pytest.param("/hello", 200, None, "GET /hello", "UNSET", None, id="list"),
    pytest.param("/stream", 200, STREAMED, "GET", "UNSET", None, id="generator"),
    pytest.param("/nope", 404, b"not found\n", "GET", "UNSET", None, id="not-found"),
    pytest.param("/boom", 500, None, "GET", "ERROR", "RuntimeError", id="raises"),
]


@pytest.mark.parametrize(("path", "status", "body", "name", "span_status", "error_type"), GUNICORN_CASES)
def test_gunicorn_serves_each_response_kind_with_one_span(
    gunicorn: Gunicorn,
    path: str,
    status: int,
    body: bytes | None,
    name: str,
    span_status: str,
    error_type: str | None,
) -> None:
    server = gunicorn.server
    query = f"case={path.strip('/')}"
    got_status, got_body = http_get(server.port, f"{path}?{query}")
    span = server.span(query)

    assert got_status == status
    if error_type is None:  # /hello answers with the ids of the span it saw as current
        assert got_body == (body or f"hello {span['trace_id']}-{span['span_id']}\n".encode())
    assert (span["name"], span["span_kind"], span["status"]) == (name, "SERVER", span_status)
    assert span["attributes"]["url.path"] == path
    assert span["attributes"]["server.port"] == server.port
    assert span["attributes"].get("error.type") == error_type
    # gunicorn writes its own 500 for an app that raised: the middleware never saw a status.
    assert span["attributes"].get("http.response.status_code") == (None if error_type else status)


def test_gunicorn_file_wrapper_keeps_sendfile(gunicorn: Gunicorn) -> None:
    server, query = gunicorn.server, "case=file"
    status, body = http_get(server.port, f"/file?{query}")
    span = server.span(query)

    assert (status, body == server.blob.read_bytes()) == (200, True)
    assert span["status"] == "UNSET"
    assert span["attributes"]["http.response.status_code"] == 200
    # The middleware handed gunicorn the very FileWrapper its `wsgi.file_wrapper` made (so `isinstance`
    # picks the sendfile path) ...
    (result,) = server.of("result", query)
    assert (result["type"], result["server_object"], result["file_wrapper"]) == (GUNICORN_FILE, True, True)
    # ... gunicorn closed it (closing the file) once, and the span ended after that close.
    order = [record["kind"] for record in server.records() if query_of(record) == query]
    assert [kind for kind in order if kind != "sendfile"] == ["result", "closed", "span"]


def _sendfile_bytes(strace_out: Path) -> int:
    """The bytes that sendfile(2) calls in strace's log returned, in all."""
    return sum(int(count) for count in re.findall(r"sendfile\(.*\) = (\d+)", strace_out.read_text()))


def test_gunicorn_sends_file_with_sendfile(gunicorn: Gunicorn) -> None:
    """strace shows gunicorn's sendfile(2) fast path sending the whole file through the middleware."""
    if gunicorn.strace is None:
        pytest.skip("strace is not available (or may not trace) here")
    strace_out = gunicorn.strace
    before = _sendfile_bytes(strace_out)
    status, body = http_get(gunicorn.server.port, "/file?case=sendfile")
    gunicorn.server.span("case=sendfile")
    wait_until(lambda: _sendfile_bytes(strace_out) >= before + BLOB_SIZE, "sendfile(2) in strace's log")

    assert (status, len(body)) == (200, BLOB_SIZE)
    assert _sendfile_bytes(strace_out) - before == BLOB_SIZE
