"""The shell: `wrap(app)` applies the pure records to real spans around a WSGI application.

The story of one request: request head -> start span (attributes built if sampled) -> call app ->
wrap body -> finish once (`TracedRequest.finish`: the one place a span ends). Every decision is a pure
function (`otel_wsgi.pure`, `otel_wsgi.naming`, `otel_wsgi.finish`); this module applies the records.
Per-app work (tracer lookup, config) happens once in `build_middleware`; what a request showed so far
lives in its `_Facts`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Final, TypeGuard
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from opentelemetry import context, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator

# The key `suppress_instrumentation()` sets; the API has no public name for it (contrib uses this one).
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context  # pyright: ignore[reportPrivateUsage]
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from typing_extensions import override

from otel_wsgi._version import __version__
from otel_wsgi.body import counting_write, response_body
from otel_wsgi.config import Config
from otel_wsgi.finish import error_record, exception_event, finish_record, response_size, traceresponse
from otel_wsgi.lazy import LazyAttributes
from otel_wsgi.metrics import Metrics, metrics_for
from otel_wsgi.naming import ROUTE_NAMING
from otel_wsgi.pure import environ_header_name, header_environ_key, request_head, response_record
from otel_wsgi.types import (
    SCHEMA_URL,
    AttributeValue,
    ErrorRecord,
    FinishRecord,
    Naming,
    OptExcInfo,
    RequestHead,
    ResponseRecord,
    Scope,
)

__all__ = ["RequestHook", "ResponseHook", "record_exception", "set_route", "wrap"]

#: Called once per traced request, right after the span starts, with the span current.
RequestHook = Callable[[Span, WSGIEnvironment], None]
#: Called on every `start_response`, before the server's; may append to the header list.
ResponseHook = Callable[[Span, WSGIEnvironment, str, list[tuple[str, str]]], None]

_LOGGER: Final = logging.getLogger("otel_wsgi")
# The keys the default propagators ask for, mapped once rather than per request.
_PROPAGATION_KEYS: Final = {
    name: header_environ_key(name) for name in ("traceparent", "tracestate", "baggage")
}
# Distinct status lines whose records are kept per wrap() (apps use a handful; the cap bounds junk).
_STATUS_CACHE_LIMIT: Final = 64
# Distinct finish records kept per wrap() (method, scheme, version, status, route...); beyond this (a flood
# of routes or junk protocol versions) records are built per request, and memory stays bounded.
_CACHE_LIMIT: Final = 2048
_STATE_KEY: Final = "otel_wsgi.request"
#: The scope `wrap()` reports its spans and metrics under.
SCOPE: Final = Scope("otel_wsgi", __version__, SCHEMA_URL)


class _EnvironGetter(Getter[WSGIEnvironment]):
    """Read propagation headers (`traceparent` -> `HTTP_TRACEPARENT`) from the environ."""

    @override
    def get(self, carrier: WSGIEnvironment, key: str) -> list[str] | None:
        value = carrier.get(_PROPAGATION_KEYS.get(key) or header_environ_key(key))
        return [value] if isinstance(value, str) else None

    @override
    def keys(self, carrier: WSGIEnvironment) -> list[str]:
        return [name for key in carrier if (name := environ_header_name(key)) is not None]


_GETTER: Final = _EnvironGetter()
# Propagators whose `extract` reads no carrier key but their `fields` (the API's W3C pair): a request
# carrying none of those has no remote context, and extracting it would only build an empty one.
_FIELD_READERS: Final = (TraceContextTextMapPropagator, W3CBaggagePropagator)
# The parent of a request without a remote context: what extraction returns then (Context is immutable).
_NO_PARENT: Final = Context()


def carrier_keys(propagator: TextMapPropagator) -> tuple[str, ...] | None:
    """Return the environ keys `propagator` extracts from, or None unless it is known to read its
    `fields` only (one of `_FIELD_READERS`, or a composite of them; any other may read other keys)."""
    if not _reads_fields_only(propagator):
        return None
    try:
        fields = propagator.fields
    except Exception:
        return None
    return tuple(header_environ_key(name) for name in sorted(fields))


def _reads_fields_only(propagator: object) -> bool:
    if type(propagator) in _FIELD_READERS:
        return True
    if type(propagator) is not CompositePropagator:
        return False
    members: object = getattr(propagator, "_propagators", None)  # no public accessor
    return _is_list(members) and all(map(_reads_fields_only, members))


def _carries_any(environ: WSGIEnvironment, keys: tuple[str, ...]) -> bool:
    for key in keys:
        if key in environ:
            return True
    return False


def _is_list(value: object) -> TypeGuard[list[object] | tuple[object, ...]]:
    return isinstance(value, list | tuple)


class _Shell:
    """Everything prepared once per `build_middleware()` and shared by its requests, with its caches."""

    __slots__ = (
        "config", "nested", "tracer", "propagator", "carrier", "request_hook", "response_hook", "metrics",
        "naming", "warned", "statuses", "finishes",
    )  # fmt: skip

    def __init__(
        self,
        config: Config,
        tracer: trace.Tracer,
        propagator: TextMapPropagator | None,
        hooks: tuple[RequestHook | None, ResponseHook | None],
        metrics: Metrics | None,
        naming: Naming,
    ) -> None:
        self.config = config
        # A layer nested in another span captures no headers and adds none (one SERVER span per request).
        self.nested = replace(
            config, capture_request_headers=(), capture_response_headers=(), traceresponse=False
        )
        self.tracer = tracer
        self.propagator = propagator  # None: the global one, looked up per request (it may be set later)
        # The last propagator used and the environ keys it reads (None: always extract).
        self.carrier: tuple[TextMapPropagator | None, tuple[str, ...] | None] = (None, None)
        self.request_hook, self.response_hook = hooks
        self.metrics = metrics
        self.naming = naming
        self.warned: set[str] = set()
        # Without response header capture, a response's attributes depend on its status line only, so a
        # finish record without an exception depends on the head, the status line and the route only;
        # without body sizes either, so does the whole response record.
        status_only = config.response_header_re is None
        self.statuses: dict[str, ResponseRecord] | None = (
            {} if status_only and not config.body_size_metrics else None
        )
        self.finishes: dict[tuple[object, ...], FinishRecord] | None = {} if status_only else None

    def log_failure(self, what: str) -> None:
        """Log a failure of a hook or of our own code: a traceback the first time this kind fails (per
        `wrap()`), then at DEBUG, so a persistent failure cannot flood the log nor hide another kind."""
        level = logging.DEBUG if what in self.warned else logging.ERROR
        self.warned.add(what)  # a handful of fixed names: the set stays small
        _LOGGER.log(level, "otel_wsgi: %s failed; the app's response is unaffected", what, exc_info=True)

    def begin(self, environ: WSGIEnvironment, start: int) -> TracedRequest | None:
        """Start the span for a request, or return None when the request must pass through untouched."""
        current = context.get_current()
        nested = False
        if current:  # an empty context (a server thread's usual one) suppresses nothing and holds no span
            if current.get(_SUPPRESS_INSTRUMENTATION_KEY):
                return None
            nested = trace.get_current_span(current).get_span_context().is_valid
        config, naming = (self.nested if nested else self.config), self.naming
        head = request_head(environ, config, path=naming.reads_path)
        if not head.traced:
            return None
        parent, links = (current, None) if nested else self.remote_parent(environ)
        kind = SpanKind.INTERNAL if nested else SpanKind.SERVER
        attributes = LazyAttributes(environ, config, head)  # built only if the sampler or the span reads them
        name = naming.name(head, None)
        if naming.reads_path:  # `{METHOD} {path}`: the path gives way so the name fits the limit too
            name = name[: config.max_attribute_length]
        span = self.tracer.start_span(name, parent, kind, attributes, links, start_time=start)
        if span.is_recording():
            # A tracer that kept the mapping unread must not see the app's edits to the environ.
            attributes.build()
        ctx = trace.set_span_in_context(span, parent)
        outer = environ.get(_STATE_KEY)  # a layer nested in ours: set_route reaches both
        request = TracedRequest(
            self, span, ctx, config, head, start, None if nested else self.metrics,
            outer if isinstance(outer, TracedRequest) else None,
        )  # fmt: skip
        environ[_STATE_KEY] = request
        return request

    def remote_parent(self, environ: WSGIEnvironment) -> tuple[Context | None, list[Link] | None]:
        """Return the extracted parent, or (no parent, a link to it) when remote context is untrusted."""
        try:
            propagator = self.propagator
            if propagator is None:
                propagator = propagate.get_global_textmap()
            used, keys = self.carrier
            if propagator is not used:
                keys = carrier_keys(propagator)
                self.carrier = (propagator, keys)
            if keys is None or _carries_any(environ, keys):
                extracted = propagator.extract(environ, getter=_GETTER)
            else:
                extracted = _NO_PARENT
        except Exception:
            self.log_failure("context extraction")
            return None, None
        if self.config.trust_remote_context:
            return extracted, None
        remote = trace.get_current_span(extracted).get_span_context()
        return Context(), [Link(remote)] if remote.is_valid else None

    def response_for(self, status: str, headers: list[tuple[str, str]], config: Config) -> ResponseRecord:
        """Return `response_record`, from the per-wrap cache when it depends on the status line only."""
        cache = self.statuses
        if cache is None or type(status) is not str:
            return response_record(status, headers, config)
        record = cache.get(status)
        if record is None:
            record = response_record(status, headers, config)
            if len(cache) < _STATUS_CACHE_LIMIT:
                cache[status] = record
        return record

    def finish_for(self, request: TracedRequest) -> FinishRecord:
        """Return `finish_record` for a request, from the per-wrap cache when its inputs are all cached."""
        facts, cache = request.facts, self.finishes
        if cache is not None and facts.error is None and (facts.status is not None or facts.response is None):
            # Every input: the head's fields the policies and metric sets read, the status line, the route.
            head, route = request.head, facts.route
            key = (head.method, head.scheme, head.version, head.server, head.path, facts.status, route)
            record = cache.get(key)
            if record is None:
                record = finish_record(head, route, facts.response, None, request.config, self.naming.name)
                if len(cache) < _CACHE_LIMIT:
                    cache[key] = record
            return record
        return finish_record(
            request.head, facts.route, facts.response, facts.error, request.config, self.naming.name
        )


class _Facts:
    """What one request showed so far: its last response (and the status line, when its record is the
    cached one), the route, the app's exception, the bytes sent, and whether it is closed."""

    __slots__ = ("response", "status", "route", "error", "sent", "closed", "file_response")

    def __init__(self) -> None:
        self.response: ResponseRecord | None = None
        self.status: str | None = None
        self.route: str | None = None
        self.error: ErrorRecord | None = None
        self.sent = 0
        self.closed = self.file_response = False


