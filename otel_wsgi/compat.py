"""The documented API of `opentelemetry-instrumentation-wsgi` (0.66b2), over our core and shell.

Migrating is a one-line import change: `from otel_wsgi.compat import OpenTelemetryMiddleware`.
`OpenTelemetryMiddleware` is `wrap()`'s shell with the reference's scope, span names and environment
variables; the helpers are our pure functions under the reference's names and arguments. The reference's
bugs stay fixed; the README's migration section lists every difference a user can observe.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import replace
from enum import Enum
from functools import lru_cache
from typing import Any, Final, TypeVar
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from opentelemetry import metrics, trace
from opentelemetry.metrics import Meter, MeterProvider
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider
from typing_extensions import override

from otel_wsgi._version import __version__
from otel_wsgi.body import Body, SizedBody
from otel_wsgi.config import Config
from otel_wsgi.effects import RequestHook, ResponseHook, build_middleware
from otel_wsgi.naming import PATH_NAMING, path_span_name, reference_method
from otel_wsgi.pure import (
    environ_header_name,
    request_attributes,
    request_head,
    request_header_attributes,
    response_header_attributes,
    response_record,
)
from otel_wsgi.types import AttributeValue, Scope, SemconvMode

__all__ = [
    "OpenTelemetryMiddleware",
    "RequestHook",
    "ResponseHook",
    "ResponsePropagationSetter",
    "StabilityMode",
    "WSGIGetter",
    "add_response_attributes",
    "collect_custom_request_headers_attributes",
    "collect_custom_response_headers_attributes",
    "collect_request_attributes",
    "default_response_propagation_setter",
    "get_default_span_name",
    "setifnotnone",
    "wsgi_getter",
]

#: The reference's instrumentation scope name, which dashboards and `get_sorted_metrics` filter on.
SCOPE_NAME: Final = "opentelemetry.instrumentation.wsgi"
# The reference's schema URL per mode: 1.11.0 for the old names, 1.21.0 once the stable ones are emitted.
_SCHEMA_URLS: Final[dict[SemconvMode, str]] = {
    "old": "https://opentelemetry.io/schemas/1.11.0",
    "stable": "https://opentelemetry.io/schemas/1.21.0",
    "dup": "https://opentelemetry.io/schemas/1.21.0",
}
_OPT_IN: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"
_CAPTURE_ALL_METHODS: Final = "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS"
# The variables the reference reads besides the mode; `Config.from_env` parses them.
_VARIABLES: Final = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
    _CAPTURE_ALL_METHODS,
)
# The reference's mode values (`_StabilityMode.X.value`) and ours; any other value is the default.
_MODES: Final[dict[object, SemconvMode]] = {"default": "old", "http": "stable", "http/dup": "dup"}

_K = TypeVar("_K")
_V = TypeVar("_V")


class StabilityMode(Enum):
    """The semantic-convention modes the helpers accept; any enum with these values works the same
    (the reference's own `_StabilityMode` included)."""

    DEFAULT = "default"
    HTTP = "http"
    HTTP_DUP = "http/dup"


class OpenTelemetryMiddleware:
    """Trace a WSGI application as the reference does, with its bugs fixed.

    The configuration (`OTEL_SEMCONV_STABILITY_OPT_IN`, header capture, all methods) is read once,
    here. Spans are named `{METHOD} {PATH_INFO}` until a framework reports a route with `set_route`.
    """

    __slots__ = ("_wsgi", "_tracer", "_meter", "_request_hook", "_response_hook", "_middleware")

    def __init__(
        self,
        wsgi: WSGIApplication,
        request_hook: RequestHook | None = None,
        response_hook: ResponseHook | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        semconv = _semconv_from_env(os.environ.get(_OPT_IN))
        scope = Scope(SCOPE_NAME, __version__, _SCHEMA_URLS[semconv])
        self._wsgi, self._request_hook, self._response_hook = wsgi, request_hook, response_hook
        self._tracer = trace.get_tracer(
            scope.name, scope.version, tracer_provider, schema_url=scope.schema_url
        )
        self._meter = metrics.get_meter(
            scope.name, scope.version, meter_provider, schema_url=scope.schema_url
        )
        self._middleware = build_middleware(
            wsgi,
            config=_config(semconv, _read_variables()),
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            request_hook=request_hook,
            response_hook=response_hook,
            scope=scope,
            naming=PATH_NAMING,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        result = self._middleware(environ, start_response)
        if isinstance(result, SizedBody):
            return _SizedEndingBody(result)
        if isinstance(result, Body):
            return _EndingBody(result)
        return result  # untraced, or the server's own wsgi.file_wrapper (its close is hooked)

    @property
    def wsgi(self) -> WSGIApplication:
        """The wrapped application."""
        return self._wsgi

    @property
    def tracer(self) -> Tracer:
        """A tracer of the scope the spans are reported under."""
        return self._tracer

    @property
    def meter(self) -> Meter:
        """A meter of the scope the metrics are reported under."""
        return self._meter

    @property
    def request_hook(self) -> RequestHook | None:
        return self._request_hook

    @property
    def response_hook(self) -> ResponseHook | None:
        return self._response_hook


class _EndingBody:
    """Our body, which also ends the request when iteration is exhausted, as the reference's generator
    did (its users' tests read the span right after the last chunk); the server's `close()` then only
    finds the request finished. Closing without iterating still ends it (the reference's leak, fixed)."""

    __slots__ = ("_body",)

    def __init__(self, body: Body) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._body)
        except StopIteration:
            self._body.close()
            raise

    def close(self) -> None:
        self._body.close()


class _SizedEndingBody(_EndingBody):
    """An ending body whose iterable has a length (servers derive Content-Length from it, PEP 3333)."""

    __slots__ = ("_sized",)

    def __init__(self, body: SizedBody) -> None:
        super().__init__(body)
        self._sized = body

    def __len__(self) -> int:
        return len(self._sized)


class WSGIGetter(Getter[WSGIEnvironment]):
    """Read request headers from the environ for a propagator: `traceparent` -> `HTTP_TRACEPARENT`."""

    @override
    def get(self, carrier: WSGIEnvironment, key: str) -> list[str] | None:
        """Return `[value]` of the header `key`, or None when absent or not text."""
        value: object = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    @override
    def keys(self, carrier: WSGIEnvironment) -> list[str]:
        """Return the names of the `HTTP_*` headers, lowercase with dashes (`HTTP_X_ID` -> `x-id`)."""
        return [name for key in carrier if key.startswith("HTTP_") and (name := environ_header_name(key))]


wsgi_getter: Final = WSGIGetter()


class ResponsePropagationSetter(Setter[list[tuple[str, str]]]):
    """Append a header to a response header list (for a response propagator such as `traceresponse`)."""

    @override
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key, value))


