"""Flask and Django apps traced with `otel_wsgi.compat`'s documented one-liners, for tests/test_compat.py.

The one-liners use the global tracer and meter providers, as their documentation does, and Django's
settings are process-wide: tests/test_compat.py runs this module in a subprocess so neither reaches the
test process. It drives a few requests through `wsgiref.validate` and prints one JSON object: per
framework and request, the status, the body and the finished spans; then the duration histogram points.
Run: `python tests/compat_apps.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final
from wsgiref.types import WSGIApplication, WSGIEnvironment
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_wsgi.compat import OpenTelemetryMiddleware

PATHS: Final = ("/hello/world", "/boom")


# --- Flask, as documented: app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app) ---


def flask_application() -> WSGIApplication:
    from flask import Flask

    app = Flask(__name__)

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


# --- Django, as documented: application = OpenTelemetryMiddleware(get_wsgi_application()) ---


def django_hello(request: Any, name: str) -> Any:
    from django.http import HttpResponse  # type: ignore[import-untyped]

    return HttpResponse(f"hello {name}", content_type="text/plain")


def django_boom(request: Any) -> Any:
    raise RuntimeError("boom")


def django_application() -> WSGIApplication:
    import django  # type: ignore[import-untyped]
    from django.conf import settings  # type: ignore[import-untyped]
    from django.urls import path  # type: ignore[import-untyped]

    globals()["urlpatterns"] = [path("hello/<str:name>", django_hello), path("boom", django_boom)]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="otel-wsgi-tests-only",
        ALLOWED_HOSTS=["127.0.0.1"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]

    application = OpenTelemetryMiddleware(get_wsgi_application())
    return application


# --- driving ---


def call(app: WSGIApplication, path_info: str) -> tuple[str, str]:
    """Call the app as a server would, through `wsgiref.validate` on both sides; close the body."""
    environ: WSGIEnvironment = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"], environ["QUERY_STRING"] = path_info, ""
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    result = validator(app)(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close: Callable[[], object] = getattr(result, "close")  # noqa: B009  (the validator's iterator)
        close()
    return statuses[-1], body.decode("latin-1")


def span_record(span: ReadableSpan) -> dict[str, object]:
    scope = span.instrumentation_scope
    return {
        "name": span.name,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "scope": [scope.name, scope.schema_url] if scope is not None else None,
    }


def main() -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    report: dict[str, object] = {}
    for framework, build in (("flask", flask_application), ("django", django_application)):
        app = build()
        for path_info in PATHS:
            status, body = call(app, path_info)
            spans = [span_record(span) for span in exporter.get_finished_spans()]
            exporter.clear()
            report[f"{framework} {path_info}"] = {"status": status, "body": body, "spans": spans}
    data = reader.get_metrics_data()
    points: list[dict[str, object]] = []
    for resource in data.resource_metrics if data is not None else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        attributes = dict(point.attributes or {})
                        points.append(
                            {"scope": scope.scope.name, "name": metric.name, "attributes": attributes}
                        )
    report["duration points"] = points
    print(json.dumps(report))


if __name__ == "__main__":
    main()
