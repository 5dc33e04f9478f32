"""HTTP server metrics: instruments, attribute sets, and agreement with the spans.

Every test runs the wrapped app against a real SDK `MeterProvider` + `InMemoryMetricReader`; the test
itself plays the WSGI server (call, iterate, close), so it can look at the metrics mid-response.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from wsgiref.types import StartResponse, WSGIEnvironment
from wsgiref.util import FileWrapper

import pytest
from apps import (
    Failures,
    Server,
    Traced,
    close_body,
    collect,
    duration_count,
    histogram_points,
    make_environ,
    run,
    sum_points,
)
from opentelemetry.metrics import Meter, NoOpMeterProvider
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes
from typing_extensions import override

from otel_wsgi import Config, set_route, wrap

# Private names, read only by the cache-bound tests at the end of this module.
from otel_wsgi.effects import _CACHE_LIMIT, TracedRequest
from otel_wsgi.metrics import ACTIVE_SETS_LIMIT, ActiveCounts
from otel_wsgi.types import ActiveKey, AttributeValue, SemconvMode

DURATION: str = "http.server.request.duration"
ACTIVE: str = "http.server.active_requests"
OLD_DURATION: str = "http.server.duration"
REQUEST_SIZE: str = "http.server.request.body.size"
RESPONSE_SIZE: str = "http.server.response.body.size"
# The bucket advice the HTTP semantic conventions give for the request duration (seconds).
SEMCONV_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
)  # fmt: skip
# Where the middleware keeps its per-request state in the environ (private: read by the cache tests).
STATE_KEY: str = "otel_wsgi.request"

Headers = list[tuple[str, str]]
Attrs = dict[str, object]
App = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


#: A request full of high-cardinality, client-controlled values the metrics must never carry.
REQUEST: dict[str, object] = {
    "REQUEST_METHOD": "GET",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "PATH_INFO": "/users/42",
    "QUERY_STRING": "session=abc123&page=7",
    "REMOTE_ADDR": "203.0.113.7",
    "REMOTE_PORT": "51234",
    "HTTP_USER_AGENT": "curl/8.4.0",
    "HTTP_HOST": "shop.example:8443",
    "SERVER_NAME": "srv.internal",
    "SERVER_PORT": "8080",
}


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


def streaming(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    """A generator app: `start_response` runs on the first `next()`; three chunks, 50 ms apart."""
    start_response("206 Partial Content", [("Content-Type", "text/plain")])
    for chunk in (b"one ", b"two ", b"three"):
        time.sleep(0.05)
        yield chunk


# --- reading the metrics -------------------------------------------------------------------


def attrs(point: HistogramDataPoint | NumberDataPoint) -> Attrs:
    return dict(point.attributes or {})


def only_point(reader: InMemoryMetricReader, name: str) -> HistogramDataPoint:
    """The single data point of a histogram."""
    points = histogram_points(collect(reader)[name])
    assert len(points) == 1, [attrs(p) for p in points]
    return points[0]


def active(reader: InMemoryMetricReader) -> list[tuple[Attrs, int | float]]:
    """The active-requests points as (attributes, value)."""
    return [(attrs(point), point.value) for point in sum_points(collect(reader)[ACTIVE])]


def active_total(reader: InMemoryMetricReader) -> int | float:
    return sum(value for _, value in active(reader))


def seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


# --- instruments -----------------------------------------------------------------------------


def test_instruments_names_units_descriptions_and_buckets(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    app = wrap(hello, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    run(app, make_environ(REQUEST))
    data = reader.get_metrics_data()
    assert data is not None
    scopes = [sm for rm in data.resource_metrics for sm in rm.scope_metrics]
    assert len(scopes) == 1
    metrics = {metric.name: metric for metric in scopes[0].metrics}
    assert set(metrics) == {DURATION, ACTIVE}

    duration = metrics[DURATION]
    assert (duration.unit, duration.description) == ("s", "Duration of HTTP server requests.")
    (point,) = histogram_points(duration)
    assert tuple(point.explicit_bounds) == SEMCONV_BUCKETS
    assert point.count == 1

    active_requests = metrics[ACTIVE]
    assert (active_requests.unit, active_requests.description) == (
        "{request}",
        "Number of active HTTP server requests.",
    )
    assert isinstance(active_requests.data, Sum)
    assert active_requests.data.is_monotonic is False  # up-down counter semantics

    # The meter's scope is the tracer's: same name, version and schema.
    (span,) = exporter.get_finished_spans()
    assert span.instrumentation_scope is not None
    scope = scopes[0].scope
    assert (scope.name, scope.version, scope.schema_url) == (
        span.instrumentation_scope.name,
        span.instrumentation_scope.version,
        span.instrumentation_scope.schema_url,
    )
    assert scope.name == "otel_wsgi"


# --- attribute sets ----------------------------------------------------------------------------

BASE: Attrs = {"http.request.method": "GET", "url.scheme": "http", "network.protocol.version": "1.1"}

ATTRIBUTE_CASES = [
    pytest.param({}, "200 OK", None, {**BASE, "http.response.status_code": 200}, id="get-200"),
    pytest.param(
        {"REQUEST_METHOD": "POST", "wsgi.url_scheme": "https", "SERVER_PROTOCOL": "HTTP/1.0"},
        "201 Created",
        "/users/{id}",
        {
            "http.request.method": "POST",
            "url.scheme": "https",
            "network.protocol.version": "1.0",
            "http.response.status_code": 201,
            "http.route": "/users/{id}",
        },
        id="post-https-1.0-route",
    ),
    pytest.param(
        {"REQUEST_METHOD": "BREW"},
        "200 OK",
        None,
        {**BASE, "http.request.method": "_OTHER", "http.response.status_code": 200},
        id="unknown-method-is-other",
    ),
    pytest.param({}, "404 Not Found", None, {**BASE, "http.response.status_code": 404}, id="4xx-no-error"),
    pytest.param(
        {},
        "500 Internal Server Error",
        None,
        {**BASE, "http.response.status_code": 500, "error.type": "500"},
        id="500-error-type",
    ),
    pytest.param(
        {},
        "503 Service Unavailable",
        "/health",
        {**BASE, "http.response.status_code": 503, "error.type": "503", "http.route": "/health"},
        id="503-with-route",
    ),
    pytest.param(
        {"SERVER_PROTOCOL": "HTTP/2"},
        "200 OK",
        None,
        {**BASE, "network.protocol.version": "2", "http.response.status_code": 200},
        id="http2",
    ),
    pytest.param(
        {"SERVER_PROTOCOL": "junk"},
        "200 OK",
        None,
        {"http.request.method": "GET", "url.scheme": "http", "http.response.status_code": 200},
        id="bad-protocol-no-version",
    ),
    pytest.param({}, "abc", None, {**BASE, "error.type": "_OTHER"}, id="malformed-status"),
]


@pytest.mark.parametrize(("overrides", "status", "route", "expected"), ATTRIBUTE_CASES)
def test_duration_and_active_attributes_are_exact_low_cardinality_sets(
    provider: TracerProvider,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    overrides: dict[str, object],
    status: str,
    route: str | None,
    expected: Attrs,
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if route is not None:
            set_route(environ, route)
        start_response(status, [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = wrap(app, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    run(wrapped, make_environ(REQUEST, **overrides))
    point = only_point(reader, DURATION)
    assert attrs(point) == expected
    assert point.count == 1
    keys = ("http.request.method", "url.scheme")
    assert active(reader) == [({key: expected[key] for key in keys}, 0)]


OLD_BASE: Attrs = {
    "http.method": "GET",
    "http.scheme": "http",
    "http.flavor": "1.1",
    "http.status_code": 200,
    "http.server_name": "srv.internal",
    "net.host.port": 8080,
}
OK: Attrs = {**BASE, "http.response.status_code": 200}
# Requests that differ from the default in one input each: (environ overrides, stable set, old set).
# The app reads its status, route and failure from X- headers, which the metrics must not see.
VARIANTS: list[tuple[dict[str, object], Attrs, Attrs]] = [
    ({}, OK, OLD_BASE),
    ({"wsgi.url_scheme": "https"}, {**OK, "url.scheme": "https"}, {**OLD_BASE, "http.scheme": "https"}),
    (
        {"SERVER_PROTOCOL": "HTTP/1.0"},
        {**OK, "network.protocol.version": "1.0"},
        {**OLD_BASE, "http.flavor": "1.0"},
    ),
    ({"REQUEST_METHOD": "POST"}, {**OK, "http.request.method": "POST"}, {**OLD_BASE, "http.method": "POST"}),
    (
        {"HTTP_X_STATUS": "404 Not Found"},
        {**OK, "http.response.status_code": 404},
        {**OLD_BASE, "http.status_code": 404},
    ),
    ({"HTTP_X_ROUTE": "/a"}, {**OK, "http.route": "/a"}, OLD_BASE),
    ({"HTTP_X_ROUTE": "/b"}, {**OK, "http.route": "/b"}, OLD_BASE),
    (
        {"HTTP_X_STATUS": "500 Internal Server Error"},
        {**OK, "http.response.status_code": 500, "error.type": "500"},
        {**OLD_BASE, "http.status_code": 500},
    ),
    (
        {"HTTP_X_STATUS": "500 Internal Server Error", "HTTP_X_RAISE": "1"},
        {**OK, "http.response.status_code": 500, "error.type": "Failures.AppError"},
        {**OLD_BASE, "http.status_code": 500},
    ),
    ({"SERVER_PORT": "9090"}, OK, {**OLD_BASE, "net.host.port": 9090}),
    ({"SERVER_NAME": "other.internal"}, OK, {**OLD_BASE, "http.server_name": "other.internal"}),
    (
        {"HTTP_HOST": "elsewhere.example:1234", "PATH_INFO": "/other", "REMOTE_ADDR": "198.51.100.1"},
        OK,
        OLD_BASE,
    ),
]


def controlled(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    route = environ.get("HTTP_X_ROUTE")
    if isinstance(route, str):
        set_route(environ, route)
    status = environ.get("HTTP_X_STATUS", "200 OK")
    assert isinstance(status, str)
    start_response(status, [("Content-Type", "text/plain")])
    if "HTTP_X_RAISE" in environ:
        raise Failures.AppError("requested")
    return [b"ok"]


@pytest.mark.parametrize(
    ("semconv", "name"),
    [pytest.param("stable", DURATION, id="stable"), pytest.param("old", OLD_DURATION, id="old")],
)
def test_prepared_attribute_sets_follow_every_input_of_one_wrap(
    provider: TracerProvider,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    semconv: SemconvMode,
    name: str,
) -> None:
    """One wrap() serves every variant twice: a cached set never leaks into another request."""
    app = wrap(
        controlled, config=Config(semconv=semconv), tracer_provider=provider, meter_provider=meter_provider
    )
    for overrides, _, _ in VARIANTS + VARIANTS:
        try:
            run(app, make_environ(REQUEST, **overrides))
        except Failures.AppError:
            pass
    column = 1 if semconv == "stable" else 2
    expected = Counter(frozenset(row[column].items()) for row in VARIANTS + VARIANTS)
    got = {frozenset(attrs(p).items()): p.count for p in histogram_points(collect(reader)[name])}
    assert got == dict(expected)


# --- duration: the same instants as the span ----------------------------------------------


def test_streamed_body_duration_covers_the_body_and_equals_the_span(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    app = wrap(streaming, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    assert run(app, make_environ(REQUEST)).body == b"one two three"
    (span,) = exporter.get_finished_spans()
    point = only_point(reader, DURATION)
    assert point.count == 1
    # Not a performance check: three sleeps of 50 ms happen between the call and close().
    assert point.sum >= 0.15
    assert point.sum == seconds(span)
    assert point.min == point.max == point.sum


def test_generator_app_status_code_is_on_the_metric(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        set_route(environ, "/stream")
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        yield b"accepted"

    wrapped = wrap(app, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    run(wrapped, make_environ(REQUEST))
    assert attrs(only_point(reader, DURATION)) == {
        **BASE,
        "http.response.status_code": 202,
        "http.route": "/stream",
    }


# --- active requests ---------------------------------------------------------------------------


def test_active_requests_is_one_while_the_body_is_iterated_and_zero_after_close(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    app = wrap(streaming, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    server = Server()
    body = iter(app(make_environ(REQUEST), server.start_response))
    assert active(reader) == [({"http.request.method": "GET", "url.scheme": "http"}, 1)]
    assert next(body) == b"one "
    assert active_total(reader) == 1
    assert list(body) == [b"two ", b"three"]
    assert active_total(reader) == 1  # exhausted, but the server has not closed the response yet
    assert duration_count(reader) == 0  # nor is the duration recorded before the end
    close_body(body)
    assert active(reader) == [({"http.request.method": "GET", "url.scheme": "http"}, 0)]
    assert duration_count(reader) == 1


def test_active_requests_for_a_response_closed_without_iteration(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    app = wrap(hello, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    server = Server()
    body = app(make_environ(REQUEST, REQUEST_METHOD="POST"), server.start_response)
    assert active(reader) == [({"http.request.method": "POST", "url.scheme": "http"}, 1)]
    close_body(body)
    assert active_total(reader) == 0
    assert attrs(only_point(reader, DURATION))["http.response.status_code"] == 200


def test_two_wraps_on_one_meter_provider_share_the_instruments(
    provider: TracerProvider,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    first = wrap(hello, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    second = wrap(
        streaming,
        config=Config(body_size_metrics=True),
        tracer_provider=provider,
        meter_provider=meter_provider,
    )
    body_a = first(make_environ(REQUEST), Server().start_response)
    body_b = iter(second(make_environ(REQUEST), Server().start_response))
    next(body_b)
    # One observable counter serves both apps (the SDK would drop a second callback of that name).
    assert active(reader) == [({"http.request.method": "GET", "url.scheme": "http"}, 2)]
    close_body(body_a)
    assert active_total(reader) == 1
    close_body(body_b)
    assert active_total(reader) == 0
    assert duration_count(reader) == 2  # in one histogram stream (`collect` rejects a duplicate name)

    # The instruments are per meter provider: shared by every config on one, fresh for another.
    dup = wrap(hello, config=Config(semconv="dup"), tracer_provider=provider, meter_provider=meter_provider)
    run(dup, make_environ(REQUEST))
    assert duration_count(reader) == 3
    assert set(collect(reader)) == {DURATION, OLD_DURATION, ACTIVE, RESPONSE_SIZE}
    other_reader = InMemoryMetricReader()
    other_provider = MeterProvider(metric_readers=[other_reader])
    try:
        other = wrap(hello, config=Config(), tracer_provider=provider, meter_provider=other_provider)
        run(other, make_environ(REQUEST))
        assert duration_count(other_reader) == 1
        assert active(other_reader) == [({"http.request.method": "GET", "url.scheme": "http"}, 0)]
        assert duration_count(reader) == 3
    finally:
        other_provider.shutdown()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_active_requests_stay_consistent_across_threads(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    app = wrap(hello, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(25):
                run(app, make_environ(REQUEST))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert active_total(reader) == 0
    assert duration_count(reader) == 200


# --- sampling and nesting -------------------------------------------------------------------


# --- the in-process count behind active requests: bounded, and each drained series seen at 0 ---

# One step on an `ActiveCounts` of limit 2: ("begin", set, lasting), ("end", set) or ("observe", what the
# collection reports as {set: count}). Sets are one-letter names; "~" is the overflow set.
Step = tuple[object, ...]
COUNT_CASES: list[tuple[str, list[Step]]] = [
    ("lasting-stays-at-zero", [
        ("begin", "g", True), ("end", "g"), ("observe", {"g": 0}), ("observe", {"g": 0}),
    ]),
    ("unseen-client-set-goes-at-once", [("begin", "j", False), ("end", "j"), ("observe", {})]),
    ("seen-client-set-reports-zero-once", [
        ("begin", "j", False), ("observe", {"j": 1}), ("end", "j"), ("observe", {"j": 0}), ("observe", {}),
    ]),
    ("seen-then-busy-again", [
        ("begin", "j", False), ("observe", {"j": 1}), ("end", "j"), ("begin", "j", False),
        ("observe", {"j": 1}), ("end", "j"), ("observe", {"j": 0}), ("observe", {}),
    ]),
    ("past-the-limit-overflow", [
        ("begin", "a", False), ("begin", "b", False), ("begin", "c", False), ("begin", "d", False),
        ("observe", {"a": 1, "b": 1, "~": 2}), ("end", "~"), ("end", "~"), ("end", "a"), ("end", "b"),
        ("observe", {"a": 0, "b": 0, "~": 0}), ("observe", {}),
    ]),
    ("lasting-admitted-past-the-limit", [
        ("begin", "a", False), ("begin", "b", False), ("begin", "g", True),
        ("observe", {"a": 1, "b": 1, "g": 1}),
    ]),
]  # fmt: skip


def key_of(name: object) -> tuple[tuple[str, AttributeValue], ...]:
    return (("set", str(name)),)


@pytest.mark.parametrize("steps", [steps for _, steps in COUNT_CASES], ids=[name for name, _ in COUNT_CASES])
def test_active_counts_forget_drained_client_sets_after_one_zero_and_cap_the_live_sets(
    steps: list[Step],
) -> None:
    counts = ActiveCounts(limit=2)
    overflow = key_of("~")
    for step in steps:
        if step[0] == "begin":
            counts.begin(ActiveKey(key_of(step[1]), step[2] is True), overflow)
        elif step[0] == "end":
            counts.end(key_of(step[1]))
        else:
            assert {dict(key)["set"]: count for key, count in counts.observe()} == step[1]


def test_active_counts_return_the_set_to_end() -> None:
    counts = ActiveCounts(limit=1)
    assert counts.begin(ActiveKey(key_of("a"), False), key_of("~")) == key_of("a")
    assert counts.begin(ActiveKey(key_of("b"), False), key_of("~")) == key_of("~")


def test_client_chosen_series_falls_to_zero_once_then_goes_and_known_ones_stay(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    config = Config(capture_all_methods=True)
    app = wrap(hello, config=config, tracer_provider=provider, meter_provider=meter_provider)
    brew = app(make_environ(REQUEST, REQUEST_METHOD="BREW"), Server().start_response)
    get = app(make_environ(REQUEST), Server().start_response)
    assert sorted((a["http.request.method"], v) for a, v in active(reader)) == [("BREW", 1), ("GET", 1)]
    close_body(brew)
    close_body(get)
    assert sorted((a["http.request.method"], v) for a, v in active(reader)) == [("BREW", 0), ("GET", 0)]
    assert [(a["http.request.method"], v) for a, v in active(reader)] == [("GET", 0)]


def test_active_series_are_capped_and_the_total_stays_exact(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    config = Config(capture_all_methods=True)
    app = wrap(hello, config=config, tracer_provider=provider, meter_provider=meter_provider)
    extra = 5
    bodies = [
        app(make_environ(REQUEST, REQUEST_METHOD=f"M{n}"), Server().start_response)
        for n in range(ACTIVE_SETS_LIMIT + extra)
    ]
    points = active(reader)
    assert len(points) == ACTIVE_SETS_LIMIT + 1
    assert ({"http.request.method": "_OTHER", "url.scheme": "_OTHER"}, extra) in points
    assert active_total(reader) == ACTIVE_SETS_LIMIT + extra
    for body in bodies:
        close_body(body)
    assert active_total(reader) == 0
    assert ACTIVE not in collect(reader)  # each reported its zero once, and is gone


@pytest.mark.parametrize("sampler", [ALWAYS_OFF])
def test_unsampled_requests_are_still_measured(
    traced: Traced, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    app = traced(hello)
    run(app, make_environ(REQUEST))
    run(app, make_environ(REQUEST))
    assert exporter.get_finished_spans() == ()
    point = only_point(reader, DURATION)
    assert point.count == 2
    assert attrs(point) == {**BASE, "http.response.status_code": 200}
    assert list(point.exemplars) == []  # nothing to link to
    assert active_total(reader) == 0


@pytest.mark.parametrize("sampler", [ALWAYS_OFF])
def test_unsampled_request_that_raises_is_measured_with_its_error_type(
    traced: Traced, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    error = Failures.AppError("unsampled failure")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise error

    with pytest.raises(Failures.AppError) as raised:
        run(traced(app), make_environ(REQUEST))
    assert raised.value is error
    assert exporter.get_finished_spans() == ()
    point = only_point(reader, DURATION)
    assert attrs(point) == {**BASE, "http.response.status_code": 200, "error.type": "Failures.AppError"}
    assert active_total(reader) == 0


def test_nested_layer_records_nothing_extra(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        set_route(environ, "/nested/{id}")
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"abc")
        return [b"de", b"fgh"]

    config = Config(body_size_metrics=True)
    inner = wrap(app, config=config, tracer_provider=provider, meter_provider=meter_provider)
    outer = wrap(inner, config=config, tracer_provider=provider, meter_provider=meter_provider)
    server = Server()
    body = iter(outer(make_environ(REQUEST, CONTENT_LENGTH="4"), server.start_response))
    assert active_total(reader) == 1
    assert b"".join(body) == b"defgh"
    close_body(body)
    assert sorted(span.kind.name for span in exporter.get_finished_spans()) == ["INTERNAL", "SERVER"]
    expected = {**BASE, "http.response.status_code": 200, "http.route": "/nested/{id}"}
    for name, value in ((DURATION, None), (REQUEST_SIZE, 4), (RESPONSE_SIZE, 8)):
        point = only_point(reader, name)
        assert (point.count, attrs(point)) == (1, expected), name
        if value is not None:
            assert point.sum == value, name
    assert active_total(reader) == 0
    assert b"".join(server.written) == b"abc"


# --- exceptions -----------------------------------------------------------------------------


ERROR_CASES = [
    pytest.param(
        None, False, {**BASE, "error.type": "Failures.AppError"}, id="at-call-before-start-response"
    ),
    pytest.param(
        "500 Internal Server Error",
        False,
        {**BASE, "http.response.status_code": 500, "error.type": "Failures.AppError"},
        id="at-call-after-500",
    ),
    pytest.param(
        "200 OK",
        True,
        {**BASE, "http.response.status_code": 200, "error.type": "Failures.AppError"},
        id="during-iteration",
    ),
]


@pytest.mark.parametrize(("status", "in_body", "expected"), ERROR_CASES)
def test_exceptions_put_error_type_on_the_duration(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    status: str | None,
    in_body: bool,
    expected: Attrs,
) -> None:
    def failing_body() -> Iterator[bytes]:
        yield b"partial"
        raise Failures.AppError("broken stream")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if status is not None:
            start_response(status, [("Content-Type", "text/plain")])
        if in_body:
            return failing_body()
        raise Failures.AppError("broken app")

    wrapped = wrap(app, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    with pytest.raises(Failures.AppError):
        run(wrapped, make_environ(REQUEST))
    point = only_point(reader, DURATION)
    assert attrs(point) == expected
    (span,) = exporter.get_finished_spans()
    assert point.sum == seconds(span)
    assert active_total(reader) == 0


def test_base_exception_is_measured_but_not_an_error(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        raise SystemExit(3)

    wrapped = wrap(app, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    with pytest.raises(SystemExit):
        run(wrapped, make_environ(REQUEST))
    assert attrs(only_point(reader, DURATION)) == {**BASE, "http.response.status_code": 200}
    assert active_total(reader) == 0


# --- old and dup conventions ------------------------------------------------------------------

OLD_ATTRS: Attrs = {
    "http.method": "GET",
    "http.scheme": "https",
    "http.status_code": 200,
    "http.flavor": "1.1",
    "http.server_name": "srv.internal",
    "net.host.port": 8080,
}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({}, OLD_ATTRS, id="server-name-and-port"),
        pytest.param(
            {"HTTP_HOST": "attacker.example:6666", "HTTP_X_FORWARDED_HOST": "forged.example"},
            OLD_ATTRS,
            id="forged-host-ignored",
        ),
        pytest.param(
            {"SERVER_PORT": "not-a-port", "SERVER_NAME": ""},
            {k: v for k, v in OLD_ATTRS.items() if k not in ("http.server_name", "net.host.port")},
            id="invalid-server-values-dropped",
        ),
        pytest.param(
            {"SERVER_PORT": ["8080"]},  # not a string: a broken server; still measured, port dropped
            {k: v for k, v in OLD_ATTRS.items() if k != "net.host.port"},
            id="unhashable-port",
        ),
    ],
)
def test_old_semconv_records_only_the_old_duration_in_ms(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    overrides: dict[str, object],
    expected: Attrs,
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        set_route(environ, "/users/{id}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    wrapped = wrap(app, config=Config(semconv="old"), tracer_provider=provider, meter_provider=meter_provider)
    run(wrapped, make_environ(REQUEST, **{"wsgi.url_scheme": "https", **overrides}))
    metrics = collect(reader)
    assert set(metrics) == {OLD_DURATION, ACTIVE}
    assert metrics[OLD_DURATION].unit == "ms"
    (point,) = histogram_points(metrics[OLD_DURATION])
    assert attrs(point) == expected
    (span,) = exporter.get_finished_spans()
    assert point.sum == seconds(span) * 1000
    assert isinstance(point.sum, float)
    assert [a for a, _ in active(reader)] == [{"http.method": "GET", "http.scheme": "https"}]


def test_dup_semconv_records_both_histograms(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    wrapped = wrap(
        hello, config=Config(semconv="dup"), tracer_provider=provider, meter_provider=meter_provider
    )
    run(wrapped, make_environ(REQUEST, **{"wsgi.url_scheme": "https"}))
    metrics = collect(reader)
    assert set(metrics) == {DURATION, OLD_DURATION, ACTIVE}
    (stable,) = histogram_points(metrics[DURATION])
    (old,) = histogram_points(metrics[OLD_DURATION])
    assert attrs(stable) == {**BASE, "url.scheme": "https", "http.response.status_code": 200}
    assert attrs(old) == OLD_ATTRS
    (span,) = exporter.get_finished_spans()
    assert stable.sum == seconds(span)
    assert old.sum == seconds(span) * 1000
    # As in opentelemetry-instrumentation-wsgi's dup mode, the active set carries both names.
    assert active(reader) == [
        (
            {
                "http.request.method": "GET",
                "url.scheme": "https",
                "http.method": "GET",
                "http.scheme": "https",
            },
            0,
        )
    ]


# --- body sizes -----------------------------------------------------------------------------


def writing(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """An app that sends part of its body through the legacy `write()` callable."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"abc")
    return [b"de", b"fgh"]


