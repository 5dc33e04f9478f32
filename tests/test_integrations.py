"""The framework integrations: each framework's real app, instrumented with its one-liner.

Apps (tests/framework_apps.py) are driven in-process through `wsgiref.validate`, which checks both sides
of the WSGI contract and that the body is closed, against a real SDK tracer and meter provider; Flask and
Django are also served by a real wsgiref server on 127.0.0.1.
"""

from __future__ import annotations

import ast
import http.client
import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, get_type_hints
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import WSGIApplication, WSGIEnvironment
from wsgiref.util import FileWrapper, setup_testing_defaults
from wsgiref.validate import validator

import bottle  # type: ignore[import-untyped]
import falcon
import pytest
from framework_apps import BLOB, BUILDERS, CHUNKS, FalconBoom, Providers, configure_django
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pyramid.config import Configurator  # type: ignore[import-untyped]
from pyramid.response import Response as PyramidResponse  # type: ignore[import-untyped]
from typing_extensions import override

from otel_wsgi import wrap
from otel_wsgi.integrations import bottle as otel_bottle
from otel_wsgi.integrations import falcon as otel_falcon
from otel_wsgi.integrations import pyramid as otel_pyramid
from otel_wsgi.integrations._options import WrapOptions
from otel_wsgi.integrations.django import http_route

FRAMEWORKS: Final = sorted(BUILDERS)
#: How long a wait for a server or a span may take before the test fails (never asserted on).
DEADLINE: Final = 60.0


@pytest.fixture(scope="module", autouse=True)
def _django_settings() -> None:
    configure_django()


@pytest.fixture
def providers(provider: TracerProvider, meter_provider: MeterProvider) -> Providers:
    return Providers(provider, meter_provider)


# --- driving ---


@dataclass
class Result:
    """What the client got (the last status, the body) or the exception the app let through."""

    status: int | None = None
    body: bytes = b""
    error: BaseException | None = None


def _environ(path_info: str, script_name: str = "", file_wrapper: bool = False) -> WSGIEnvironment:
    environ: WSGIEnvironment = {"PATH_INFO": path_info, "SCRIPT_NAME": script_name, "QUERY_STRING": ""}
    setup_testing_defaults(environ)
    if file_wrapper:
        environ["wsgi.file_wrapper"] = FileWrapper
    return environ


def _close(body: Iterable[bytes]) -> None:
    close: Callable[[], object] = getattr(body, "close")  # noqa: B009  (the validator's iterator has one)
    close()


def call(app: WSGIApplication, environ: WSGIEnvironment) -> Result:
    """Call the app as a server would, through `wsgiref.validate`; iterate and close the body."""
    result = Result()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        result.status = int(status[:3])
        return lambda data: None

    try:
        body = validator(app)(environ, start_response)
    except Exception as exc:
        result.error = exc
        return result
    try:
        result.body = b"".join(body)
    finally:
        _close(body)
    return result


def duration_points(reader: InMemoryMetricReader) -> list[HistogramDataPoint]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "http.server.request.duration"
        for point in metric.data.data_points
        if isinstance(point, HistogramDataPoint)
    ]


def check_span(span: ReadableSpan, url_path: str, status: int | None, route: str | None) -> None:
    assert span.name == (f"GET {route}" if route else "GET")
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes.get("http.route") == route
    assert span.attributes["url.path"] == url_path
    assert span.attributes.get("http.response.status_code") == status


def check_error(span: ReadableSpan, error_type: str | None) -> None:
    """No error, or exactly one `exception` event of that type, ERROR status and `error.type`."""
    assert span.attributes is not None
    if error_type is None:
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in span.attributes
        assert span.events == ()
        return
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == error_type
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith(error_type)


# --- routes, statuses and errors, in-process ---

