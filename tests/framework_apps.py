"""One small app per framework, instrumented with its one-liner, all with the same pages.

Every app answers `/hello/<name>` (`hello <name>`), `/boom` (a RuntimeError the framework turns into a
500), `/raise` (a RuntimeError the framework lets through to the server), `/invalid` (a ValueError the
app's own error handler turns into a 400, where the framework has such handlers) and `/stream` (a
streamed body); Flask and Django also answer `/file` through `wsgi.file_wrapper`. Django's URLconf is
this module.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final
from wsgiref.types import WSGIApplication

import bottle  # type: ignore[import-untyped]
import django  # type: ignore[import-untyped]
import falcon
import flask
from django.conf import settings  # type: ignore[import-untyped]
from django.core.wsgi import get_wsgi_application  # type: ignore[import-untyped]
from django.http import (  # type: ignore[import-untyped]
    FileResponse,
    HttpResponse,
    StreamingHttpResponse,
)
from django.urls import path, re_path  # type: ignore[import-untyped]
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from pyramid.config import Configurator  # type: ignore[import-untyped]
from pyramid.response import Response as PyramidResponse  # type: ignore[import-untyped]

from otel_wsgi import Config, wrap
from otel_wsgi.integrations import bottle as otel_bottle
from otel_wsgi.integrations import falcon as otel_falcon
from otel_wsgi.integrations import flask as otel_flask
from otel_wsgi.integrations import pyramid as otel_pyramid

CHUNKS: Final = (b"alpha ", b"beta ", b"gamma")
BLOB: Final = bytes(range(256)) * 64


@dataclass(frozen=True)
class Providers:
    tracer: TracerProvider
    meter: MeterProvider


def _streamed() -> Iterator[bytes]:
    yield from CHUNKS


# --- Flask ---


def flask_app(providers: Providers, propagate: bool = False) -> WSGIApplication:
    app = flask.Flask("otel_wsgi_tests")
    app.config["PROPAGATE_EXCEPTIONS"] = propagate

    @app.get("/hello/<name>")
    def hello(name: str) -> str:
        return f"hello {name}"

    @app.get("/boom")
    @app.get("/raise")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.get("/invalid")
    def invalid() -> str:
        raise ValueError("invalid")

    @app.errorhandler(ValueError)
    def bad_request(error: ValueError) -> tuple[str, int]:
        return "bad request", 400

    @app.get("/stream")
    def stream() -> flask.Response:
        return flask.Response(flask.stream_with_context(_streamed()), mimetype="text/plain")

    @app.get("/file")
    def file() -> flask.Response:
        return flask.send_file(io.BytesIO(BLOB), mimetype="application/octet-stream")

    traced: WSGIApplication = otel_flask.instrument_app(
        app, config=Config(), tracer_provider=providers.tracer, meter_provider=providers.meter
    )
    return traced


# --- Django (this module is the URLconf) ---


def _django_hello(request: Any, name: str) -> Any:
    return HttpResponse(f"hello {name}", content_type="text/plain")


def _django_boom(request: Any) -> Any:
    raise RuntimeError("boom")


def _django_stream(request: Any) -> Any:
    return StreamingHttpResponse(_streamed(), content_type="text/plain")


def _django_file(request: Any) -> Any:
    return FileResponse(io.BytesIO(BLOB), content_type="application/octet-stream")


def _django_article(request: Any, year: str) -> Any:
    return HttpResponse(f"articles of {year}", content_type="text/plain")


#: Django's ROOT_URLCONF.
urlpatterns: Final = [
    path("hello/<str:name>", _django_hello),
    path("boom", _django_boom),
    path("raise", _django_boom),
    path("stream", _django_stream),
    path("file", _django_file),
    re_path(r"^articles/(?P<year>[0-9]{4})/$", _django_article),
]


def configure_django() -> None:
    """Configure Django once per process (settings.configure refuses a second call)."""
    if not settings.configured:
        settings.configure(
            DEBUG=False,  # a raising view becomes Django's plain 500 page, as in production
            SECRET_KEY="otel-wsgi-tests-only",
            ALLOWED_HOSTS=["127.0.0.1", "localhost"],
            ROOT_URLCONF=__name__,
            MIDDLEWARE=["otel_wsgi.integrations.django.RouteMiddleware"],
            INSTALLED_APPS=[],
            LOGGING_CONFIG=None,  # leave the test's logging alone
        )
        django.setup()
    assert settings.ROOT_URLCONF == __name__


def django_app(providers: Providers, propagate: bool = False) -> WSGIApplication:
    configure_django()
    settings.DEBUG_PROPAGATE_EXCEPTIONS = propagate  # read per request by Django
    traced: WSGIApplication = wrap(
        get_wsgi_application(),
        config=Config(),
        tracer_provider=providers.tracer,
        meter_provider=providers.meter,
    )
    return traced


# --- Falcon ---


class _FalconHello:
    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = f"hello {name}"


class FalconBoom:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("boom")


class _Reraised(RuntimeError):
    """Raised by `/raise`: its error handler re-raises it, so it leaves the Falcon app."""


class _FalconRaise:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise _Reraised("boom")


class _FalconInvalid:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise ValueError("invalid")


class _FalconStream:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = _streamed()


def _falcon_reraise(req: falcon.Request, resp: falcon.Response, error: Exception, params: object) -> None:
    raise error


def _falcon_bad_request(req: falcon.Request, resp: falcon.Response, error: Exception, params: object) -> None:
    raise falcon.HTTPBadRequest(title="invalid")


def falcon_app(providers: Providers, propagate: bool = False) -> WSGIApplication:
    app = falcon.App()
    app.add_route("/hello/{name}", _FalconHello())
    app.add_route("/boom", FalconBoom())
    app.add_route("/raise", _FalconRaise())
    app.add_route("/invalid", _FalconInvalid())
    app.add_route("/stream", _FalconStream())
    app.add_error_handler(_Reraised, _falcon_reraise)
    app.add_error_handler(ValueError, _falcon_bad_request)
    return otel_falcon.instrument_app(
        app, config=Config(), tracer_provider=providers.tracer, meter_provider=providers.meter
    )


# --- Bottle ---


def _bottle_hello(name: str) -> str:
    bottle.response.content_type = "text/plain"
    return f"hello {name}"


def _bottle_boom() -> str:
    raise RuntimeError("boom")


def bottle_app(providers: Providers, propagate: bool = False) -> WSGIApplication:
    app = bottle.Bottle()
    app.config["catchall"] = not propagate
    app.route("/hello/<name>", "GET", _bottle_hello)
    app.route("/boom", "GET", _bottle_boom)
    app.route("/raise", "GET", _bottle_boom)
    app.route("/stream", "GET", _streamed)
    return otel_bottle.instrument_app(
        app, config=Config(), tracer_provider=providers.tracer, meter_provider=providers.meter
    )


# --- Pyramid ---


def _pyramid_hello(request: Any) -> Any:
    return PyramidResponse(f"hello {request.matchdict['name']}", content_type="text/plain")


def _pyramid_boom(request: Any) -> Any:
    raise RuntimeError("boom")


def _pyramid_raise(request: Any) -> Any:
    raise KeyError("boom")  # no exception view takes it: it leaves the Pyramid app


def _pyramid_invalid(request: Any) -> Any:
    raise ValueError("invalid")


def _pyramid_stream(request: Any) -> Any:
    return PyramidResponse(app_iter=_streamed(), content_type="text/plain")


def _pyramid_server_error(exc: Any, request: Any) -> Any:
    return PyramidResponse("server error", status=500, content_type="text/plain")


def _pyramid_bad_request(exc: Any, request: Any) -> Any:
    return PyramidResponse("bad request", status=400, content_type="text/plain")


def pyramid_app(providers: Providers, propagate: bool = False) -> WSGIApplication:
    with Configurator() as config:
        for name, view in [
            ("boom", _pyramid_boom),
            ("raise", _pyramid_raise),
            ("invalid", _pyramid_invalid),
            ("stream", _pyramid_stream),
        ]:
            config.add_route(name, f"/{name}")
            config.add_view(view, route_name=name)
        config.add_route("hello", "/hello/{name}")
        config.add_view(_pyramid_hello, route_name="hello")
        config.add_exception_view(_pyramid_server_error, context=RuntimeError)
        config.add_exception_view(_pyramid_bad_request, context=ValueError)
        app = config.make_wsgi_app()
    return otel_pyramid.instrument_app(
        app, config=Config(), tracer_provider=providers.tracer, meter_provider=providers.meter
    )


#: Each framework's app: `build(providers, propagate)`; `propagate` lets `/raise`-like errors through.
BUILDERS: Final[dict[str, Callable[[Providers, bool], WSGIApplication]]] = {
    "flask": flask_app,
    "django": django_app,
    "falcon": falcon_app,
    "bottle": bottle_app,
    "pyramid": pyramid_app,
}
