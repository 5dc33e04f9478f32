"""The test harness every test file shares: environs, a recording server, apps, response iterables,
samplers and propagators, metric readers, and real servers on 127.0.0.1 in this process (fixtures
built on these are in conftest.py; server processes are started by tests/processes.py).

Nothing here is a mock: the apps are real WSGI callables and `Server` is the server half of the
PEP 3333 contract (it records what `start_response` received and what `write` was given).
"""

from __future__ import annotations

import http.client
import io
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable
from wsgiref.handlers import SimpleHandler
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import setup_testing_defaults

import pytest
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Setter, TextMapPropagator, default_setter
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes
from typing_extensions import override

from otel_wsgi.types import OptExcInfo

Headers = list[tuple[str, str]]
#: What a server records of one `start_response` call.
Call = tuple[str, Headers, OptExcInfo | None]
#: `wrap` with the test's providers bound (the `traced` fixture); keyword arguments override them.
Traced = Callable[..., WSGIApplication]

BODY = (b"hello", b" ", b"world")
HEADERS: Headers = [("Content-Type", "text/plain")]
#: How long any wait for a server, a span or a file may take before the test fails (never asserted on).
DEADLINE: Final = 60.0
#: The two server metrics.
DURATION: Final = "http.server.request.duration"
ACTIVE: Final = "http.server.active_requests"


@runtime_checkable
class SupportsClose(Protocol):
    def close(self) -> object: ...


def make_environ(extra: Mapping[str, object] | None = None, /, **overrides: object) -> WSGIEnvironment:
    """Return a complete PEP 3333 environ (`setup_testing_defaults`) updated with `extra`, then `overrides`.

    `extra` is positional (`make_environ({"PATH_INFO": "/x"})`), so keys that are not identifiers fit too.
    """
    environ: WSGIEnvironment = {"QUERY_STRING": ""}
    setup_testing_defaults(environ)
    environ.update(extra or {})
    environ.update(overrides)
    return environ


class WeakEnviron(dict[str, object]):
    """An environ that can be weakly referenced, to prove nothing keeps it after the request."""


def close_body(body: Iterable[bytes]) -> None:
    """Close a response iterable as a server must (PEP 3333), asserting it can be closed."""
    assert isinstance(body, SupportsClose)
    body.close()


@dataclass
class Server:
    """The server side of one call: each `start_response` call, the bytes written, shared events."""

    calls: list[Call] = field(default_factory=list)
    written: list[bytes] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def start_response(
        self, status: str, headers: Headers, exc_info: OptExcInfo | None = None, /
    ) -> Callable[[bytes], object]:
        self.events.append(f"server {status}")
        self.calls.append((status, list(headers), exc_info))
        return self.write

    def write(self, data: bytes) -> None:
        self.written.append(data)

    @property
    def statuses(self) -> list[str]:
        """The status of each `start_response` call, in order."""
        return [status for status, _, _ in self.calls]

    @property
    def status(self) -> str | None:
        """The status of the last `start_response` call, if any."""
        return self.calls[-1][0] if self.calls else None

    @property
    def headers(self) -> Headers:
        """The headers of the last `start_response` call (none before the first)."""
        return self.calls[-1][1] if self.calls else []


@dataclass(frozen=True)
class Response:
    """What the client would get: the last status and headers, and the body bytes."""

    status: str
    headers: Headers
    body: bytes

    @property
    def code(self) -> int:
        """The status code (`200` of `"200 OK"`)."""
        return int(self.status[:3])


def run(
    app: WSGIApplication, environ: WSGIEnvironment | None = None, server: Server | None = None
) -> Response:
    """Call `app` like a server (a default `make_environ()`): iterate the body, then always close it."""
    server = Server() if server is None else server
    body = app(make_environ() if environ is None else environ, server.start_response)
    try:
        chunks = [*server.written, *body]
    finally:
        if isinstance(body, SupportsClose):
            body.close()
    status, headers, _ = server.calls[-1]
    return Response(status, headers, b"".join(chunks))


def serve(app: WSGIApplication, environ: WSGIEnvironment) -> tuple[bytes, str]:
    """Run `app` under the real wsgiref server handler; return (raw HTTP output, server error log)."""
    stdout, stderr = io.BytesIO(), io.StringIO()
    handler = SimpleHandler(io.BytesIO(), stdout, stderr, environ, multithread=True, multiprocess=False)
    handler.run(app)
    return stdout.getvalue(), stderr.getvalue()


# --- apps ---