class TracedRequest:
    """One traced request: its span, context and head, fixed at its start, and its facts."""

    __slots__ = ("shell", "span", "context", "config", "head", "start", "metrics", "active", "outer", "facts")

    def __init__(
        self, shell: _Shell, span: Span, ctx: Context, config: Config, head: RequestHead, start: int,
        metrics: Metrics | None, outer: TracedRequest | None,
    ) -> None:  # fmt: skip
        self.shell, self.span, self.context, self.config, self.head = shell, span, ctx, config, head
        self.start, self.metrics, self.outer, self.facts = start, metrics, outer, _Facts()
        self.active: tuple[tuple[str, AttributeValue], ...] = () if metrics is None else metrics.begin(head)

    def run_request_hook(self, hook: RequestHook, environ: WSGIEnvironment) -> None:
        try:
            hook(self.span, environ)
        except Exception:
            self.shell.log_failure("request_hook")

    def fail(self, exc: BaseException) -> None:
        """Record an exception from the app; a BaseException (exit, interrupt) is not an error.

        Only strings are kept (the event's attributes, an `ErrorRecord`), never the exception: its
        traceback holds the request's frames, so the request would wait for the cyclic GC.
        """
        if not isinstance(exc, Exception) or self.facts.error is not None:
            return
        limit = self.config.max_attribute_length
        try:
            message: str | None = str(exc)
        except Exception:  # a hostile exception: recorded without its message
            message = None
            self.shell.log_failure("exception event")
        self.facts.error = error_record(exc, message, limit)
        if self.span.is_recording():
            try:
                self.span.add_event("exception", exception_event(exc, message, limit))
            except Exception:
                self.shell.log_failure("exception event")

    def close(self, inner_close: Callable[[], object] | None) -> None:
        """Call the app's `close` once, then finish the span once, whatever that `close` raises."""
        if self.facts.closed:
            return
        self.facts.closed = True
        if inner_close is None:  # no app code runs: the context need not be current
            self.finish()
            return
        token = context.attach(self.context)
        try:
            inner_close()
        except BaseException as exc:
            self.fail(exc)
            raise
        finally:
            try:
                self.finish()
            finally:
                context.detach(token)

    def finish(self) -> None:
        """End the span and record the metrics with the request's finish record; never raises.

        Three guarded steps, so a failing one (a processor whose `on_end` raises makes `span.end()`
        raise) cannot skip the next: the request always leaves the active count.
        """
        end = time.time_ns()
        span, metrics = self.span, self.metrics
        record = None
        try:
            recording = span.is_recording()
            record = self.shell.finish_for(self) if recording or metrics is not None else None
            if recording and record is not None:
                _apply(span, record)
        except Exception:
            self.shell.log_failure("span attributes")
        try:
            span.end(end_time=end)
        except Exception:
            self.shell.log_failure("span end")
        if metrics is not None:
            try:
                sizes = None
                if self.config.body_size_metrics:
                    facts = self.facts
                    sizes = (self.head.length, response_size(facts.response, facts.sent, facts.file_response))
                metrics.end(self.active, None if record is None else record.metric, self.start, end,
                            self.context, sizes)  # fmt: skip
            except Exception:
                self.shell.log_failure("metrics")


