"""The end of a request as a record: what its span and metrics get, from what the request showed.

Pure and total, like `otel_wsgi.pure`: the head (from the request's start), the route the app reported,
the last response record and the app's exception go in; a frozen `FinishRecord` comes out, which the
shell applies as it is. `error.type` and the `traceresponse` header value are decided here too.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Final

from otel_wsgi import semconv as sc
from otel_wsgi.naming import route_span_name
from otel_wsgi.types import (
    OTHER,
    ActiveKey,
    Attributes,
    AttributeValue,
    ErrorRecord,
    FinishRecord,
    MetricRecord,
    RequestHead,
    ResponseHeaders,
    ResponseRecord,
    SpanNamer,
)
from otel_wsgi.values import DEFAULT_PORTS, header_pairs

if TYPE_CHECKING:
    from otel_wsgi.config import Config

_NONE: Final[Attributes] = {}
# Where a stack trace too long for the limit is cut: its start and its end are kept around this.
_CUT: Final = "\n...\n"
# What a request counts under once too many client-chosen sets are active at once.
_OVERFLOW_HEAD: Final = RequestHead(OTHER, OTHER, None)

__all__ = [
    "active_key",
    "active_overflow_key",
    "bounded_text",
    "error_description",
    "error_record",
    "error_type",
    "exception_event",
    "exception_message",
    "finish_record",
    "metric_record",
    "response_size",
    "status_error_type",
    "traceresponse",
]


def finish_record(
    head: RequestHead,
    route: str | None,
    response: ResponseRecord | None,
    error: BaseException | ErrorRecord | None,
    config: Config,
    name: SpanNamer = route_span_name,
) -> FinishRecord:
    """Return what the end of a request records: final name, attributes to add, status, metric sets.

    `response` is the last `start_response` record (None if the app never called it), `error` the app's
    exception or what was kept of it (None if it raised none); `name` is the span-naming policy, whose
    name is cut to `max_attribute_length` (the route gives way, the method stays).
    """
    limit = config.max_attribute_length
    if isinstance(error, BaseException):
        error = error_record(error, exception_message(error), limit)
    kind = error_type(error, response)
    attributes: Attributes = _NONE if response is None else response.attributes
    if route is not None or error is not None:
        extended = dict(attributes)
        if route is not None:
            extended[sc.HTTP_ROUTE] = route
        if kind is not None and error is not None:
            extended[sc.ERROR_TYPE] = kind  # the exception's type wins over a 5xx code
        attributes = extended
    code = None if response is None else response.status_code
    return FinishRecord(
        None if route is None else name(head, route)[:limit],
        attributes,
        error is not None or (response is not None and response.error),
        None if error is None else error.description,
        metric_record(head, code, route, kind, config),
    )


def error_type(error: BaseException | ErrorRecord | None, response: ResponseRecord | None) -> str | None:
    """Return `error.type`: the exception's qualified type name, else the response's (a 5xx code or
    `_OTHER` for a malformed status line), else None."""
    if isinstance(error, ErrorRecord):
        return error.kind
    if error is not None:
        return type(error).__qualname__
    if response is None or not response.error:
        return None
    return status_error_type(response.status_code)


def status_error_type(code: int | None) -> str | None:
    """Return the `error.type` of a status: the code of a 5xx, `_OTHER` if malformed (None), else None."""
    if code is None:
        return OTHER
    return str(code) if code >= 500 else None


def error_description(error: BaseException) -> str:
    """Return the span status description of an exception, `Type: message` (`Type` if `str` raises)."""
    return _description(error, exception_message(error))


def exception_message(error: BaseException) -> str | None:
    """Return `str(error)`, or None when it raises (some ORM and proxy errors do)."""
    try:
        return str(error)
    except Exception:
        return None


def error_record(error: BaseException, message: str | None, limit: int) -> ErrorRecord:
    """Return what a request keeps of its exception, given `message` (its `str()`, None if that
    raised): the `error.type` and the status description, each cut to `limit`."""
    return ErrorRecord(type(error).__qualname__[:limit], _description(error, message)[:limit])


def exception_event(error: BaseException, message: str | None, limit: int) -> Attributes:
    """Return the attributes of the `exception` span event, as the SDK's `record_exception` builds
    them but each within `limit`: the message cut, the stack trace keeping its start and its end
    (`bounded_text`); no message when `str()` raised (`message` None)."""
    module, qualname = type(error).__module__, type(error).__qualname__
    kind = f"{module}.{qualname}" if module and module != "builtins" else qualname
    attributes: dict[str, AttributeValue] = {sc.EXCEPTION_TYPE: kind[:limit]}
    if message is not None:
        attributes[sc.EXCEPTION_MESSAGE] = message[:limit]
    try:
        stacktrace = "".join(traceback.format_exception(error))
    except Exception:  # a hostile __repr__ or a broken traceback: the event goes without it
        stacktrace = ""
    if stacktrace:
        attributes[sc.EXCEPTION_STACKTRACE] = bounded_text(stacktrace, limit)
    attributes[sc.EXCEPTION_ESCAPED] = "False"  # as `record_exception(exc)` says by default
    return attributes


def bounded_text(text: str, limit: int) -> str:
    """Return `text` within `limit` characters: as it is when it fits, else its start and its end
    joined by a "..." line (a stack trace's outermost frames and its innermost one with the error)."""
    if len(text) <= limit:
        return text
    room = limit - len(_CUT)
    if room < 2:
        return text[:limit]
    return text[: room - room // 2] + _CUT + text[len(text) - room // 2 :]


def _description(error: BaseException, message: str | None) -> str:
    name = type(error).__name__
    return name if message is None else f"{name}: {message}"


def metric_record(
    head: RequestHead, code: int | None, route: str | None, kind: str | None, config: Config
) -> MetricRecord:
    """Return the duration attribute sets of a request in the configured conventions (the other empty)."""
    stable: dict[str, AttributeValue] = {}
    old: dict[str, AttributeValue] = {}
    if config.semconv != "old":
        pairs = (
            (sc.HTTP_REQUEST_METHOD, head.method),
            (sc.URL_SCHEME, head.scheme),
            (sc.NETWORK_PROTOCOL_VERSION, head.version),
            (sc.HTTP_RESPONSE_STATUS_CODE, code),
            (sc.HTTP_ROUTE, route),
            (sc.ERROR_TYPE, kind),
        )
        stable = {key: value for key, value in pairs if value is not None}
    if config.semconv != "stable":
        server_name, server_port = (None, None) if head.server is None else head.server
        old_pairs = (
            (sc.OLD_HTTP_METHOD, head.method),
            (sc.OLD_HTTP_SCHEME, head.scheme),
            (sc.OLD_HTTP_FLAVOR, head.version),
            (sc.OLD_HTTP_STATUS_CODE, code),
            (sc.OLD_HTTP_SERVER_NAME, server_name or None),
            (sc.OLD_NET_HOST_PORT, server_port),
        )
        old = {key: value for key, value in old_pairs if value is not None}
    return MetricRecord(stable, old)


def active_key(head: RequestHead, config: Config) -> ActiveKey:
    """Return the `http.server.active_requests` set of a request (method and scheme, in the configured
    names), lasting when configuration bounds it: a known method or `_OTHER`, and `http` or `https`."""
    pairs: tuple[tuple[str, AttributeValue], ...] = ()
    if config.semconv != "old":
        pairs = ((sc.HTTP_REQUEST_METHOD, head.method), (sc.URL_SCHEME, head.scheme))
    if config.semconv != "stable":
        pairs += ((sc.OLD_HTTP_METHOD, head.method), (sc.OLD_HTTP_SCHEME, head.scheme))
    known = head.method == OTHER or head.method in config.known_methods
    return ActiveKey(pairs, known and head.scheme in DEFAULT_PORTS)


def active_overflow_key(config: Config) -> ActiveKey:
    """Return the set requests count under past the cap on live client-chosen sets: method and scheme
    `_OTHER` (never lasting: it is forgotten once those requests finish)."""
    return active_key(_OVERFLOW_HEAD, config)


def response_size(response: ResponseRecord | None, sent: int, file_response: bool) -> int:
    """Return the response body size: the bytes the body carried, or the Content-Length of a file the
    server sends itself (sendfile: its bytes never pass through us)."""
    if file_response and response is not None and response.content_length is not None:
        return response.content_length
    return sent


def traceresponse(headers: ResponseHeaders, trace_id: int, span_id: int, trace_flags: int) -> str | None:
    """Return the W3C `traceresponse` value to add (`00-{trace}-{span}-{flags}`), or None when the app
    set one already or the ids are all zero (an invalid span: W3C Trace Context forbids them)."""
    if trace_id == 0 or span_id == 0:
        return None
    if any(name.lower() == "traceresponse" for name, _ in header_pairs(headers)):
        return None
    return f"00-{trace_id:032x}-{span_id:016x}-{trace_flags:02x}"