#: (path, status, body, route per framework, error.type); a route of None: no route.
ROUTES: Final[dict[str, dict[str, str]]] = {
    "/hello/world": {
        "flask": "/hello/<name>",
        "django": "/hello/<str:name>",
        "falcon": "/hello/{name}",
        "bottle": "/hello/<name>",
        "pyramid": "/hello/{name}",
    },
    "/boom": {name: "/boom" for name in FRAMEWORKS},
}

CASES: Final = [
    *(pytest.param(name, "/hello/world", 200, b"hello world", None, id=f"{name}-200") for name in FRAMEWORKS),
    *(pytest.param(name, "/nope", 404, None, None, id=f"{name}-404") for name in FRAMEWORKS),
    *(pytest.param(name, "/boom", 500, None, "RuntimeError", id=f"{name}-500") for name in FRAMEWORKS),
]


@pytest.mark.parametrize(("framework", "path_info", "status", "body", "error_type"), CASES)
def test_route_status_error_and_metric(
    providers: Providers,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    framework: str,
    path_info: str,
    status: int,
    body: bytes | None,
    error_type: str | None,
) -> None:
    route = ROUTES.get(path_info, {}).get(framework)
    got = call(BUILDERS[framework](providers, False), _environ(path_info))

    assert (got.status, got.error) == (status, None)
    if body is not None:
        assert got.body == body
    (span,) = exporter.get_finished_spans()
    check_span(span, path_info, status, route)
    check_error(span, error_type)
    (point,) = duration_points(reader)
    assert point.attributes is not None
    assert point.attributes.get("http.route") == route
    assert point.attributes["http.response.status_code"] == status
    assert point.attributes.get("error.type") == error_type


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_exception_the_framework_lets_through_is_recorded_once(
    providers: Providers, exporter: InMemorySpanExporter, framework: str
) -> None:
    """The framework reports the exception and lets it reach the middleware: one exception event."""
    got = call(BUILDERS[framework](providers, True), _environ("/raise"))

    assert got.status is None and isinstance(got.error, Exception)
    (span,) = exporter.get_finished_spans()
    check_span(span, "/raise", None, "/raise")
    check_error(span, type(got.error).__qualname__)


@pytest.mark.parametrize("framework", ["flask", "falcon", "pyramid"])
def test_exception_an_error_handler_answers_with_a_4xx_is_not_an_error(
    providers: Providers, exporter: InMemorySpanExporter, framework: str
) -> None:
    got = call(BUILDERS[framework](providers, False), _environ("/invalid"))

    assert (got.status, got.error) == (400, None)
    (span,) = exporter.get_finished_spans()
    check_span(span, "/invalid", 400, "/invalid")
    check_error(span, None)


def test_django_regex_route_is_reported_without_anchors(
    providers: Providers, exporter: InMemorySpanExporter
) -> None:
    got = call(BUILDERS["django"](providers, False), _environ("/articles/2026/"))

    assert (got.status, got.body) == (200, b"articles of 2026")
    (span,) = exporter.get_finished_spans()
    check_span(span, "/articles/2026/", 200, "/articles/(?P<year>[0-9]{4})/")


HTTP_ROUTE_CASES: Final = [
    pytest.param("users/<int:id>", "/users/<int:id>", id="path"),
    pytest.param("", "/", id="root"),
    pytest.param("^articles/(?P<year>[0-9]{4})/$", "/articles/(?P<year>[0-9]{4})/", id="re_path"),
    pytest.param(r"^files/(?P<name>.+)\Z", "/files/(?P<name>.+)", id="re_path-Z"),
    pytest.param("api/^items/$", "/api/^items/", id="inner-caret-kept"),
    pytest.param(r"^price/\$$", r"/price/\$", id="escaped-dollar-kept"),
    pytest.param(r"^price/\$", r"/price/\$", id="only-escaped-dollar"),
    pytest.param("/already", "/already", id="leading-slash"),
]


@pytest.mark.parametrize(("route", "expected"), HTTP_ROUTE_CASES)
def test_django_http_route(route: str, expected: str) -> None:
    assert http_route(route) == expected