def list_app(
    body: Iterable[bytes] = BODY, status: str = "200 OK", headers: Headers | None = None
) -> WSGIApplication:
    """Return an app that answers `status` with `body` as a list."""
    chunks = list(body)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, list(HEADERS if headers is None else headers))
        return list(chunks)

    return app


def generator_app(body: Iterable[bytes] = BODY, status: str = "200 OK") -> WSGIApplication:
    """Return an app whose body is a generator that calls `start_response` on the first `next()`."""
    chunks = list(body)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response(status, list(HEADERS))
        yield from chunks

    return app


def result_app(result: Iterable[bytes], status: str = "200 OK") -> WSGIApplication:
    """Return an app that answers with this very iterable object."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(status, list(HEADERS))
        return result

    return app


def raising_app(error: BaseException) -> WSGIApplication:
    """Return an app that raises `error` before returning (after `start_response`)."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", list(HEADERS))
        raise error

    return app


def exc_info_app(keyword: bool = False) -> WSGIApplication:
    """Return an app that starts a 200, fails, then restarts as a 500 passing `exc_info` (PEP 3333)."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", list(HEADERS))
        try:
            raise RuntimeError("late failure")
        except RuntimeError:
            info = sys.exc_info()
            environ["test.exc_info"] = info
            if keyword:
                by_name: Callable[..., object] = start_response
                by_name("500 Internal Server Error", list(HEADERS), exc_info=info)
            else:
                start_response("500 Internal Server Error", list(HEADERS), info)
        return [b"failed"]

    return app


# --- response iterables ---


class Failures:
    """A namespace, so the errors' `__qualname__` differs from their `__name__`."""

    class AppError(Exception):
        pass


class CountingIterator:
    """The iterator a `ClosingResult` hands out: it has its own `close`, which must not be called."""

    def __init__(self, chunks: Iterable[bytes], error: BaseException | None) -> None:
        self.chunks = iter(chunks)
        self.error = error
        self.close_calls = 0

    def __iter__(self) -> CountingIterator:
        return self

    def __next__(self) -> bytes:
        if self.error is not None:
            raise self.error
        return next(self.chunks)

    def close(self) -> None:
        self.close_calls += 1


class ClosingResult:
    """An iterable with `close` whose `__iter__` returns a different object (with its own `close`).

    `next_error` is raised by the iterator's `__next__`, `close_error` by `close()`.
    """

    def __init__(
        self,
        chunks: Iterable[bytes] = BODY,
        *,
        next_error: BaseException | None = None,
        close_error: BaseException | None = None,
    ) -> None:
        self.iterator = CountingIterator(chunks, next_error)
        self.close_error = close_error
        self.close_calls = 0

    def __iter__(self) -> CountingIterator:
        return self.iterator

    def close(self) -> None:
        self.close_calls += 1
        if self.close_error is not None:
            raise self.close_error


class SizedResult(ClosingResult):
    """A `ClosingResult` with a length (PEP 3333 lets servers use `len()` for Content-Length)."""

    def __len__(self) -> int:
        return 1


class SlottedFileWrapper:
    """A `wsgi.file_wrapper` whose instances cannot take an instance `close` (bjoern, meinheld style)."""

    __slots__ = ("filelike",)

    def __init__(self, filelike: io.BufferedReader, blksize: int = 8192) -> None:
        self.filelike = filelike

    def __iter__(self) -> SlottedFileWrapper:
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(8192)
        if not data:
            raise StopIteration
        return data

    def close(self) -> None:
        self.filelike.close()


class FileLike:
    """A Python file-like object (`read`, `fileno`, `close`) as a uWSGI-style file wrapper returns it."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()

    def __iter__(self) -> Iterator[bytes]:
        return iter(lambda: self.raw.read(8192), b"")


def uwsgi_file_wrapper(filelike: FileLike | io.BufferedReader, blksize: int = 8192) -> object:
    """uWSGI's `wsgi.file_wrapper` is a builtin that returns the file object itself (not a class)."""
    return filelike


def file_app(path: str, opened: list[io.BufferedReader]) -> WSGIApplication:
    """Return an app that answers with `environ["wsgi.file_wrapper"](file)`, recording each file opened."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        filelike = open(path, "rb")  # closed by the server through the file wrapper
        opened.append(filelike)
        result: Iterable[bytes] = environ["wsgi.file_wrapper"](filelike)
        return result

    return app


class LazyResult(ClosingResult):
    """A lazy proxy: any attribute it lacks raises RuntimeError (not AttributeError) from `__getattr__`."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"proxy has no {name}")


