"""Flask: `app = instrument_app(app)` traces the app and names spans after `request.url_rule.rule`.

The route is reported when Flask starts handling the request (the `request_started` signal, after URL
matching), the exception of a view that Flask turns into a 500 from `got_request_exception`. An unmatched
request (Flask's 404) has no rule, so its span keeps the `{METHOD}` name.
"""

from __future__ import annotations

from flask import Flask, got_request_exception, request, request_started
from typing_extensions import Unpack

from otel_wsgi.effects import record_exception, set_route, wrap
from otel_wsgi.integrations._options import WrapOptions

__all__ = ["instrument_app", "report_routes"]


def _report_route(sender: Flask, **extra: object) -> None:
    rule = request.url_rule
    if rule is not None:  # None when no rule matched (a 404, a 405)
        set_route(request.environ, rule.rule)


def _report_exception(sender: Flask, exception: BaseException, **extra: object) -> None:
    # Sent for an exception no error handler took, whether Flask answers 500 or propagates it
    # (PROPAGATE_EXCEPTIONS, testing): the middleware records the same exception once.
    record_exception(request.environ, exception)


def report_routes(app: Flask) -> Flask:
    """Report each request's route and unhandled exception to the middleware around `app`; return `app`.

    For an app traced some other way than `instrument_app` (the middleware already around it).
    Calling it twice connects nothing twice.
    """
    # Module-level receivers: blinker keeps only a weak reference to them, and to the sender.
    request_started.connect(_report_route, app)
    got_request_exception.connect(_report_exception, app)
    return app


def instrument_app(app: Flask, **wrap_kwargs: Unpack[WrapOptions]) -> Flask:
    """Trace `app` (its `wsgi_app` wrapped by `wrap(**wrap_kwargs)`) with route reporting; return `app`."""
    report_routes(app)
    app.wsgi_app = wrap(app.wsgi_app, **wrap_kwargs)  # type: ignore[method-assign, assignment]  # Flask's own idiom
    return app
