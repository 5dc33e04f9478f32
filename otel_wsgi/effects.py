"""The shell: `wrap(app)` applies the pure records to real spans around a WSGI application.

The story of one request: request head -> start span (attributes built if sampled) -> call app ->
wrap body -> finish once.
Per-app work (tracer lookup, config) happens in `wrap`; per-request state lives in one `TracedRequest`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from opentelemetry import context, propagate, trace

# The key `suppress_instrumentation()` sets; the API has no public name for it (contrib uses this one).
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context  # pyright: ignore[reportPrivateUsage]
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from typing_extensions import override

from otel_wsgi import semconv as sc
from otel_wsgi._version import __version__
from otel_wsgi.body import body_for, is_file_response
from otel_wsgi.config import Config
from otel_wsgi.lazy import LazyAttributes
from otel_wsgi.metrics import Metrics, metrics_for
from otel_wsgi.pure import (
    environ_header_name,
    header_environ_key,
    header_pairs,
    request_head,
    response_record,
    span_name,
)
from otel_wsgi.types import SCHEMA_URL, OptExcInfo, RequestHead, ResponseRecord

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
_STATE_KEY: Final = "otel_wsgi.request"


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
_FINISHED: Final[WSGIEnvironment] = {}  # what a finished request keeps instead of the environ


class _Shell:
    """Everything prepared once per `wrap()` and shared by its requests."""

    __slots__ = (
        "config",
        "nested",
        "tracer",
        "extract",
        "request_hook",
        "response_hook",
        "metrics",
        "warned",
        "statuses",
    )

    def __init__(
        self,
        config: Config,
        tracer: trace.Tracer,
        propagator: TextMapPropagator | None,
        hooks: tuple[RequestHook | None, ResponseHook | None],
        metrics: Metrics | None,
    ) -> None:
        self.config = config
        # A layer nested in another span captures no headers and adds none (one SERVER span per request).
        self.nested = replace(
            config, capture_request_headers=(), capture_response_headers=(), traceresponse=False
        )
        self.tracer = tracer
        self.extract: Callable[..., Context] = propagate.extract if propagator is None else propagator.extract
        self.request_hook, self.response_hook = hooks
        self.metrics = metrics
        self.warned = False
        # With no response header capture or sizes, a response record depends on the status line only.
        cacheable = config.response_header_re is None and not config.body_size_metrics
        self.statuses: dict[str, ResponseRecord] | None = {} if cacheable else None

    def log_failure(self, what: str) -> None:
        """Log a failure of a hook or of our own code: a traceback the first time, then at DEBUG."""
        level = logging.DEBUG if self.warned else logging.ERROR
        self.warned = True
        _LOGGER.log(level, "otel_wsgi: %s failed; the app's response is unaffected", what, exc_info=True)

    def begin(
        self, environ: WSGIEnvironment, start_response: StartResponse, start: int
    ) -> TracedRequest | None:
        """Start the span for a request, or return None when the request must pass through untouched."""
        current = context.get_current()
        if current.get(_SUPPRESS_INSTRUMENTATION_KEY):
            return None
        nested = trace.get_current_span(current).get_span_context().is_valid
        config = self.nested if nested else self.config
        head = request_head(environ, config)
        if not head.traced:
            return None
        parent, links = (current, None) if nested else self.remote_parent(environ)
        kind = SpanKind.INTERNAL if nested else SpanKind.SERVER
        attributes = LazyAttributes(environ, config, head)  # built only if the sampler or the span reads them
        span = self.tracer.start_span(
            span_name(head.method), parent, kind, attributes, links, start_time=start
        )
        if span.is_recording():
            # A tracer that kept the mapping unread must not see the app's edits to the environ.
            attributes.build()
        ctx = trace.set_span_in_context(span, parent)
        return TracedRequest(self, span, ctx, config, start, environ, start_response, head, nested)

    def remote_parent(self, environ: WSGIEnvironment) -> tuple[Context | None, list[Link] | None]:
        """Return the extracted parent, or (no parent, a link to it) when remote context is untrusted."""
        try:
            extracted = self.extract(environ, getter=_GETTER)
        except Exception:
            self.log_failure("context extraction")
            return None, None
        if self.config.trust_remote_context:
            return extracted, None
        remote = trace.get_current_span(extracted).get_span_context()
        return Context(), [Link(remote)] if remote.is_valid else None


class TracedRequest:
    """The state of one traced request: its span, the server's callable, the response seen so far."""

    __slots__ = (
        "shell", "span", "context", "config", "start", "environ", "server_start_response",
        "head", "route", "outer", "response", "error", "closed", "inner_close", "metrics",
        "series", "sent", "file_response",
    )  # fmt: skip

    def __init__(
        self, shell: _Shell, span: Span, ctx: Context, config: Config, start: int,
        environ: WSGIEnvironment, start_response: StartResponse, head: RequestHead, nested: bool,
    ) -> None:  # fmt: skip
        self.shell, self.span, self.context, self.config, self.start = shell, span, ctx, config, start
        self.environ, self.server_start_response, self.head = environ, start_response, head
        self.response: ResponseRecord | None = None
        self.error: Exception | None = None
        self.route: str | None = None
        self.closed = self.file_response = False
        self.inner_close: Callable[[], object] | None = None
        self.sent = 0
        outer = environ.get(_STATE_KEY)
        self.outer = outer if isinstance(outer, TracedRequest) else None
        environ[_STATE_KEY] = self
        self.metrics = metrics = None if nested else shell.metrics
        if metrics is not None:
            self.series = metrics.series_for(head)
            metrics.begin(self.series)

    def run_request_hook(self, hook: RequestHook) -> None:
        try:
            hook(self.span, self.environ)
        except Exception:
            self.shell.log_failure("request_hook")

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        """Record the response, run the hook, then call the server's `start_response` as received."""
        hook = self.shell.response_hook
        if hook is not None:
            try:
                hook(self.span, self.environ, status, headers)
            except Exception:
                self.shell.log_failure("response_hook")
        if self.config.traceresponse:
            headers = self.with_traceresponse(headers)
        try:
            self.response = self.cached_response_record(status, headers)
        except Exception:
            self.shell.log_failure("response attributes")
        if exc_info is None:
            write = self.server_start_response(status, headers)
        else:
            write = self.server_start_response(status, headers, exc_info)
        return write if self.metrics is None or not self.config.body_size_metrics else self.counting(write)

    def cached_response_record(self, status: str, headers: list[tuple[str, str]]) -> ResponseRecord:
        """Return the record of this response, from the per-wrap cache when it depends on the status only."""
        cache = self.shell.statuses
        if cache is None:
            return response_record(status, headers, self.config)
        record = cache.get(status)
        if record is None:
            record = response_record(status, headers, self.config)
            if len(cache) < _STATUS_CACHE_LIMIT and type(status) is str:
                cache[status] = record
        return record

    def with_traceresponse(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Return a copy of the headers with `traceresponse` added, unless the app set one or the span
        is invalid (a no-op provider: W3C forbids the all-zero ids)."""
        ctx = self.span.get_span_context()
        if not ctx.is_valid or any(name.lower() == "traceresponse" for name, _ in header_pairs(headers)):
            return headers
        value = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
        return [*headers, ("traceresponse", value)]

    def counting(self, write: Callable[[bytes], object]) -> Callable[[bytes], object]:
        """Return the server's `write`, counting the bytes it sends (only with body-size metrics)."""

        def counted_write(data: bytes) -> object:
            self.sent += len(data)
            return write(data)

        return counted_write

    def fail(self, exc: BaseException) -> None:
        """Record an exception from the app; a BaseException (exit, interrupt) is not an error."""
        if isinstance(exc, Exception) and self.error is None:
            self.error = exc
            if self.span.is_recording():
                self.span.record_exception(exc)

    def body(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """Return what the server gets: the file wrapper itself (close hooked) or our body wrapper."""
        file_wrapper = self.environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and is_file_response(result, file_wrapper):
            original = getattr(result, "close", None)
            try:
                result.close = self.close_file  # type: ignore[attr-defined]  # checked by the try
            except (AttributeError, TypeError):
                pass  # read-only close (bjoern, meinheld): fall back to the wrapper
            else:
                self.inner_close, self.file_response = original, True
                return result
        return body_for(result, self)

    def close_file(self) -> None:
        self.close(self.inner_close)

    def close(self, inner_close: Callable[[], object] | None) -> None:
        """Call the app's `close` once, then finish the span once, whatever that `close` raises."""
        if self.closed:
            return
        self.closed = True
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
        """End the span (and record the metrics) with everything the request showed; never raises."""
        end = time.time_ns()
        try:
            self.apply()
        except Exception:
            self.shell.log_failure("span attributes")
        try:
            self.span.end(end_time=end)
            if self.metrics is not None:
                self.metrics.record(self, end)
        except Exception:
            self.shell.log_failure("span end or metrics")
        # Break the environ <-> request cycle so reference counting frees the request at once:
        # a cycle per request leaves the span and its contexts to the cyclic GC (measurable cost).
        self.environ = _FINISHED

    def apply(self) -> None:
        span = self.span
        if not span.is_recording():
            return
        if self.route is not None:
            span.update_name(span_name(self.head.method, self.route))
            span.set_attribute(sc.HTTP_ROUTE, self.route)
        response = self.response
        if response is not None:
            attributes = response.attributes
            if len(attributes) == 1:  # the common case; one set_attribute costs 60% of set_attributes
                for key, value in attributes.items():
                    span.set_attribute(key, value)
            else:
                span.set_attributes(attributes)
        if self.error is not None:
            error = self.error
            span.set_attribute(sc.ERROR_TYPE, type(error).__qualname__)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif response is not None and response.error:
            span.set_status(Status(StatusCode.ERROR))


def set_route(environ: WSGIEnvironment, route: str) -> None:
    """Report the matched route template (`/users/{id}`) of the current request; the last call wins.

    The span is renamed `{METHOD} {route}` and gets `http.route`. Without the middleware it does nothing.
    """
    state = environ.get(_STATE_KEY)
    # `route` is checked at run time too: frameworks call this from untyped code.
    while isinstance(state, TracedRequest) and isinstance(route, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        state.route = route[: state.config.max_attribute_length]  # bounded once, for span and metric
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
    tracer = trace.get_tracer("otel_wsgi", __version__, tracer_provider, schema_url=SCHEMA_URL)
    shell = _Shell(cfg, tracer, propagator, (request_hook, response_hook), metrics_for(meter_provider, cfg))

    def middleware(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start = time.time_ns()
        try:
            request = shell.begin(environ, start_response, start)
        except Exception:
            shell.log_failure("span start")
            request = None
        if request is None:
            return app(environ, start_response)
        token = context.attach(request.context)
        try:
            if shell.request_hook is not None:
                request.run_request_hook(shell.request_hook)
            result = app(environ, request.start_response)
        except BaseException as exc:
            request.fail(exc)
            request.close(None)
            raise
        finally:
            context.detach(token)
        return request.body(result)

    return middleware