class _StartResponse:
    """The `start_response` the app gets: records the response, runs the hook, adds `traceresponse`,
    then calls the server's with what it received (a slotted callable: one object, no closure cells)."""

    __slots__ = ("request", "server", "environ")

    def __init__(self, request: TracedRequest, server: StartResponse, environ: WSGIEnvironment) -> None:
        self.request, self.server, self.environ = request, server, environ

    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        request = self.request
        shell, config = request.shell, request.config
        hook = shell.response_hook
        if hook is not None:
            try:
                hook(request.span, self.environ, status, headers)
            except Exception:
                shell.log_failure("response_hook")
        if config.traceresponse:
            ids = request.span.get_span_context()
            value = traceresponse(headers, ids.trace_id, ids.span_id, ids.trace_flags)
            if value is not None:
                headers = [*headers, ("traceresponse", value)]
        facts = request.facts
        facts.response = shell.response_for(status, headers, config)
        facts.status = status if type(status) is str else None  # the finish cache's key
        if exc_info is None:
            write = self.server(status, headers)
        else:
            write = self.server(status, headers, exc_info)
        if config.body_size_metrics and request.metrics is not None:
            return counting_write(write, facts)
        return write


def _apply(span: Span, record: FinishRecord) -> None:
    """Put a finish record on a recording span: name, attributes, status."""
    if record.span_name is not None:
        span.update_name(record.span_name)
    attributes = record.attributes
    if len(attributes) == 1:  # the common case; one set_attribute costs 60% of set_attributes
        for key, value in attributes.items():
            span.set_attribute(key, value)
    elif attributes:
        span.set_attributes(attributes)
    if record.error:
        span.set_status(Status(StatusCode.ERROR, record.description))


