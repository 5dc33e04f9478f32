"""OpenTelemetry middleware for WSGI applications: `app = wrap(app)`."""

from otel_wsgi._version import __version__
from otel_wsgi.config import Config
from otel_wsgi.effects import RequestHook, ResponseHook, record_exception, set_route, wrap

__all__ = ["Config", "RequestHook", "ResponseHook", "__version__", "record_exception", "set_route", "wrap"]