default_response_propagation_setter: Final = ResponsePropagationSetter()


def setifnotnone(dic: MutableMapping[_K, _V], key: _K, value: _V | None) -> None:
    """Set `dic[key] = value` unless the value is None."""
    if value is not None:
        dic[key] = value


def collect_request_attributes(
    environ: Mapping[str, object], sem_conv_opt_in_mode: Enum = StabilityMode.DEFAULT
) -> dict[str, AttributeValue]:
    """Return a request's span start attributes in the mode's names (captured headers not included)."""
    config = _config(_semconv_of(sem_conv_opt_in_mode), _read_variables(headers=False))
    return request_attributes(environ, config, request_head(environ, config))


def add_response_attributes(
    span: Span,
    start_response_status: str,
    response_headers: object,
    duration_attrs: MutableMapping[str, Any] | None = None,
    sem_conv_opt_in_mode: Enum = StabilityMode.DEFAULT,
) -> None:
    """Set the status code (and `error.type`) on the span and in `duration_attrs`, and the span status:
    ERROR for a 5xx or a malformed status line. The headers are unused, as in the reference."""
    config = _config(_semconv_of(sem_conv_opt_in_mode), (None, None, None, None))
    record = response_record(start_response_status, (), config)
    if duration_attrs is not None:
        duration_attrs.update(record.attributes)
    if span.is_recording():
        for key, value in record.attributes.items():  # one call per key: callers' mock spans count them
            span.set_attribute(key, value)
    if span.is_recording() and record.error:
        span.set_status(Status(StatusCode.ERROR))


