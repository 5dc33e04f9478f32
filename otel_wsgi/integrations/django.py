"""Django: add `RouteMiddleware` to `MIDDLEWARE` and serve `wrap(get_wsgi_application())`.

The middleware reports `request.resolver_match.route` with a leading `/` once the request is handled, and
the exception of a request Django answers with a 500 (the `got_request_exception` signal, sent only for an
exception no other handling took: not `Http404`, `PermissionDenied` or a bad request). An unresolved
request (Django's 404) reports no route, so its span keeps the `{METHOD}` name.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final, Protocol

from django.core.signals import got_request_exception as _got_request_exception  # type: ignore[import-untyped]

from otel_wsgi.effects import record_exception, set_route

__all__ = ["RouteMiddleware", "http_route"]

_DISPATCH_UID: Final = "otel_wsgi.integrations.django"


class _Signal(Protocol):
    """The part of Django's `Signal` used here (Django ships no type information)."""

    def connect(self, receiver: Callable[..., None], *, dispatch_uid: str) -> None: ...


class _Match(Protocol):
    @property
    def route(self) -> str | None: ...


class _Request(Protocol):
    """What the middleware reads of Django's `HttpRequest` (`META` is the WSGI environ itself)."""

    @property
    def META(self) -> dict[str, Any]: ...  # noqa: N802  (Django's name)

    @property
    def resolver_match(self) -> _Match | None: ...


def http_route(route: str) -> str:
    """Return Django's resolved route (`users/<int:id>`) in `http.route` form (`/users/<int:id>`).

    A regex route (`re_path`) keeps its pattern text with the outer anchors removed:
    `^articles/(?P<year>[0-9]{4})/$` -> `/articles/(?P<year>[0-9]{4})/`.
    """
    route = route.removeprefix("^")
    for anchor in ("$", r"\Z"):
        if route.endswith(anchor) and not route.endswith("\\" + anchor):
            route = route.removesuffix(anchor)
            break
    return route if route.startswith("/") else "/" + route


def _report_route(request: _Request) -> None:
    match = request.resolver_match
    route = None if match is None else match.route
    if isinstance(route, str):  # None when nothing resolved (a 404)
        set_route(request.META, http_route(route))


def _report_exception(sender: object, request: _Request | None = None, **extra: object) -> None:
    # Django sends this from inside its `except` block, with the request only: the exception is the one
    # being handled. `request` is None when code outside a request sends the signal.
    exception = sys.exc_info()[1]
    if exception is not None and request is not None:
        record_exception(request.META, exception)


def _connect(signal: _Signal) -> None:
    # One receiver per process, however many handlers load the middleware.
    signal.connect(_report_exception, dispatch_uid=_DISPATCH_UID)


class RouteMiddleware:
    """Report each request's route and unhandled exception to the middleware around the Django app.

    Put it first in `MIDDLEWARE`, so it sees every request the others answer too.
    """

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        _connect(_got_request_exception)

    def __call__(self, request: _Request) -> Any:
        try:
            return self.get_response(request)
        finally:
            _report_route(request)