# --- a mounted app: the route as the framework sees it, the full url.path ---


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_mounted_under_a_script_name(
    providers: Providers, exporter: InMemorySpanExporter, framework: str
) -> None:
    got = call(BUILDERS[framework](providers, False), _environ("/hello/world", script_name="/api"))

    assert (got.status, got.body) == (200, b"hello world")
    (span,) = exporter.get_finished_spans()
    check_span(span, "/api/hello/world", 200, ROUTES["/hello/world"][framework])


def test_bottle_child_mounted_by_its_parent_reports_the_rule_with_the_prefix(
    providers: Providers, exporter: InMemorySpanExporter
) -> None:
    parent, child = bottle.Bottle(), bottle.Bottle()
    child.route("/hello/<name>", "GET", lambda name: f"hello {name}")
    parent.mount("/child/", child)  # Bottle merges the child's routes into the parent's router
    app = otel_bottle.instrument_app(parent, tracer_provider=providers.tracer)

    got = call(app, _environ("/child/hello/world"))

    assert (got.status, got.body) == (200, b"hello world")
    (span,) = exporter.get_finished_spans()
    check_span(span, "/child/hello/world", 200, "/child/hello/<name>")


def test_pyramid_traversal_without_a_route_reports_none(
    providers: Providers, exporter: InMemorySpanExporter
) -> None:
    with Configurator() as config:  # the default root; `/edit` finds the view named "edit" by traversal
        config.add_view(lambda request: PyramidResponse("edited"), name="edit")
        app = otel_pyramid.instrument_app(config.make_wsgi_app(), tracer_provider=providers.tracer)

    got = call(app, _environ("/edit"))

    assert (got.status, got.body) == (200, b"edited")
    (span,) = exporter.get_finished_spans()
    check_span(span, "/edit", 200, None)


def test_falcon_app_with_its_own_error_reporter_calls_ours(
    providers: Providers, exporter: InMemorySpanExporter
) -> None:
    reported: list[tuple[str, bool]] = []

    def my_reporter(req: falcon.Request, error: Exception, params: dict[str, Any], handled: bool) -> None:
        reported.append((type(error).__name__, handled))
        otel_falcon.report_error(req, error, params, handled)

    app = falcon.App()
    app.add_route("/boom", FalconBoom())
    application = otel_falcon.instrument_app(app, tracer_provider=providers.tracer)
    app.set_error_reporter(my_reporter)  # replaces ours

    got = call(application, _environ("/boom"))

    assert (got.status, reported) == (500, [("RuntimeError", True)])
    (span,) = exporter.get_finished_spans()
    check_span(span, "/boom", 500, "/boom")
    check_error(span, "RuntimeError")


# --- streaming: the span ends after the last byte, with the route ---


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_streamed_body_ends_the_span_after_the_last_byte(
    providers: Providers, exporter: InMemorySpanExporter, framework: str
) -> None:
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    body = validator(BUILDERS[framework](providers, False))(_environ("/stream"), start_response)
    iterator = iter(body)
    chunks = [next(iterator)]
    assert exporter.get_finished_spans() == ()
    chunks.extend(iterator)
    assert exporter.get_finished_spans() == ()  # the last byte is out; the server has not closed yet
    _close(body)

    assert (statuses, b"".join(chunks)) == (["200 OK"], b"".join(CHUNKS))
    (span,) = exporter.get_finished_spans()
    check_span(span, "/stream", 200, "/stream")
    check_error(span, None)


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_file_response_goes_through_the_servers_file_wrapper(
    providers: Providers, exporter: InMemorySpanExporter, framework: str
) -> None:
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    body = BUILDERS[framework](providers, False)(_environ("/file", file_wrapper=True), start_response)
    assert isinstance(body, FileWrapper)  # the server's own object, so its sendfile path still applies
    data = b"".join(body)
    assert exporter.get_finished_spans() == ()
    body.close()

    assert (statuses, data) == (["200 OK"], BLOB)
    (span,) = exporter.get_finished_spans()
    check_span(span, "/file", 200, "/file")