def get_default_span_name(environ: Mapping[str, object]) -> str:
    """Return the reference's span name: `{METHOD} {PATH_INFO}`, the method alone, or `HTTP`; the
    method stripped and upper-cased first, as the reference does (the middleware's names do not)."""
    config = _config("old", _read_variables(headers=False))
    raw = environ.get("REQUEST_METHOD")
    method = reference_method(
        raw if isinstance(raw, str) else "", config.known_methods, capture_all=config.capture_all_methods
    )
    head = request_head(environ, config, path=True)
    return path_span_name(head._replace(method=method[: config.max_attribute_length]), None)


def collect_custom_request_headers_attributes(environ: Mapping[str, object]) -> dict[str, list[str]]:
    """Return the request headers the environment variables ask to capture, sanitised."""
    config = _capture_config()
    if config is None or config.request_header_re is None:
        return {}
    return _lists(request_header_attributes(environ, config))


def collect_custom_response_headers_attributes(
    response_headers: Iterable[tuple[str, str]],
) -> dict[str, list[str]]:
    """Return the response headers the environment variables ask to capture, sanitised."""
    config = _capture_config()
    if config is None:
        return {}
    return _lists(response_header_attributes(list(response_headers), config))


def _semconv_from_env(value: str | None) -> SemconvMode:
    """Return our mode for an `OTEL_SEMCONV_STABILITY_OPT_IN` value, parsed as the reference does:
    comma-separated tokens, stripped and exact; `http/dup` wins over `http`; otherwise the old names."""
    tokens = {token.strip() for token in (value or "").split(",")}
    return "dup" if "http/dup" in tokens else "stable" if "http" in tokens else "old"


def _semconv_of(mode: object) -> SemconvMode:
    """Return our mode for an enum whose value is `default`, `http` or `http/dup` (else the default)."""
    value: object = getattr(mode, "value", mode)
    return _MODES.get(value, "old") if isinstance(value, str) else "old"


def _read_variables(*, headers: bool = True) -> tuple[str | None, ...]:
    """Return the values of the reference's variables now (header capture left out unless `headers`)."""
    return tuple(
        os.environ.get(name) if headers or name == _CAPTURE_ALL_METHODS else None for name in _VARIABLES
    )


@lru_cache(maxsize=64)
def _config(semconv: SemconvMode, values: tuple[str | None, ...]) -> Config:
    """Return the Config for these variable values (cached: the helpers run per request).

    Raises:
        ValueError: a header pattern is not a valid regular expression.
    """
    env = {name: value for name, value in zip(_VARIABLES, values, strict=True) if value is not None}
    everything = env.get(_CAPTURE_ALL_METHODS)
    if everything is not None:
        # The reference turns it on for any non-empty value; values that plainly say "off" mean off here.
        env[_CAPTURE_ALL_METHODS] = "false" if everything.strip().lower() in ("", "0", "false") else "true"
    return replace(Config.from_env(env), semconv=semconv)


def _capture_config() -> Config | None:
    """Return the Config of the header helpers now, or None when a pattern is invalid (never raise
    per request: the middleware reports that at construction)."""
    try:
        return _config(_semconv_from_env(os.environ.get(_OPT_IN)), _read_variables())
    except ValueError:
        return None


def _lists(attributes: Mapping[str, AttributeValue]) -> dict[str, list[str]]:
    """Return captured header attributes as the reference's lists."""
    return {key: list(value) for key, value in attributes.items() if isinstance(value, tuple)}