@pytest.mark.parametrize(
    ("content_length", "expected"),
    [
        pytest.param("5", 5, id="valid"),
        pytest.param("0", 0, id="zero"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("abc", None, id="junk"),
        pytest.param("-3", None, id="negative"),
        pytest.param(" 5", None, id="padded"),
    ],
)
def test_body_sizes_request_from_content_length_response_from_bytes_sent(
    provider: TracerProvider,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    content_length: str | None,
    expected: int | None,
) -> None:
    wrapped = wrap(
        writing,
        config=Config(body_size_metrics=True),
        tracer_provider=provider,
        meter_provider=meter_provider,
    )
    environ = make_environ(REQUEST, REQUEST_METHOD="POST")
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    body = run(wrapped, environ).body
    assert body == b"abcdefgh"
    metrics = collect(reader)
    duration_attrs = attrs(histogram_points(metrics[DURATION])[0])
    (response,) = histogram_points(metrics[RESPONSE_SIZE])
    assert (response.count, response.sum, attrs(response)) == (1, len(body), duration_attrs)
    assert (metrics[RESPONSE_SIZE].unit, metrics[RESPONSE_SIZE].description) == (
        "By",
        "Size of HTTP server response bodies.",
    )
    if expected is None:
        assert REQUEST_SIZE not in metrics or histogram_points(metrics[REQUEST_SIZE]) == []
    else:
        (request,) = histogram_points(metrics[REQUEST_SIZE])
        assert (request.count, request.sum, attrs(request)) == (1, expected, duration_attrs)
        assert (metrics[REQUEST_SIZE].unit, metrics[REQUEST_SIZE].description) == (
            "By",
            "Size of HTTP server request bodies.",
        )


def test_write_bytes_reach_the_server_unbuffered(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    server = Server()
    seen: list[bytes] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"first")
        seen.append(b"".join(server.written))  # the server has it before the app returns
        write(b"second")
        return []

    wrapped = wrap(
        app, config=Config(body_size_metrics=True), tracer_provider=provider, meter_provider=meter_provider
    )
    body = wrapped(make_environ(REQUEST), server.start_response)
    assert list(body) == []
    close_body(body)
    assert seen == [b"first"]
    assert only_point(reader, RESPONSE_SIZE).sum == len(b"firstsecond")


def test_file_wrapper_response_size_is_its_content_length(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    payload = b"x" * 1000

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "1000")])
        file_wrapper = environ["wsgi.file_wrapper"]
        assert callable(file_wrapper)
        result: Iterable[bytes] = file_wrapper(io.BytesIO(payload), 256)
        return result

    wrapped = wrap(
        app, config=Config(body_size_metrics=True), tracer_provider=provider, meter_provider=meter_provider
    )
    server = Server()
    body = wrapped(make_environ(REQUEST, **{"wsgi.file_wrapper": FileWrapper}), server.start_response)
    assert isinstance(body, FileWrapper)  # handed back as is, so the server may use sendfile
    assert b"".join(body) == payload
    assert active_total(reader) == 1
    close_body(body)
    assert active_total(reader) == 0
    assert only_point(reader, RESPONSE_SIZE).sum == 1000