def set_route(environ: WSGIEnvironment, route: str) -> None:
    """Report the matched route template (`/users/{id}`) of the current request; the last call wins.

    The span is renamed `{METHOD} {route}` and gets `http.route`. Without the middleware it does nothing.
    """
    state = environ.get(_STATE_KEY)
    # `route` is checked at run time too: frameworks call this from untyped code.
    while isinstance(state, TracedRequest) and isinstance(route, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        state.facts.route = route[: state.config.max_attribute_length]  # bounded once, for span and metric
        state = state.outer


def record_exception(environ: WSGIEnvironment, exception: BaseException) -> None:
    """Report an exception the framework turned into a response (a 500 page) for the current request.

    The span gets the exception event, ERROR status and `error.type` as if the exception had reached the
    middleware; if it does reach it later, it is not recorded twice. Without the middleware it does nothing.
    """
    state = environ.get(_STATE_KEY)
    while isinstance(state, TracedRequest):
        state.fail(exception)
        state = state.outer


def wrap(
    app: WSGIApplication,
    *,
    config: Config | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    propagator: TextMapPropagator | None = None,
    request_hook: RequestHook | None = None,
    response_hook: ResponseHook | None = None,
) -> WSGIApplication:
    """Return `app` traced: one span per request, and HTTP server metrics.

    Args:
        app: the WSGI application to trace.
        config: what to record; None reads the process environment once, now (`Config.from_env`).
        tracer_provider: where spans go; None uses the global provider, even one set later.
        meter_provider: where metrics go; None uses the global provider, even one set later.
        propagator: how to read the incoming context; None uses the global propagator.
        request_hook: `hook(span, environ)`, called once per request after the span starts.
        response_hook: `hook(span, environ, status, headers)`, called on each `start_response`.

    Raises:
        ValueError: the configuration from the environment is invalid.
    """
    cfg = Config.from_env() if config is None else config
    return build_middleware(
        app,
        config=cfg,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        propagator=propagator,
        request_hook=request_hook,
        response_hook=response_hook,
    )


def build_middleware(
    app: WSGIApplication,
    *,
    config: Config,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    propagator: TextMapPropagator | None = None,
    request_hook: RequestHook | None = None,
    response_hook: ResponseHook | None = None,
    scope: Scope = SCOPE,
    naming: Naming = ROUTE_NAMING,
) -> WSGIApplication:
    """Return `app` traced (internal: `wrap()` and `otel_wsgi.compat` are built on it; not public API).

    Beyond `wrap()`'s arguments: `scope` is the instrumentation scope of both the tracer and the meter,
    `naming` the span-naming policy (a pure function of the request head and the route).
    """
    tracer = trace.get_tracer(scope.name, scope.version, tracer_provider, schema_url=scope.schema_url)
    metrics = metrics_for(meter_provider, config, scope)
    shell = _Shell(config, tracer, propagator, (request_hook, response_hook), metrics, naming)

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start = time.time_ns()
        try:
            request = shell.begin(environ, start)
        except Exception:
            shell.log_failure("span start")
            request = None
        if request is None:
            return app(environ, start_response)
        token = context.attach(request.context)
        try:
            if shell.request_hook is not None:
                request.run_request_hook(shell.request_hook, environ)
            result = app(environ, _StartResponse(request, start_response, environ))
        except BaseException as exc:
            request.fail(exc)
            request.close(None)
            raise
        finally:
            context.detach(token)
        return response_body(result, environ.get("wsgi.file_wrapper"), request)

    return middleware
