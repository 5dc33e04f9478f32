"""Flask and Django apps wrapped by the middleware, each reporting its route with `set_route`.

The integration code here is the code the README shows: Flask reports `request.url_rule.rule` from a
`before_request` handler, Django reports `request.resolver_match.route` from a tiny middleware's
`process_view`. Apps are driven in-process through `wsgiref.validate` (which checks both sides of the
WSGI contract, and that the body is closed) and once each through a real wsgiref server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final
from wsgiref.types import WSGIApplication
from wsgiref.validate import validator

import django  # type: ignore[import-untyped]
import pytest
from apps import http_get, make_environ, run, serve_wsgiref, wait_until
from django.conf import settings  # type: ignore[import-untyped]
from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]
from django.http import HttpResponse  # type: ignore[import-untyped]
from django.urls import path  # type: ignore[import-untyped]
from flask import Flask, request
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_wsgi import Config, set_route, wrap

# --- Flask: report the matched rule from a before_request handler ---


def flask_app(tracer_provider: TracerProvider) -> Flask:
    app = Flask(__name__)
    traced = wrap(app.wsgi_app, config=Config(), tracer_provider=tracer_provider)
    app.wsgi_app = traced  # type: ignore[method-assign, assignment]  # Flask's own idiom, as ProxyFix

    @app.before_request
    def report_route() -> None:
        if request.url_rule is not None:  # None when no rule matched (a 404)
            set_route(request.environ, request.url_rule.rule)

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    return app


# --- Django: report the resolved route from a middleware's process_view ---


class RouteMiddleware:
    """Report `request.resolver_match.route` (`hello/<str:name>`) as the span's route."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)

    def process_view(self, request: Any, view_func: object, view_args: object, view_kwargs: object) -> None:
        # resolver_match is set once the URL has been resolved, just before process_view runs;
        # request.META is the WSGI environ itself. Django routes have no leading "/".
        match = request.resolver_match
        if match is not None and match.route:
            set_route(request.META, "/" + match.route)


def django_hello(request: Any, name: str) -> Any:
    return HttpResponse(f"hello {name}", content_type="text/plain")


def django_boom(request: Any) -> Any:
    raise RuntimeError("boom")


#: This module is Django's ROOT_URLCONF.
urlpatterns: Final = [
    path("hello/<str:name>", django_hello),
    path("boom", django_boom),
]


def django_app(tracer_provider: TracerProvider) -> WSGIApplication:
    traced: WSGIApplication = wrap(get_wsgi_application(), config=Config(), tracer_provider=tracer_provider)
    return traced


@pytest.fixture(scope="module", autouse=True)
def _django_settings() -> None:
    """Configure Django once per process (settings.configure refuses a second call)."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,  # a raising view becomes Django's plain 500 page, as in production
            SECRET_KEY="otel-wsgi-tests-only",
            ALLOWED_HOSTS=["127.0.0.1"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=[f"{__name__}.RouteMiddleware"],
            INSTALLED_APPS=[],
            LOGGING_CONFIG=None,  # leave the test's logging alone
        )
        django.setup()
    assert settings.ROOT_URLCONF == __name__


# --- driving ---


def _call(app: WSGIApplication, path_info: str) -> tuple[int, bytes]:
    """Call the app as a server would, through `wsgiref.validate` on both sides; close the body."""
    response = run(validator(app), make_environ(PATH_INFO=path_info))
    return int(response.status[:3]), response.body


FRAMEWORKS: Final[dict[str, Callable[[TracerProvider], WSGIApplication]]] = {
    "flask": flask_app,
    "django": django_app,
}

CASES: Final = [
    pytest.param("flask", "/hello/world", 200, b"hello world", "/hello/<name>", id="flask-200"),
    pytest.param("flask", "/nope", 404, None, None, id="flask-404"),
    pytest.param("flask", "/boom", 500, None, "/boom", id="flask-500"),
    pytest.param("django", "/hello/world", 200, b"hello world", "/hello/<str:name>", id="django-200"),
    pytest.param("django", "/nope", 404, None, None, id="django-404"),
    pytest.param("django", "/boom", 500, None, "/boom", id="django-500"),
]


def _check_span(span: ReadableSpan, path_info: str, status: int, route: str | None) -> None:
    assert span.name == (f"GET {route}" if route else "GET")
    assert span.kind is SpanKind.SERVER
    assert span.attributes is not None
    assert span.attributes.get("http.route") == route
    assert span.attributes["url.path"] == path_info
    assert span.attributes["http.response.status_code"] == status
    if status >= 500:
        # The framework turned the view's exception into a 500: the status is the error, no exception
        # reached the middleware.
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == str(status)
    else:
        assert span.status.status_code is StatusCode.UNSET
        assert "error.type" not in span.attributes
    assert span.events == ()


@pytest.mark.parametrize(("framework", "path_info", "status", "body", "route"), CASES)
def test_framework_route_names_the_span_in_process(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    framework: str,
    path_info: str,
    status: int,
    body: bytes | None,
    route: str | None,
) -> None:
    app = FRAMEWORKS[framework](provider)
    got_status, got_body = _call(app, path_info)

    assert got_status == status
    if body is not None:
        assert got_body == body
    (span,) = exporter.get_finished_spans()
    _check_span(span, path_info, status, route)


@pytest.fixture
def served(request: pytest.FixtureRequest, provider: TracerProvider) -> Iterator[int]:
    """Serve the framework named by the test's parameter with a real wsgiref server; yield the port."""
    framework: str = request.param
    server = serve_wsgiref(FRAMEWORKS[framework](provider))
    try:
        yield server.port
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("served", "route"),
    [
        pytest.param("flask", "/hello/<name>", id="flask"),
        pytest.param("django", "/hello/<str:name>", id="django"),
    ],
    indirect=["served"],
)
def test_framework_route_names_the_span_over_a_real_server(
    served: int, exporter: InMemorySpanExporter, route: str
) -> None:
    status, body = http_get(served, "/hello/world")
    # wsgiref closes the body (ending the span) after sending it: wait for the span, bounded.
    wait_until(lambda: len(exporter.get_finished_spans()) > 0, "the span")

    assert (status, body) == (200, b"hello world")
    (span,) = exporter.get_finished_spans()
    _check_span(span, "/hello/world", 200, route)
    assert span.attributes is not None
    assert span.attributes["server.port"] == served