# --- packaging: no framework is imported unless its integration is ---

FRAMEWORK_MODULES: Final = ("flask", "django", "falcon", "bottle", "pyramid", "werkzeug", "webob")


def _loaded_frameworks(imports: str) -> list[str]:
    """Import `imports` in a fresh interpreter; return the framework packages that got loaded."""
    script = (
        f"import sys, {imports}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({FRAMEWORK_MODULES!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = ast.literal_eval(done.stdout.strip())
    return loaded


def test_the_core_imports_no_framework() -> None:
    modules = "otel_wsgi, otel_wsgi.pure, otel_wsgi.effects, otel_wsgi.integrations"
    assert _loaded_frameworks(modules) == []


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_integration_imports_its_own_framework_only(framework: str) -> None:
    loaded = _loaded_frameworks(f"otel_wsgi.integrations.{framework}")
    # Flask brings its Werkzeug; Bottle's integration needs no import at all.
    expected = {"flask": ["flask", "werkzeug"], "bottle": []}
    assert loaded == expected.get(framework, [framework])


# --- the typed keyword arguments ---


def test_wrap_options_are_wraps_keyword_parameters() -> None:
    keyword_only = {
        name
        for name, parameter in inspect.signature(wrap).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    }
    wrap_hints = get_type_hints(wrap)
    assert get_type_hints(WrapOptions) == {name: wrap_hints[name] for name in keyword_only}


@pytest.mark.parametrize("path_info", ["/hello/world", "/boom"])
def test_report_routes_without_the_middleware_changes_nothing(path_info: str) -> None:
    app = bottle.Bottle()
    app.route("/hello/<name>", "GET", lambda name: f"hello {name}")
    app.route("/boom", "GET", _raise)
    expected = call(app, _environ(path_info))
    got = call(otel_bottle.report_routes(app), _environ(path_info))
    assert (got.status, got.body, got.error) == (expected.status, expected.body, None)


def _raise() -> str:
    raise RuntimeError("boom")


# --- under a real server ---


class _QuietHandler(WSGIRequestHandler):
    @override
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base's name)
        pass


@pytest.fixture
def served(request: pytest.FixtureRequest, providers: Providers) -> Iterator[int]:
    """Serve the framework named by the test's parameter with a real wsgiref server; yield the port."""
    framework: str = request.param
    server = make_server("127.0.0.1", 0, BUILDERS[framework](providers, False), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(DEADLINE)
        server.server_close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _spans(exporter: InMemorySpanExporter, count: int) -> tuple[ReadableSpan, ...]:
    # wsgiref closes the body (ending the span) after sending it: wait for the spans, bounded.
    deadline = time.monotonic() + DEADLINE
    while len(exporter.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return exporter.get_finished_spans()


@pytest.mark.parametrize("served", ["flask", "django"], indirect=True)
def test_over_a_real_server(
    served: int, exporter: InMemorySpanExporter, request: pytest.FixtureRequest
) -> None:
    framework = request.node.callspec.params["served"]
    hello = _get(served, "/hello/world")
    boom_status, _ = _get(served, "/boom")
    streamed = _get(served, "/stream")
    file = _get(served, "/file")
    spans = sorted(_spans(exporter, 4), key=lambda span: span.start_time or 0)

    assert (hello, boom_status, streamed, file) == (
        (200, b"hello world"),
        500,
        (200, b"".join(CHUNKS)),
        (200, BLOB),
    )
    assert len(spans) == 4
    check_span(spans[0], "/hello/world", 200, ROUTES["/hello/world"][framework])
    check_error(spans[0], None)
    check_span(spans[1], "/boom", 500, "/boom")
    check_error(spans[1], "RuntimeError")
    check_span(spans[2], "/stream", 200, "/stream")
    check_span(spans[3], "/file", 200, "/file")
    for span in spans:
        assert span.attributes is not None
        assert span.attributes["server.port"] == served