@dataclass(frozen=True)
class SamplerCall:
    """What one `should_sample` call was shown."""

    name: str
    kind: SpanKind | None
    attributes: dict[str, object]
    links: tuple[Link, ...]
    parent: SpanContext


class RecordingSampler(Sampler):
    """Remember what each `should_sample` call was shown (proof of what exists at span start), then
    decide as `decide` does: by default the SDK's own default, `ParentBased(ALWAYS_ON)`."""

    def __init__(self, decide: Sampler | None = None) -> None:
        self.calls: list[SamplerCall] = []
        self.decide = ParentBased(ALWAYS_ON) if decide is None else decide

    @override
    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        self.calls.append(SamplerCall(name, kind, dict(attributes or {}), tuple(links or ()), parent))
        return self.decide.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )  # the SDK takes the span's attributes from the result

    @override
    def get_description(self) -> str:
        return f"RecordingSampler({self.decide.get_description()})"


class ExtractOnlyPropagator(TextMapPropagator):
    """A propagator that injects nothing and names no fields; subclasses say what `extract` does."""

    @override
    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        return None

    @property
    @override
    def fields(self) -> set[str]:
        return set()


# --- metric readers ---


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """All metrics by name; a name seen twice (a duplicate instrument) fails the test."""
    data = reader.get_metrics_data()
    found: dict[str, Metric] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                assert metric.name not in found, f"two streams named {metric.name}"
                found[metric.name] = metric
    return found


def histogram_points(metric: Metric) -> list[HistogramDataPoint]:
    assert isinstance(metric.data, Histogram)
    return list(metric.data.data_points)


def sum_points(metric: Metric) -> list[NumberDataPoint]:
    assert isinstance(metric.data, Sum)
    return list(metric.data.data_points)


def duration_points(reader: InMemoryMetricReader) -> list[HistogramDataPoint]:
    """The points (one per attribute set) of `http.server.request.duration`; none before a request."""
    metric = collect(reader).get(DURATION)
    return [] if metric is None else histogram_points(metric)


def duration_count(reader: InMemoryMetricReader) -> int:
    """How many requests `http.server.request.duration` has recorded."""
    return sum(point.count for point in duration_points(reader))


def active_series(reader: InMemoryMetricReader) -> list[tuple[dict[str, object], float]]:
    """Collect now; return each `http.server.active_requests` point as (attributes, value)."""
    metric = collect(reader).get(ACTIVE)
    points = [] if metric is None else sum_points(metric)
    return [(dict(point.attributes or {}), point.value) for point in points]


def metric_counts(reader: InMemoryMetricReader) -> tuple[float, int]:
    """Collect once; return (requests still active, requests whose duration was recorded)."""
    metrics = collect(reader)
    active, duration = metrics.get(ACTIVE), metrics.get(DURATION)
    return (
        sum(point.value for point in sum_points(active)) if active is not None else 0.0,
        sum(point.count for point in histogram_points(duration)) if duration is not None else 0,
    )


# --- real servers on 127.0.0.1 ---


def wait_until(
    predicate: Callable[[], bool], what: str, timeout: float = DEADLINE, detail: Callable[[], str] = str
) -> None:
    """Poll `predicate` until it holds; fail the test (not hang) if it does not within `timeout`,
    with `detail()` (a server's log, say) in the failure message."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{detail()}".rstrip())
        time.sleep(0.01)


def in_threads(call: Callable[[str], None], arguments: Iterable[str]) -> None:
    """Run `call(argument)` for every argument, each on its own thread, all at once; wait for them all
    (each wait bounded)."""
    threads = [threading.Thread(target=call, args=(argument,)) for argument in arguments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)


def once(action: Callable[[], None]) -> Callable[[], None]:
    """Return `action` made idempotent: a test may stop its server, and the fixture stops it again."""
    done: list[bool] = []

    def run_once() -> None:
        if not done:
            done.append(True)
            action()

    return run_once


@dataclass(frozen=True)
class Served:
    """A server listening on 127.0.0.1 in this process, and how to stop it."""

    port: int
    stop: Callable[[], None]


class QuietHandler(WSGIRequestHandler):
    """wsgiref's request handler without its access log on stderr."""

    @override
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base's name)
        pass


def serve_wsgiref(app: WSGIApplication) -> Served:
    """Serve `app` with wsgiref's server on a free port of 127.0.0.1, in a thread; `stop` ends both."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()  # returns once the request being handled (and its close()) is done
        thread.join(DEADLINE)
        server.server_close()
        assert not thread.is_alive(), "wsgiref did not stop"

    return Served(server.server_port, once(stop))


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 GET to 127.0.0.1; return the status and the whole body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
