"""A plain, uninstrumented WSGI app that tests/test_cli.py serves with `otel-wsgi serve` and gunicorn.

It knows nothing of OpenTelemetry except `set_route` (a no-op without the middleware): the command and
the gunicorn hooks add the tracing.
"""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

from otel_wsgi import set_route

#: Not an app: `serve cli_app:not_callable` must refuse it.
not_callable = 42


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """`/work/<n>` answers 200 under the route `/work/{n}`, `/ready` 200, anything else 404."""
    path: str = environ.get("PATH_INFO", "")
    if path.startswith("/work/"):
        set_route(environ, "/work/{n}")
    elif path == "/ready":
        set_route(environ, "/ready")
    else:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [path.encode() + b"\n"]


class Holder:
    """`serve cli_app:Holder.wsgi` reaches an app through a dotted attribute path."""

    wsgi = staticmethod(app)
