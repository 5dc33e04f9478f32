"""Bottle: `application = instrument_app(app)` traces a `Bottle` app and names spans after the route's rule.

Nothing here imports Bottle: after the app has answered, the matched route is what Bottle's own
`request.route` reads (`environ["bottle.route"]`), so a child app merged with `mount()` reports its rule
with the mount prefix, as Bottle matched it. Bottle turns a callback's exception into a 500 and hands it
to `start_response` as `exc_info` (PEP 3333), which is where it is reported. An unmatched request
(Bottle's 404) has no route, so its span keeps the `{METHOD}` name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from typing_extensions import Unpack

from otel_wsgi.effects import record_exception, set_route, wrap
from otel_wsgi.integrations._options import WrapOptions
from otel_wsgi.types import OptExcInfo

__all__ = ["instrument_app", "report_routes"]


def _report_route(environ: WSGIEnvironment) -> None:
    rule = getattr(environ.get("bottle.route"), "rule", None)
    if isinstance(rule, str):  # no route when none matched (a 404, a 405)
        set_route(environ, rule)


def report_routes(app: WSGIApplication) -> WSGIApplication:
    """Return `app` reporting each request's route and 500 exception to the middleware around it.

    For an app traced some other way than `instrument_app`: put the middleware around what this returns.
    """

    def reporting(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def reporting_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
        ) -> Callable[[bytes], object]:
            if exc_info is None:
                return start_response(status, headers)
            if isinstance(exc_info[1], Exception):
                record_exception(environ, exc_info[1])
            return start_response(status, headers, exc_info)

        try:
            return app(environ, reporting_start_response)
        finally:
            _report_route(environ)

    return reporting


def instrument_app(app: WSGIApplication, **wrap_kwargs: Unpack[WrapOptions]) -> WSGIApplication:
    """Return the WSGI application to serve: `app` with route reporting, wrapped by `wrap(**wrap_kwargs)`."""
    return wrap(report_routes(app), **wrap_kwargs)
