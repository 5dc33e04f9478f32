"""Declarations shared by the pure core and the shell: aliases, constants and frozen records."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Literal, NamedTuple, TypeAlias

#: The WSGI environ as the pure core sees it: read-only, every value narrowed before use.
Environ: TypeAlias = Mapping[str, object]

#: A value we put on a span or a metric: scalars, or a tuple of strings for captured headers.
AttributeValue: TypeAlias = str | bool | int | float | tuple[str, ...]

#: A finished attribute mapping, read-only by type.
Attributes: TypeAlias = Mapping[str, AttributeValue]

#: Response headers as passed to `start_response` (PEP 3333: a list of (name, value) pairs).
ResponseHeaders: TypeAlias = Iterable[tuple[str, str]]

#: The `exc_info` an app may pass to `start_response` (PEP 3333), as `sys.exc_info()` returns it.
OptExcInfo: TypeAlias = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]

#: Which HTTP semantic conventions to emit: current ("stable"), pre-1.21 ("old"), or both ("dup").
SemconvMode: TypeAlias = Literal["stable", "old", "dup"]

#: The methods RFC 9110 defines, plus PATCH (RFC 5789) and QUERY; anything else is `_OTHER`.
KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)
#: Header names whose captured values are replaced by `[REDACTED]` unless configured otherwise.
SANITIZE_HEADERS: Final = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
)
#: Query parameters whose values are replaced by `REDACTED` (presigned-URL signatures).
REDACT_QUERY_PARAMS: Final = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})
#: The schema of the semantic conventions our stable attribute names follow.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"
#: Stand-in for a value we never let reach a span.
REDACTED: Final = "REDACTED"
#: Stand-in for a sanitised header value (the form the reference instrumentation uses).
REDACTED_HEADER: Final = ("[REDACTED]",)
#: The method and `error.type` value for anything outside a known set.
OTHER: Final = "_OTHER"


class RequestHead(NamedTuple):
    """What the span name and the metrics need from a request, narrowed from the environ at its start.

    `method` is normalised (`GET`, or `_OTHER`); `scheme` and `version` are as on the span
    (`url.scheme`, `network.protocol.version`); `traced` is False for an excluded request. The last
    three are read only when something needs them, else None: `server` (SERVER_NAME, SERVER_PORT) for the
    old-convention metric, `length` (the request's Content-Length) for body-size metrics, `path` (the raw
    PATH_INFO, stripped) for a span-naming policy that shows it. `fixed_attributes` are the stable start
    attributes that follow from the head's own inputs (method, scheme, server address and port, protocol
    version), computed with the head so a memoised head brings them along; None if not computed.

    A NamedTuple, not a frozen dataclass like the other records: it is built for every request, and a
    frozen dataclass pays a call per field to build (seven fields: about a third of `request_head`).
    """

    method: str
    scheme: str
    version: str | None
    traced: bool = True
    server: tuple[str | None, int | None] | None = None
    length: int | None = None
    path: str | None = None
    fixed_attributes: Attributes | None = None


#: A span-naming policy: the span name from a request's head and its route (None until one is reported).
SpanNamer: TypeAlias = Callable[[RequestHead, str | None], str]


@dataclass(frozen=True, slots=True)
class Naming:
    """How spans are named: `name(head, route)`, and whether it needs `head.path` (read only then)."""

    name: SpanNamer
    reads_path: bool = False


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What the request tells us, before the app runs.

    `method` is the normalised method (`GET`, or `_OTHER`) used to rename the span once a route is
    known; `traced` is False for an excluded request, which the shell passes through untouched.
    """

    span_name: str
    attributes: Attributes
    method: str
    traced: bool = True


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    """What one `start_response` call tells us: the status code (None if malformed) and attributes.

    `error` is True when the span status must be ERROR: a 5xx code or an invalid status line;
    `content_length` is the Content-Length header, read only when body-size metrics are on.
    """

    status_code: int | None
    attributes: Attributes
    error: bool
    content_length: int | None = None


@dataclass(frozen=True, slots=True)
class MetricRecord:
    """The attribute sets of a finished request's duration (and body-size) metrics, stable and old
    conventions; a set the configured mode does not emit is empty."""

    stable: Attributes
    old: Attributes


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """What a request keeps of the app's exception: `kind` (`error.type`, the type's qualified name)
    and `description` (the span status's, `Type: message`, bounded).

    Strings only: the exception's traceback holds the request's frames, and keeping it would tie the
    environ and the body to a cycle that only the cyclic garbage collector frees.
    """

    kind: str
    description: str


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """The attribute set a request counts under in `http.server.active_requests`, as (name, value) pairs
    (hashable: the in-process count is keyed by it), and whether it lasts at zero.

    A lasting set is bounded by configuration (a known method or `_OTHER`, `http` or `https`) and is
    reported at zero forever, as a gauge should be; any other was chosen by a client and is forgotten once
    its requests finish (after one zero, if a collection saw it non-zero).
    """

    attributes: tuple[tuple[str, AttributeValue], ...]
    lasting: bool


@dataclass(frozen=True, slots=True)
class FinishRecord:
    """Everything the end of a request puts on its span and metrics.

    `span_name` is the final name, or None to keep the start name; `attributes` are added at the end
    (the response's, `http.route`, `error.type`); `error` makes the span status ERROR, with
    `description` for an exception.
    """

    span_name: str | None
    attributes: Attributes
    error: bool
    description: str | None
    metric: MetricRecord


@dataclass(frozen=True, slots=True)
class Scope:
    """The instrumentation scope of the tracer and the meter: name, version and schema URL."""

    name: str
    version: str
    schema_url: str
