"""`otel_wsgi.compat`: the reference instrumentation's documented API, its behaviour, and its bugs fixed.

Expected values come from the reference's documented behaviour (names, keys, modes) and from the
conventions where we differ on purpose; every test drives real SDK providers.
"""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import FileWrapper

import pytest
from apps import (
    ClosingResult,
    Failures,
    Server,
    close_body,
    collect,
    histogram_points,
    list_app,
    make_environ,
    result_app,
    run,
    sum_points,
)
from flask import Flask
from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from typing_extensions import override

from otel_wsgi import set_route
from otel_wsgi.compat import (
    OpenTelemetryMiddleware,
    ResponsePropagationSetter,
    StabilityMode,
    WSGIGetter,
    _semconv_from_env,
    add_response_attributes,
    collect_custom_request_headers_attributes,
    collect_custom_response_headers_attributes,
    collect_request_attributes,
    default_response_propagation_setter,
    get_default_span_name,
    setifnotnone,
    wsgi_getter,
)
from otel_wsgi.integrations.flask import report_routes
from otel_wsgi.types import AttributeValue, SemconvMode

SCOPE_NAME: Final = "opentelemetry.instrumentation.wsgi"
OLD_SCHEMA: Final = "https://opentelemetry.io/schemas/1.11.0"
NEW_SCHEMA: Final = "https://opentelemetry.io/schemas/1.21.0"
VARIABLES: Final = (
    "OTEL_SEMCONV_STABILITY_OPT_IN",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the reference's defaults, whatever the machine's environment holds."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


class ForeignMode(Enum):
    """Stands for the reference's own `_StabilityMode`: another enum with the same values."""

    DEFAULT = "default"
    HTTP = "http"
    HTTP_DUP = "http/dup"
    DATABASE = "database"


#: The app most tests trace: `200 OK`, text/plain, body `ok`.
OK_APP: Final = list_app([b"ok"])


def middleware(
    app: WSGIApplication, provider: TracerProvider, meter_provider: MeterProvider | None = None, **hooks: Any
) -> OpenTelemetryMiddleware:
    return OpenTelemetryMiddleware(app, tracer_provider=provider, meter_provider=meter_provider, **hooks)


def one_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


# --- the documented one-liners, with real Flask and Django apps (a subprocess: global providers) ---


@pytest.fixture(scope="module")
def documented() -> dict[str, Any]:
    script = Path(__file__).with_name("compat_apps.py")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


OLD_REQUEST: Final[dict[str, object]] = {
    "http.method": "GET",
    "http.scheme": "http",
    "http.host": "127.0.0.1",
    "http.server_name": "127.0.0.1",
    "http.flavor": "1.0",
    "net.host.name": "127.0.0.1",
    "net.host.port": 80,
}


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_documented_one_liner_traces_a_request(documented: dict[str, Any], framework: str) -> None:
    call = documented[f"{framework} /hello/world"]
    assert (call["status"], call["body"]) == ("200 OK", "hello world")
    (span,) = call["spans"]
    assert (span["name"], span["kind"], span["status"]) == ("GET /hello/world", "SERVER", "UNSET")
    assert span["scope"] == [SCOPE_NAME, OLD_SCHEMA]
    expected = OLD_REQUEST | {"http.url": "http://127.0.0.1/hello/world", "http.status_code": 200}
    assert span["attributes"] == expected


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_documented_one_liner_marks_a_server_error(documented: dict[str, Any], framework: str) -> None:
    call = documented[f"{framework} /boom"]
    assert call["status"].startswith("500 ")
    (span,) = call["spans"]
    assert (span["name"], span["status"]) == ("GET /boom", "ERROR")
    assert span["attributes"]["http.status_code"] == 500


def test_documented_one_liners_record_the_old_duration_metric(documented: dict[str, Any]) -> None:
    points = documented["duration points"]
    assert {(p["scope"], p["name"]) for p in points} == {(SCOPE_NAME, "http.server.duration")}
    codes = sorted(p["attributes"].get("http.status_code") for p in points)
    assert codes == [200, 500]  # both frameworks share the one meter and its attribute sets


def test_frameworks_recipe_names_spans_after_the_flask_rule(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The README's recipe: `report_routes(app)`, then `app.wsgi_app = OpenTelemetryMiddleware(...)`."""
    app = Flask(__name__)

    @app.get("/users/<int:user>")
    def user(user: int) -> str:
        return str(user)

    @app.get("/boom")
    def boom() -> str:
        raise Failures.AppError("boom")

    report_routes(app)
    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app, tracer_provider=provider)  # type: ignore[method-assign]
    for path_info, status in [("/users/42", "200 OK"), ("/boom", "500 INTERNAL SERVER ERROR"), ("/no", None)]:
        response = run(app, make_environ(PATH_INFO=path_info))
        assert response.status == (status or "404 NOT FOUND")
    matched, failed, unmatched = exporter.get_finished_spans()
    assert (matched.name, attributes(matched)["http.route"]) == ("GET /users/<int:user>", "/users/<int:user>")
    assert attributes(matched)["http.status_code"] == 200
    assert (failed.name, attributes(failed)["http.route"]) == ("GET /boom", "/boom")
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]  # reported by Flask, recorded once
    assert (unmatched.name, "http.route" in attributes(unmatched)) == ("GET /no", False)


