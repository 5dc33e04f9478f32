"""Pyramid: `application = instrument_app(config.make_wsgi_app())` names spans after the route's pattern.

The route is reported right after URL dispatch (the `BeforeTraversal` event): `request.matched_route`'s
`pattern` (`/users/{id}`). A request found by traversal only, with no route, reports none (a traversal
path has no template), nor does an unmatched one (Pyramid's 404): their spans keep the `{METHOD}` name.
An exception Pyramid does not handle reaches the middleware itself; one an exception view turned into a
5xx response is reported from the `NewResponse` event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from pyramid.interfaces import IBeforeTraversal, INewResponse  # type: ignore[import-untyped]
from typing_extensions import Unpack

from otel_wsgi.effects import record_exception, set_route, wrap
from otel_wsgi.integrations._options import WrapOptions

__all__ = ["PyramidApp", "instrument_app", "report_routes"]


class _Registry(Protocol):
    """The part of Pyramid's registry used here (zope.interface's handler registration)."""

    def registerHandler(self, factory: Callable[[Any], None], required: tuple[object, ...]) -> None: ...  # noqa: N802


class _Request(Protocol):
    @property
    def environ(self) -> WSGIEnvironment: ...


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...


class _RequestEvent(Protocol):
    """`BeforeTraversal`: the request, once URL dispatch has set `matched_route` (or not)."""

    @property
    def request(self) -> _Request: ...


class _ResponseEvent(_RequestEvent, Protocol):
    """`NewResponse`: the request (with `exception` if an exception view answered) and its response."""

    @property
    def response(self) -> _Response: ...


class PyramidApp(Protocol):
    """A Pyramid WSGI application (`Configurator.make_wsgi_app()`): a WSGI callable with a registry."""

    @property
    def registry(self) -> _Registry: ...

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse, /) -> Iterable[bytes]: ...


def _report_route(event: _RequestEvent) -> None:
    request = event.request
    route = getattr(request, "matched_route", None)
    pattern = getattr(route, "pattern", None)
    if isinstance(pattern, str):
        set_route(request.environ, pattern)


def _report_exception(event: _ResponseEvent) -> None:
    request, response = event.request, event.response
    exception = getattr(request, "exception", None)
    if isinstance(exception, Exception) and response.status_code >= 500:
        record_exception(request.environ, exception)


def report_routes(app: PyramidApp) -> PyramidApp:
    """Report each request's route and 5xx exception to the middleware around `app`; return `app`."""
    app.registry.registerHandler(_report_route, (IBeforeTraversal,))
    app.registry.registerHandler(_report_exception, (INewResponse,))
    return app


def instrument_app(app: PyramidApp, **wrap_kwargs: Unpack[WrapOptions]) -> WSGIApplication:
    """Return the WSGI application to serve: `app` with route reporting, wrapped by `wrap(**wrap_kwargs)`."""
    return wrap(report_routes(app), **wrap_kwargs)
