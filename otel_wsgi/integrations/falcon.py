"""Falcon: `application = instrument_app(app)` traces a `falcon.App` and names spans after `req.uri_template`.

Falcon answers a responder's exception with a 500 from its default error handler; the app's error
reporter (Falcon's hook for instrumentation, one per app) tells us which exception that was. A reported
exception is recorded only if the response is a 5xx: an exception a custom error handler turned into a
4xx is the app's business, as are Falcon's own `HTTPError` and `HTTPStatus`. An unrouted request (Falcon's
404) has no URI template, so its span keeps the `{METHOD}` name.
"""

from __future__ import annotations

from typing import Any, Final
from wsgiref.types import WSGIApplication

from falcon import App, HTTPError, HTTPStatus, Request, Response
from typing_extensions import Unpack

from otel_wsgi.effects import record_exception, set_route, wrap
from otel_wsgi.integrations._options import WrapOptions

__all__ = ["RouteMiddleware", "instrument_app", "report_error", "report_routes"]

# Where a handled exception waits for the response status (the environ is per request).
_PENDING: Final = "otel_wsgi.falcon.exception"


def _report_route(req: Request) -> None:
    if req.uri_template is not None:  # None when no route matched (a 404)
        set_route(req.env, req.uri_template)


def report_error(req: Request, error: Exception, params: dict[str, Any], handled: bool) -> None:
    """Falcon error reporter: remember an exception an error handler answered (call it from yours)."""
    # An exception that leaves the app skips the response middleware: report the route now. That
    # exception reaches the middleware itself; Falcon's HTTP errors are responses, not failures.
    _report_route(req)
    if handled and not isinstance(error, HTTPError | HTTPStatus):
        req.env.setdefault(_PENDING, error)


class RouteMiddleware:
    """Falcon middleware: report the route, and a remembered exception if the answer is a 5xx."""

    def process_response(self, req: Request, resp: Response, resource: object, req_succeeded: bool) -> None:
        _report_route(req)
        error = req.env.pop(_PENDING, None)
        if isinstance(error, Exception) and resp.status_code >= 500:
            record_exception(req.env, error)


def report_routes(app: App[Any, Any]) -> App[Any, Any]:
    """Report each request's route and 500 exception to the middleware around `app`; return `app`.

    Adds `RouteMiddleware` and sets `report_error` as the app's error reporter (replacing any other).
    """
    app.add_middleware(RouteMiddleware())
    app.set_error_reporter(report_error)
    return app


def instrument_app(app: App[Any, Any], **wrap_kwargs: Unpack[WrapOptions]) -> WSGIApplication:
    """Return the WSGI application to serve: `app` with route reporting, wrapped by `wrap(**wrap_kwargs)`."""
    return wrap(report_routes(app), **wrap_kwargs)