# --- the middleware class ---


def test_middleware_attributes(provider: TracerProvider) -> None:
    def request_hook(span: Span, environ: WSGIEnvironment) -> None:
        pass

    traced = OpenTelemetryMiddleware(OK_APP, request_hook, tracer_provider=provider)
    assert traced.wsgi is OK_APP
    assert traced.request_hook is request_hook
    assert traced.response_hook is None
    assert isinstance(traced.tracer, trace.Tracer)
    with traced.tracer.start_as_current_span("probe") as probe:
        assert probe.is_recording()  # the tracer is the provider's, not a no-op
    assert traced.meter is not None
    with pytest.raises(AttributeError):
        traced.wsgi = OK_APP  # type: ignore[misc]  # read-only: a replaced app would not be traced


def test_hooks_get_the_documented_arguments(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    seen: list[tuple[object, ...]] = []

    def request_hook(span: Span, environ: WSGIEnvironment) -> None:
        seen.append(("request", span, environ))
        span.update_name("renamed by hook")

    def response_hook(
        span: Span, environ: WSGIEnvironment, status: str, headers: list[tuple[str, str]]
    ) -> None:
        seen.append(("response", span, environ, status, list(headers)))
        headers.append(("X-Hook", "1"))

    environ = make_environ()
    response = run(
        middleware(OK_APP, provider, request_hook=request_hook, response_hook=response_hook), environ
    )
    span = one_span(exporter)
    assert [entry[0] for entry in seen] == ["request", "response"]
    hook_span = seen[0][1]
    assert isinstance(hook_span, Span)
    assert hook_span.get_span_context() == span.get_span_context()
    assert seen[0][2] is environ and seen[1][2] is environ
    assert seen[1][3:] == ("200 OK", [("Content-Type", "text/plain")])
    assert response.headers == [("Content-Type", "text/plain"), ("X-Hook", "1")]
    assert span.name == "renamed by hook"


SPAN_NAME_CASES = [
    pytest.param({}, "GET /", id="root"),
    pytest.param({"PATH_INFO": "/users/42"}, "GET /users/42", id="raw-path"),
    pytest.param({"PATH_INFO": ""}, "GET", id="empty-path"),
    pytest.param({"REQUEST_METHOD": "NONSTANDARD"}, "HTTP", id="unknown-method"),
    pytest.param({"REQUEST_METHOD": "POST", "PATH_INFO": "/a "}, "POST /a", id="stripped"),
]


@pytest.mark.parametrize(("overrides", "name"), SPAN_NAME_CASES)
def test_span_names_are_the_reference_ones(
    provider: TracerProvider, exporter: InMemorySpanExporter, overrides: dict[str, object], name: str
) -> None:
    environ = make_environ(**overrides)
    assert get_default_span_name(environ) == name
    run(middleware(OK_APP, provider), environ)
    assert one_span(exporter).name == name


def test_default_span_name_upper_cases_and_strips_the_method(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    environ = make_environ(REQUEST_METHOD=" get ", PATH_INFO="/x")
    assert get_default_span_name(environ) == "GET /x"  # the helper: as the reference
    run(middleware(OK_APP, provider), environ)
    span = one_span(exporter)  # the middleware: the method is case-sensitive, as on the span (semconv)
    assert (span.name, attributes(span)["http.method"]) == ("HTTP", "_OTHER")


def test_span_name_without_path_info() -> None:
    environ = make_environ()
    del environ["PATH_INFO"]
    assert get_default_span_name(environ) == "GET"


def test_capture_all_methods_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = make_environ(REQUEST_METHOD="PURGE", PATH_INFO="/x")
    for value, name in [
        ("1", "PURGE /x"),
        ("true", "PURGE /x"),
        ("yes", "PURGE /x"),
        ("false", "HTTP"),
        ("0", "HTTP"),
    ]:
        monkeypatch.setenv("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS", value)
        assert (value, get_default_span_name(environ)) == (value, name)


def test_set_route_gives_a_low_cardinality_name(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        set_route(environ, "/users/{id}")
        return OK_APP(environ, start_response)

    run(middleware(app, provider), make_environ(PATH_INFO="/users/42"))
    span = one_span(exporter)
    assert span.name == "GET /users/{id}"
    assert attributes(span)["http.route"] == "/users/{id}"


# --- semantic-convention modes, scope and schema URL ---

OPT_IN_CASES = [
    pytest.param(None, "old", id="unset"),
    pytest.param("", "old", id="empty"),
    pytest.param("http", "stable", id="http"),
    pytest.param(" http ", "stable", id="stripped"),
    pytest.param("http/dup", "dup", id="dup"),
    pytest.param("http,http/dup", "dup", id="dup-wins"),
    pytest.param("database,http", "stable", id="other-tokens"),
    pytest.param("HTTP", "old", id="case-sensitive"),
    pytest.param("http/du", "old", id="exact-token"),
    pytest.param("default", "old", id="default"),
]


@pytest.mark.parametrize(("value", "mode"), OPT_IN_CASES)
def test_opt_in_parsing(value: str | None, mode: SemconvMode) -> None:
    assert _semconv_from_env(value) == mode


MODE_CASES = [
    pytest.param(None, OLD_SCHEMA, "http.method", "http.server.duration", id="default"),
    pytest.param("http", NEW_SCHEMA, "http.request.method", "http.server.request.duration", id="http"),
    pytest.param("http/dup", NEW_SCHEMA, "http.method", "http.server.request.duration", id="dup"),
]


@pytest.mark.parametrize(("value", "schema", "method_key", "histogram"), MODE_CASES)
def test_mode_scope_and_schema(
    monkeypatch: pytest.MonkeyPatch,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
    value: str | None,
    schema: str,
    method_key: str,
    histogram: str,
) -> None:
    if value is not None:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", value)
    run(middleware(OK_APP, provider, meter_provider))
    span = one_span(exporter)
    scope = span.instrumentation_scope
    assert scope is not None
    assert (scope.name, scope.schema_url) == (SCOPE_NAME, schema)
    assert attributes(span)[method_key] == "GET"
    data = reader.get_metrics_data()
    assert data is not None
    (scope_metrics,) = data.resource_metrics[0].scope_metrics
    assert (scope_metrics.scope.name, scope_metrics.scope.schema_url) == (SCOPE_NAME, schema)
    assert histogram in {metric.name for metric in scope_metrics.metrics}


# --- collect_request_attributes, add_response_attributes ---

REQUEST_ENVIRON: Final = {
    "QUERY_STRING": "a=1",
    "REMOTE_ADDR": "10.0.0.1",
    "REMOTE_PORT": "5000",
    "HTTP_USER_AGENT": "curl/8.5",
}
OLD_ATTRIBUTES: Final[dict[str, AttributeValue]] = {
    "http.method": "GET",
    "http.scheme": "http",
    "http.host": "127.0.0.1",
    "http.server_name": "127.0.0.1",
    "http.flavor": "1.0",
    "http.url": "http://127.0.0.1/?a=1",
    "http.user_agent": "curl/8.5",
    "net.host.name": "127.0.0.1",
    "net.host.port": 80,
    "net.peer.ip": "10.0.0.1",
    "net.peer.port": 5000,
}
NEW_ATTRIBUTES: Final[dict[str, AttributeValue]] = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "url.path": "/",
    "url.query": "a=1",
    "server.address": "127.0.0.1",
    "server.port": 80,
    "client.address": "10.0.0.1",
    "client.port": 5000,
    "network.peer.address": "10.0.0.1",
    "network.peer.port": 5000,
    "network.protocol.version": "1.0",
    "user_agent.original": "curl/8.5",
}
COLLECT_CASES = [
    pytest.param((), OLD_ATTRIBUTES, id="default-argument"),
    pytest.param((StabilityMode.DEFAULT,), OLD_ATTRIBUTES, id="default"),
    pytest.param((StabilityMode.HTTP,), NEW_ATTRIBUTES, id="http"),
    pytest.param((StabilityMode.HTTP_DUP,), OLD_ATTRIBUTES | NEW_ATTRIBUTES, id="dup"),
    pytest.param((ForeignMode.HTTP,), NEW_ATTRIBUTES, id="foreign-enum-http"),
    pytest.param((ForeignMode.HTTP_DUP,), OLD_ATTRIBUTES | NEW_ATTRIBUTES, id="foreign-enum-dup"),
    pytest.param((ForeignMode.DATABASE,), OLD_ATTRIBUTES, id="foreign-enum-other-value"),
]


@pytest.mark.parametrize(("mode", "expected"), COLLECT_CASES)
def test_collect_request_attributes(mode: tuple[Enum, ...], expected: dict[str, AttributeValue]) -> None:
    assert collect_request_attributes(make_environ(**REQUEST_ENVIRON), *mode) == expected


def test_collect_request_attributes_never_raises_on_a_bad_port() -> None:
    got = collect_request_attributes(make_environ(SERVER_PORT="http"), StabilityMode.HTTP_DUP)
    assert "net.host.port" not in got and "server.port" not in got
    assert got["http.method"] == "GET"


RESPONSE_CASES = [
    pytest.param(
        "404 Not Found", StabilityMode.DEFAULT, {"http.status_code": 404}, StatusCode.UNSET, id="404-old"
    ),
    pytest.param(
        "200", ForeignMode.HTTP, {"http.response.status_code": 200}, StatusCode.UNSET, id="no-reason"
    ),
    pytest.param(
        "503 Busy",
        StabilityMode.HTTP,
        {"http.response.status_code": 503, "error.type": "503"},
        StatusCode.ERROR,
        id="503-new",
    ),
    pytest.param(
        "500 Oops",
        StabilityMode.HTTP_DUP,
        {"http.response.status_code": 500, "error.type": "500", "http.status_code": 500},
        StatusCode.ERROR,
        id="500-dup",
    ),
    pytest.param("abc OK", StabilityMode.HTTP, {"error.type": "_OTHER"}, StatusCode.ERROR, id="malformed"),
    pytest.param("", StabilityMode.DEFAULT, {}, StatusCode.ERROR, id="empty"),
]


@pytest.mark.parametrize(("status", "mode", "expected", "code"), RESPONSE_CASES)
def test_add_response_attributes(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    status: str,
    mode: Enum,
    expected: dict[str, AttributeValue],
    code: StatusCode,
) -> None:
    duration: dict[str, Any] = {"http.method": "GET"}
    with provider.get_tracer("test").start_as_current_span("s") as span:
        add_response_attributes(span, status, [], duration, mode)
    finished = one_span(exporter)
    assert attributes(finished) == expected
    assert finished.status.status_code is code
    assert duration == {"http.method": "GET"} | expected


def test_add_response_attributes_on_a_non_recording_span() -> None:
    duration: dict[str, Any] = {}
    add_response_attributes(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT), "404 Not Found", [], duration)
    assert duration == {"http.status_code": 404}
    add_response_attributes(NonRecordingSpan(trace.INVALID_SPAN_CONTEXT), "200 OK", [])  # no dict: no error


# --- the getter, the setter, setifnotnone ---

GET_CASES = [
    pytest.param({"HTTP_TRACEPARENT": "00-x"}, "traceparent", ["00-x"], id="header"),
    pytest.param({"HTTP_TEST_KEY": "val"}, "test-key", ["val"], id="dash"),
    pytest.param({"HTTP_TEST_KEY": "val"}, "Test-Key", ["val"], id="any-case"),
    pytest.param({}, "test", None, id="absent"),
    pytest.param({"HTTP_N": 7}, "n", None, id="not-text"),
]


@pytest.mark.parametrize(("carrier", "key", "expected"), GET_CASES)
def test_getter_get(carrier: WSGIEnvironment, key: str, expected: list[str] | None) -> None:
    assert WSGIGetter().get(carrier, key) == expected
    assert wsgi_getter.get(carrier, key) == expected


def test_getter_keys() -> None:
    carrier: WSGIEnvironment = {
        "HTTP_TEST_KEY": "val",
        "HTTP_OTHER_KEY": 42,
        "NON_HTTP_KEY": "v",
        "CONTENT_TYPE": "t",
    }
    assert wsgi_getter.keys(carrier) == ["test-key", "other-key"]
    assert wsgi_getter.keys({}) == []


def test_getter_extracts_the_parent(provider: TracerProvider) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    extracted = TraceContextTextMapPropagator().extract({"HTTP_TRACEPARENT": parent}, getter=wsgi_getter)
    remote = trace.get_current_span(extracted).get_span_context()
    assert (remote.trace_id, remote.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)


def test_response_propagation_setter_appends_headers(provider: TracerProvider) -> None:
    headers: list[tuple[str, str]] = [("Content-Type", "text/plain")]
    with provider.get_tracer("test").start_as_current_span("s") as span:
        TraceContextTextMapPropagator().inject(headers, setter=default_response_propagation_setter)
    ctx = span.get_span_context()
    assert headers == [
        ("Content-Type", "text/plain"),
        ("traceparent", f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"),
    ]
    ResponsePropagationSetter().set(headers, "k", "v")
    assert headers[-1] == ("k", "v")


def test_setifnotnone() -> None:
    found: dict[str, object] = {"kept": 1}
    setifnotnone(found, "a", "x")
    setifnotnone(found, "b", None)
    setifnotnone(found, "c", 0)
    setifnotnone(found, "kept", None)
    assert found == {"kept": 1, "a": "x", "c": 0}


# --- header capture from the reference's environment variables ---

CAPTURE_ENV: Final = {
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "X-Request-Id, X-Tag-.*, .*secret.*",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE": "content-type,x-out",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS": ".*secret.*",
}
CAPTURED_REQUEST: Final = {
    "HTTP_X_REQUEST_ID": "r-1",
    "HTTP_X_TAG_A": "a",
    "HTTP_MY_SECRET": "s",
    "HTTP_X_NO": "n",
}


def header_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Out", "1"), ("X-Out", "2"), ("X-No", "n")])
    return [b"ok"]


@pytest.mark.parametrize(
    ("mode", "separator"), [pytest.param(None, "_", id="default"), pytest.param("http", "-", id="http")]
)
def test_header_capture_from_environment(
    monkeypatch: pytest.MonkeyPatch,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    mode: str | None,
    separator: str,
) -> None:
    for name, value in CAPTURE_ENV.items():
        monkeypatch.setenv(name, value)
    if mode is not None:
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", mode)
    run(middleware(header_app, provider), make_environ(**CAPTURED_REQUEST))
    got = {key: value for key, value in attributes(one_span(exporter)).items() if ".header." in key}
    out = ("1,2",) if separator == "_" else ("1", "2")  # old names join repeated headers, as the reference
    assert got == {
        f"http.request.header.x{separator}request{separator}id": ("r-1",),
        f"http.request.header.x{separator}tag{separator}a": ("a",),
        f"http.request.header.my{separator}secret": ("[REDACTED]",),
        f"http.response.header.content{separator}type": ("text/plain",),
        f"http.response.header.x{separator}out": out,
    }


def test_header_helpers_read_the_variables_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = make_environ(**CAPTURED_REQUEST)
    headers = [("Content-Type", "text/plain"), ("X-Out", "1")]
    assert collect_custom_request_headers_attributes(environ) == {}
    assert collect_custom_response_headers_attributes(headers) == {}
    for name, value in CAPTURE_ENV.items():
        monkeypatch.setenv(name, value)
    assert collect_custom_request_headers_attributes(environ) == {
        "http.request.header.x_request_id": ["r-1"],
        "http.request.header.x_tag_a": ["a"],
        "http.request.header.my_secret": ["[REDACTED]"],
    }
    assert collect_custom_response_headers_attributes(headers) == {
        "http.response.header.content_type": ["text/plain"],
        "http.response.header.x_out": ["1"],
    }


def test_invalid_capture_pattern(monkeypatch: pytest.MonkeyPatch, provider: TracerProvider) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-(")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "x-a")
    with pytest.raises(
        ValueError, match="capture_request_headers.*OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS"
    ):
        middleware(OK_APP, provider)
    # Per request, the helpers stay silent instead of failing the framework's request.
    assert collect_custom_request_headers_attributes(make_environ(HTTP_X_A="1")) == {}
    assert collect_custom_response_headers_attributes([("X-A", "1")]) == {}  # valid alone, not captured


def test_no_headers_captured_in_a_nested_span(
    monkeypatch: pytest.MonkeyPatch, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    for name, value in CAPTURE_ENV.items():
        monkeypatch.setenv(name, value)
    with provider.get_tracer("framework").start_as_current_span("outer", kind=SpanKind.SERVER):
        run(middleware(header_app, provider), make_environ(**CAPTURED_REQUEST))
    inner = exporter.get_finished_spans()[0]
    assert inner.kind is SpanKind.INTERNAL
    assert not [key for key in attributes(inner) if ".header." in key]


# --- the reference's bugs, fixed under its names ---


def test_close_without_iterating_ends_the_span_and_closes_the_app(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    body = ClosingResult([b"a", b"b"])
    result = middleware(result_app(body), provider)(make_environ(), Server().start_response)
    assert exporter.get_finished_spans() == ()
    close_body(result)
    close_body(result)
    assert body.close_calls == 1
    assert len(exporter.get_finished_spans()) == 1


def test_exhausted_body_ends_the_span_and_closes_once(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    body = ClosingResult([b"a", b"b"])
    result = middleware(result_app(body), provider)(make_environ(), Server().start_response)
    assert list(result) == [b"a", b"b"]
    assert (body.close_calls, len(exporter.get_finished_spans())) == (1, 1)  # as the reference, no close()
    close_body(result)  # the server's close, afterwards
    assert (body.close_calls, len(exporter.get_finished_spans())) == (1, 1)


def test_no_context_stays_attached(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    traced = middleware(OK_APP, provider)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    before = context.get_current()
    result = traced(make_environ(HTTP_TRACEPARENT=parent), Server().start_response)
    assert context.get_current() == before  # not even before the body is iterated
    close_body(result)  # closed without iterating
    run(traced)  # the next request on this thread: a root SERVER span, not a child of the last parent
    first, second = exporter.get_finished_spans()
    assert first.parent is not None and first.parent.span_id == 0xB7AD6B7169203331
    assert (second.kind, second.parent) == (SpanKind.SERVER, None)


def test_status_line_without_reason_phrase(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200", [])
        return [b"ok"]

    response = run(middleware(app, provider))
    assert (response.status, response.body) == ("200", b"ok")
    assert attributes(one_span(exporter))["http.status_code"] == 200


def test_bad_port_never_breaks_the_app(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    response = run(middleware(OK_APP, provider), make_environ(SERVER_PORT="http"))
    assert (response.status, response.body) == ("200 OK", b"ok")
    assert "net.host.port" not in attributes(one_span(exporter))


def test_raising_hooks_never_break_the_app(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    def request_hook(span: Span, environ: WSGIEnvironment) -> None:
        raise RuntimeError("request hook")

    def response_hook(
        span: Span, environ: WSGIEnvironment, status: str, headers: list[tuple[str, str]]
    ) -> None:
        raise RuntimeError("response hook")

    traced = middleware(OK_APP, provider, request_hook=request_hook, response_hook=response_hook)
    response = run(traced)
    assert (response.status, response.body) == ("200 OK", b"ok")
    span = one_span(exporter)
    assert attributes(span)["http.status_code"] == 200
    assert span.status.status_code is StatusCode.UNSET
    assert "request_hook failed" in caplog.text


def test_metrics_cover_the_streamed_body(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    sent: list[int] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])  # a generator app: runs only when the server iterates
        yield b"a"
        time.sleep(0.01)  # work the reference's duration missed; ours must include it
        sent.append(time.time_ns())
        yield b"b"

    result = middleware(app, provider, meter_provider)(make_environ(), Server().start_response)
    assert active_requests(reader) == 1
    assert b"".join(result) == b"ab"
    close_body(result)
    assert active_requests(reader) == 0
    span = one_span(exporter)
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time >= sent[0]  # the span covers the body
    (point,) = histogram_points(collect(reader)["http.server.duration"])
    assert point.count == 1
    assert point.sum == pytest.approx((span.end_time - span.start_time) / 1e6)  # the same instants
    assert dict(point.attributes or {})["http.status_code"] == 200  # the status a generator app sent late


def test_file_wrapper_is_kept(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    closed: list[bool] = []

    class Blob(io.BytesIO):
        @override
        def close(self) -> None:
            closed.append(True)
            super().close()

    sent: list[object] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        wrapper: FileWrapper = environ["wsgi.file_wrapper"](Blob(b"data"))
        sent.append(wrapper)
        return wrapper

    result = middleware(app, provider)(
        make_environ(**{"wsgi.file_wrapper": FileWrapper}), Server().start_response
    )
    assert result is sent[0]  # the server's own object: its sendfile path stays on
    assert exporter.get_finished_spans() == ()
    close_body(result)
    assert closed == [True]
    assert len(exporter.get_finished_spans()) == 1


def test_length_of_a_list_body_is_kept(provider: TracerProvider) -> None:
    result = middleware(OK_APP, provider)(make_environ(), Server().start_response)
    assert len(result) == 1  # type: ignore[arg-type]  # servers derive Content-Length from it
    close_body(result)


def test_app_exception_passes_through(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    error = ValueError("bad")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise error

    with pytest.raises(ValueError) as raised:
        middleware(app, provider)(make_environ(), Server().start_response)
    assert raised.value is error
    span = one_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def active_requests(reader: InMemoryMetricReader) -> float:
    metric = collect(reader).get("http.server.active_requests")
    return 0 if metric is None else sum(float(point.value) for point in sum_points(metric))


# --- dependencies ---


def test_compat_needs_no_reference_package() -> None:
    source = Path(__file__).resolve().parent.parent / "otel_wsgi" / "compat.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
    assert imported, "the check must see the imports"
    forbidden = ("opentelemetry.instrumentation", "opentelemetry.util.http")
    assert not [name for name in imported if name.startswith(forbidden)]