def test_body_size_metrics_are_off_by_default(
    provider: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    wrapped = wrap(writing, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    body = run(wrapped, make_environ(REQUEST, REQUEST_METHOD="POST", CONTENT_LENGTH="5")).body
    assert body == b"abcdefgh"
    assert set(collect(reader)) == {DURATION, ACTIVE}


# --- exemplars ------------------------------------------------------------------------------


def test_duration_exemplar_links_to_the_sampled_span(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    wrapped = wrap(hello, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    run(wrapped, make_environ(REQUEST))
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.SERVER and span.context is not None
    point = only_point(reader, DURATION)
    assert len(point.exemplars) == 1
    exemplar = point.exemplars[0]
    assert (exemplar.trace_id, exemplar.span_id) == (span.context.trace_id, span.context.span_id)
    assert exemplar.value == seconds(span)


# --- no-op provider -------------------------------------------------------------------------


class CountingNoOpMeterProvider(NoOpMeterProvider):
    """An explicit no-op meter provider that counts the meters asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.meters = 0

    @override
    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> Meter:
        self.meters += 1
        return super().get_meter(name, version, schema_url, attributes)


def test_noop_meter_provider_means_no_metric_work(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    writes: list[Callable[[bytes], object]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        writes.append(start_response("200 OK", [("Content-Type", "text/plain")]))
        return writing(environ, start_response)

    config = Config(body_size_metrics=True)
    noop = CountingNoOpMeterProvider()
    wrapped = wrap(app, config=config, tracer_provider=provider, meter_provider=noop)
    server = Server()
    response = run(wrapped, make_environ(REQUEST), server)
    assert (response.status, response.body) == ("200 OK", b"abcdefgh")
    assert len(exporter.get_finished_spans()) == 1
    assert noop.meters == 0  # no meter asked for, at wrap time or per request
    assert writes == [server.write]  # the server's own `write`: no bytes counted
    # Control: on a real meter provider the same app is measured and its `write` is counted.
    measured = wrap(app, config=config, tracer_provider=provider, meter_provider=meter_provider)
    counted = Server()
    run(measured, make_environ(REQUEST), counted)
    assert writes[-1] != counted.write
    assert only_point(reader, RESPONSE_SIZE).sum == len(b"abcdefgh")


# --- private internals: the bound on cached attribute sets ------------------------------------
#
# No public observation shows how many attribute sets a wrap() keeps, so these tests read private
# names of otel_wsgi: `otel_wsgi.metrics._CACHE_LIMIT`, the per-request state the middleware stores
# under `environ["otel_wsgi.request"]` (`otel_wsgi.effects.TracedRequest`), and its fields
# `.metrics` (a `Metrics`), `.series` (a `_Series`) with `.sets`, and `Metrics.series` / `.cached`.
# Each also proves, publicly, that the sets past the bound are still exact.


def test_attribute_cache_is_capped_and_sets_stay_correct_past_the_cap(provider: TracerProvider) -> None:
    extra = 40
    reader = InMemoryMetricReader(cardinality_limits={HistogramInstrument: _CACHE_LIMIT + extra + 10})
    meter_provider = MeterProvider(metric_readers=[reader])

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        assert isinstance(path, str)
        set_route(environ, "/items/{n}" + path)
        start_response("200 OK", [])
        return [b""]

    try:
        wrapped = wrap(app, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
        routes = [f"/{n}" for n in range(_CACHE_LIMIT + extra)]
        environ = make_environ(REQUEST)
        for path in [*routes, *routes[:3], *routes[-3:]]:
            environ = make_environ(REQUEST, PATH_INFO=path)
            run(wrapped, environ)
        points = histogram_points(collect(reader)[DURATION])
    finally:
        meter_provider.shutdown()

    state = environ[STATE_KEY]
    assert isinstance(state, TracedRequest) and state.metrics is not None
    assert state.shell.finishes is not None and len(state.shell.finishes) == _CACHE_LIMIT
    by_route = {attrs(point)["http.route"]: point for point in points}
    assert len(points) == len(by_route) == len(routes)
    for n, path in enumerate(routes):
        point = by_route["/items/{n}" + path]
        assert attrs(point) == {**BASE, "http.response.status_code": 200, "http.route": "/items/{n}" + path}
        assert point.count == (2 if n < 3 or n >= len(routes) - 3 else 1)


def test_route_on_the_metric_is_the_span_route_cut_to_the_attribute_limit(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    route = "/very/long/route/{template}/" + "x" * 40

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        set_route(environ, route)
        start_response("200 OK", [])
        return [b"ok"]

    config = Config(max_attribute_length=16)
    wrapped = wrap(app, config=config, tracer_provider=provider, meter_provider=meter_provider)
    run(wrapped, make_environ(REQUEST))
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["http.route"] == route[:16]
    assert attrs(only_point(reader, DURATION))["http.route"] == route[:16]


def test_attribute_cache_budget_is_shared_by_every_series(
    provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    # Methods and protocol versions make separate series; together they may not cache past the budget.
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        set_route(environ, "/r" + str(environ["PATH_INFO"]))
        start_response("200 OK", [])
        return [b""]

    wrapped = wrap(app, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    environ = make_environ(REQUEST)
    half = _CACHE_LIMIT // 2 + 10
    for method, version in (("GET", "HTTP/1.1"), ("POST", "HTTP/1.0"), ("PUT", "HTTP/2")):
        for n in range(half):
            environ = make_environ(REQUEST, REQUEST_METHOD=method, SERVER_PROTOCOL=version, PATH_INFO=f"/{n}")
            run(wrapped, environ)
    state = environ[STATE_KEY]
    assert isinstance(state, TracedRequest) and state.metrics is not None
    finishes = state.shell.finishes
    assert finishes is not None and len(finishes) == _CACHE_LIMIT
    assert {key[0] for key in finishes} == {"GET", "POST"}  # the first two used up the one budget


def test_request_series_past_the_cache_cap_are_still_measured_apart(provider: TracerProvider) -> None:
    # More distinct methods (all captured) than the cache holds: the ones past the cap are built per request.
    methods = [f"M{n}" for n in range(_CACHE_LIMIT + 20)]
    reader = InMemoryMetricReader(cardinality_limits={HistogramInstrument: len(methods) + 10})
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        config = Config(capture_all_methods=True)
        wrapped = wrap(hello, config=config, tracer_provider=provider, meter_provider=meter_provider)
        for method in [*methods, *methods[-3:]]:
            run(wrapped, make_environ(REQUEST, REQUEST_METHOD=method))
        points = histogram_points(collect(reader)[DURATION])
    finally:
        meter_provider.shutdown()
    by_method = {attrs(point)["http.request.method"]: point for point in points}
    assert set(by_method) == set(methods)
    for n, method in enumerate(methods):
        point = by_method[method]
        assert attrs(point) == {**BASE, "http.request.method": method, "http.response.status_code": 200}
        assert point.count == (2 if n >= len(methods) - 3 else 1)
