"""`wrap()` end to end: real SDK spans in an `InMemorySpanExporter`, environs from wsgiref.

Each of the README's "Lifecycle guarantees" (numbered 1 to 6 there) has tests named `test_rule<N>_...`;
each catches a bug a generator-based body wrapper would have (a span left open when the server closes
early, a context leaking into the next request, a lost `wsgi.file_wrapper` or `len()`).
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import FileWrapper
from wsgiref.validate import validator

import pytest
from apps import (
    BODY,
    HEADERS,
    ClosingResult,
    Failures,
    FileLike,
    Headers,
    LazyResult,
    RecordingSampler,
    Server,
    SizedResult,
    SlottedFileWrapper,
    SupportsClose,
    Traced,
    close_body,
    duration_count,
    exc_info_app,
    file_app,
    generator_app,
    list_app,
    make_environ,
    metric_counts,
    raising_app,
    result_app,
    run,
    serve,
    uwsgi_file_wrapper,
)
from faults import RaisingPropagator, RaisingSampler
from opentelemetry import context, trace
from opentelemetry import metrics as metrics_api
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler
from opentelemetry.trace import NoOpTracerProvider, Span, SpanKind, StatusCode
from opentelemetry.util.types import Attributes
from typing_extensions import override

import otel_wsgi
from otel_wsgi import Config, record_exception, set_route, wrap
from otel_wsgi import semconv as sc
from otel_wsgi.pure import request_record
from otel_wsgi.types import SCHEMA_URL

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
REPO_ROOT = Path(__file__).resolve().parents[1]


# --- fixtures and helpers ---


def spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def one_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    found = spans(exporter)
    assert len(found) == 1, [span.name for span in found]
    return found[0]


def attributes(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


def current_ids() -> tuple[int, int]:
    span_context = trace.get_current_span().get_span_context()
    return span_context.trace_id, span_context.span_id


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def end_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """SDK warnings about ending a span twice (`Calling end() on an ended span.`)."""
    return [r.getMessage() for r in caplog.records if "ended span" in r.getMessage()]


# --- the span ---


def test_normal_request_span_name_kind_and_start_attributes_seen_by_sampler(
    traced: Traced, exporter: InMemorySpanExporter, sampler: RecordingSampler
) -> None:
    app = traced(list_app())
    environ = make_environ({"PATH_INFO": "/users/7", "QUERY_STRING": "a=1", "HTTP_HOST": "example.com:8080"})
    expected_start = dict(request_record(environ, Config()).attributes)

    body = app(environ, Server().start_response)
    assert b"".join(body) == b"".join(BODY)
    assert spans(exporter) == []  # iterated, not yet closed: the span is still open
    close_body(body)

    span = one_span(exporter)
    assert span.name == "GET"
    assert span.kind is SpanKind.SERVER
    assert [(call.name, call.kind, call.attributes) for call in sampler.calls] == [
        ("GET", SpanKind.SERVER, expected_start)
    ]
    assert expected_start[sc.URL_PATH] == "/users/7"
    assert expected_start[sc.SERVER_ADDRESS] == "example.com"
    assert expected_start[sc.SERVER_PORT] == 8080
    assert attributes(span) == {**expected_start, sc.HTTP_RESPONSE_STATUS_CODE: 200}
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None


def test_config_none_reads_the_environment_once_at_wrap_time(
    monkeypatch: pytest.MonkeyPatch,
    provider: TracerProvider,
    meter_provider: MeterProvider,
    exporter: InMemorySpanExporter,
) -> None:
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_PYTHON_WSGI_EXCLUDED_URLS", "/health")
    app = wrap(list_app(), tracer_provider=provider, meter_provider=meter_provider)
    monkeypatch.setenv("OTEL_PYTHON_WSGI_EXCLUDED_URLS", "/other")

    for path in ("/health", "/other"):
        run(app, make_environ({"PATH_INFO": path}))
    assert [attributes(span)[sc.URL_PATH] for span in spans(exporter)] == ["/other"]

    later = wrap(list_app(), tracer_provider=provider, meter_provider=meter_provider)
    run(later, make_environ({"PATH_INFO": "/health"}))  # a new wrap() reads the new environment
    assert [attributes(span)[sc.URL_PATH] for span in spans(exporter)] == ["/other", "/health"]


def test_tracer_scope_is_otel_wsgi_with_version_and_schema_url(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    run(traced(list_app()), make_environ())
    scope = one_span(exporter).instrumentation_scope
    assert scope is not None
    assert (scope.name, scope.version, scope.schema_url) == ("otel_wsgi", otel_wsgi.__version__, SCHEMA_URL)
    assert SCHEMA_URL.startswith("https://opentelemetry.io/schemas/")


GLOBAL_PROVIDER_SCRIPT = """
from wsgiref.util import setup_testing_defaults
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_wsgi import Config, wrap

def app(environ, start_response):
    start_response("200 OK", [])
    return [b"ok"]

traced = wrap(app, config=Config())  # before any global provider exists
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
environ = {}
setup_testing_defaults(environ)
body = traced(environ, lambda status, headers, exc_info=None: None)
b"".join(body)
body.close()
print(len(exporter.get_finished_spans()), exporter.get_finished_spans()[0].instrumentation_scope.name)
"""


def test_global_tracer_provider_set_after_wrap_is_used() -> None:
    # In a subprocess: the globals of this test process are never touched.
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDER_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "otel_wsgi"]


def test_traceparent_becomes_the_remote_parent(traced: Traced, exporter: InMemorySpanExporter) -> None:
    # propagator=None: the global propagator, W3C trace context by default.
    run(traced(list_app()), make_environ({"HTTP_TRACEPARENT": TRACEPARENT}))
    span = one_span(exporter)
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id, span.parent.is_remote) == (TRACE_ID, PARENT_ID, True)
    assert ids(span)[0] == TRACE_ID
    assert span.kind is SpanKind.SERVER


def test_untrusted_remote_context_starts_a_new_trace_linked_to_it(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    app = traced(list_app(), config=Config(trust_remote_context=False))
    run(app, make_environ({"HTTP_TRACEPARENT": TRACEPARENT}))
    span = one_span(exporter)
    assert span.parent is None
    assert ids(span)[0] != TRACE_ID
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [(TRACE_ID, PARENT_ID)]


# --- hooks ---

SAMPLERS = [
    pytest.param(ALWAYS_ON, True, id="recording"),
    pytest.param(ALWAYS_OFF, False, id="non-recording"),
]


@pytest.mark.parametrize(("sampler", "recording"), SAMPLERS)
def test_request_hook_runs_once_with_its_span_current(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    sampler: Sampler,
    recording: bool,
) -> None:
    seen: list[tuple[Span, Span, WSGIEnvironment]] = []

    def request_hook(span: Span, environ: WSGIEnvironment) -> None:
        seen.append((span, trace.get_current_span(), environ))

    app = wrap(
        generator_app(),
        config=Config(),
        tracer_provider=provider,
        meter_provider=meter_provider,
        request_hook=request_hook,
    )
    environ = make_environ()
    assert run(app, environ).body == b"".join(BODY)
    assert len(seen) == 1
    span, current, hook_environ = seen[0]
    assert current is span
    assert hook_environ is environ
    assert span.is_recording() is False  # ended by now
    assert span.get_span_context().is_valid
    assert [ids(found) for found in spans(exporter)] == (
        [(span.get_span_context().trace_id, span.get_span_context().span_id)] if recording else []
    )


@pytest.mark.parametrize(("sampler", "recording"), SAMPLERS)
def test_response_hook_runs_on_every_start_response_before_the_servers(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    sampler: Sampler,
    recording: bool,
) -> None:
    server = Server()
    recorded: list[bool] = []

    def response_hook(span: Span, environ: WSGIEnvironment, status: str, headers: Headers) -> None:
        server.events.append(f"hook {status}")
        recorded.append(span.is_recording())
        headers.append(("X-Hook", status))

    app = wrap(
        exc_info_app(),
        config=Config(),
        tracer_provider=provider,
        meter_provider=meter_provider,
        response_hook=response_hook,
    )
    run(app, make_environ(), server)
    assert server.events == [
        "hook 200 OK",
        "server 200 OK",
        "hook 500 Internal Server Error",
        "server 500 Internal Server Error",
    ]
    assert [headers[-1] for _, headers, _ in server.calls] == [
        ("X-Hook", "200 OK"),
        ("X-Hook", "500 Internal Server Error"),
    ]
    assert recorded == [recording, recording]
    assert len(spans(exporter)) == (1 if recording else 0)


@pytest.mark.parametrize("which", ["request_hook", "response_hook"])
def test_raising_hook_is_logged_once_per_wrap_then_at_debug_and_ignored(
    traced: Traced, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, which: str
) -> None:
    errors: list[ValueError] = []

    def hook(*args: object) -> None:
        errors.append(ValueError(f"hook failed {len(errors)}"))
        raise errors[-1]

    caplog.set_level(logging.DEBUG, logger="otel_wsgi")
    expected = run(exc_info_app(), make_environ())
    first = traced(exc_info_app(), **{which: hook})
    second = traced(exc_info_app(), **{which: hook})
    responses = [run(app, make_environ()) for app in (first, first, second)]

    assert responses == [expected] * 3
    records = [record for record in caplog.records if record.name == "otel_wsgi"]
    calls_per_request = 1 if which == "request_hook" else 2
    assert len(records) == len(errors) == 3 * calls_per_request

    def traceback_once(failures: int) -> list[int]:
        return [logging.ERROR] + [logging.DEBUG] * (failures - 1)

    # `first` served two requests, `second` one: each wrap() logs its first failure at ERROR.
    levels = [record.levelno for record in records]
    assert levels == traceback_once(2 * calls_per_request) + traceback_once(calls_per_request)
    first_record = records[0]
    assert first_record.exc_info is not None and first_record.exc_info[1] is errors[0]
    assert which in first_record.getMessage()
    assert len(spans(exporter)) == 3


# --- set_route ---


def routing_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
    """Reports a route at the call, then a more specific one while the body is iterated."""
    set_route(environ, "/users")
    start_response("200 OK", list(HEADERS))
    yield b"a"
    set_route(environ, "/users/{id}")
    yield b"b"


def test_set_route_renames_the_span_and_sets_http_route_last_call_wins(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    assert run(traced(routing_app), make_environ({"PATH_INFO": "/users/7"})).body == b"ab"
    span = one_span(exporter)
    assert span.name == "GET /users/{id}"
    assert attributes(span)[sc.HTTP_ROUTE] == "/users/{id}"


def test_set_route_without_middleware_does_nothing() -> None:
    environ = make_environ()
    before = dict(environ)
    set_route(environ, "/users/{id}")
    assert environ == before
    assert run(routing_app, make_environ()).body == b"ab"


def test_set_route_in_nested_wraps_reaches_the_outer_server_span(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    run(traced(traced(routing_app)), make_environ({"REQUEST_METHOD": "POST"}))
    by_kind = {span.kind: span for span in spans(exporter)}
    assert sorted(by_kind, key=str) == sorted([SpanKind.SERVER, SpanKind.INTERNAL], key=str)
    server = by_kind[SpanKind.SERVER]
    assert server.name == "POST /users/{id}"
    assert attributes(server)[sc.HTTP_ROUTE] == "/users/{id}"


# --- nested layers and suppression ---

CAPTURING = Config(
    capture_request_headers=("x-probe",), capture_response_headers=("content-type",), traceresponse=True
)


@pytest.mark.parametrize("outer", ["wrap", "tracer span"])
def test_nested_layer_is_an_internal_child_without_capture_response_headers_or_metrics(
    traced: Traced,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    reader: InMemoryMetricReader,
    outer: str,
) -> None:
    inner = traced(list_app(), config=CAPTURING)
    environ = {"HTTP_X_PROBE": "1"}
    # Control: alone, this layer captures both headers and adds `traceresponse`.
    alone = run(inner, make_environ(environ))
    alone_attributes = attributes(one_span(exporter))
    assert "traceresponse" in [name for name, _ in alone.headers]
    assert alone_attributes[sc.HTTP_REQUEST_HEADER + "x-probe"] == ("1",)
    assert alone_attributes[sc.HTTP_RESPONSE_HEADER + "content-type"] == ("text/plain",)
    exporter.clear()

    if outer == "wrap":
        nested = run(traced(inner), make_environ(environ))
    else:
        tracer = provider.get_tracer("framework")
        with tracer.start_as_current_span("framework", kind=SpanKind.SERVER):
            nested = run(inner, make_environ(environ))

    assert nested.headers == HEADERS
    found = spans(exporter)
    assert sorted(span.kind.name for span in found) == ["INTERNAL", "SERVER"]
    child = next(span for span in found if span.kind is SpanKind.INTERNAL)
    parent = next(span for span in found if span.kind is SpanKind.SERVER)
    assert child.parent is not None and parent.context is not None
    assert (child.parent.trace_id, child.parent.span_id) == ids(parent)
    assert not any(key.startswith("http.request.header.") for key in attributes(child))
    assert not any(key.startswith("http.response.header.") for key in attributes(child))
    # One duration point for the control request, one for an outer wrap, none for the nested layer.
    assert duration_count(reader) == (2 if outer == "wrap" else 1)


@pytest.mark.parametrize(
    ("tracer_provider", "expected"),
    [
        pytest.param(None, "sampled", id="sdk-sampled"),
        pytest.param(NoOpTracerProvider(), None, id="no-op-provider-invalid-span"),
    ],
)
def test_traceresponse_header_names_the_span_and_is_never_all_zero(
    provider: TracerProvider,
    meter_provider: MeterProvider,
    exporter: InMemorySpanExporter,
    tracer_provider: NoOpTracerProvider | None,
    expected: str | None,
) -> None:
    # W3C Trace Context Level 2: an all-zero trace id is invalid, so an invalid span sends no header.
    app = wrap(
        list_app(),
        config=Config(traceresponse=True),
        tracer_provider=provider if tracer_provider is None else tracer_provider,
        meter_provider=meter_provider,
    )
    response = run(app, make_environ())
    values = [value for name, value in response.headers if name == "traceresponse"]
    if expected is None:
        assert values == []
        assert spans(exporter) == []
    else:
        span_context = one_span(exporter).context
        assert span_context is not None and span_context.trace_flags.sampled
        trace_id, span_id, flags = span_context.trace_id, span_context.span_id, span_context.trace_flags
        assert values == [f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"]


def test_suppressed_instrumentation_passes_through(traced: Traced, exporter: InMemorySpanExporter) -> None:
    result = ClosingResult()
    app = traced(result_app(result))
    token = context.attach(context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        body = app(make_environ(), Server().start_response)
    finally:
        context.detach(token)
    assert body is result
    close_body(body)
    assert spans(exporter) == []


# --- status ---

STATUS_CASES = [
    pytest.param("200 OK", 200, StatusCode.UNSET, id="200"),
    pytest.param("302 Found", 302, StatusCode.UNSET, id="302"),
    pytest.param("404 Not Found", 404, StatusCode.UNSET, id="404-unset"),
    pytest.param("499 Client Closed", 499, StatusCode.UNSET, id="499-unset"),
    pytest.param("500 Internal Server Error", 500, StatusCode.ERROR, id="500-error"),
    pytest.param("503 Service Unavailable", 503, StatusCode.ERROR, id="503-error"),
]


@pytest.mark.parametrize(("status", "code", "expected"), STATUS_CASES)
def test_status_code_sets_the_span_status(
    traced: Traced, exporter: InMemorySpanExporter, status: str, code: int, expected: StatusCode
) -> None:
    run(traced(generator_app(status=status)), make_environ())
    span = one_span(exporter)
    assert span.status.status_code is expected
    assert attributes(span)[sc.HTTP_RESPONSE_STATUS_CODE] == code


def test_last_start_response_call_wins_with_exc_info(traced: Traced, exporter: InMemorySpanExporter) -> None:
    server = Server()
    environ = make_environ()
    run(traced(exc_info_app()), environ, server)
    assert [(status, exc_info) for status, _, exc_info in server.calls] == [
        ("200 OK", None),
        ("500 Internal Server Error", environ["test.exc_info"]),
    ]
    span = one_span(exporter)
    assert attributes(span)[sc.HTTP_RESPONSE_STATUS_CODE] == 500
    assert span.status.status_code is StatusCode.ERROR


# --- exceptions from the app ---


def failing(where: str, error: BaseException) -> tuple[WSGIApplication, ClosingResult | None]:
    """An app that raises `error` at the call, from its body's `__next__`, or from `close()`."""
    if where == "call":
        return raising_app(error), None
    if where == "iteration":
        result = ClosingResult(next_error=error)
    else:
        result = ClosingResult(close_error=error)
    return result_app(result), result


def drive(app: WSGIApplication, environ: WSGIEnvironment) -> BaseException:
    """Call, iterate and close like a server; return what was raised (it must raise)."""
    try:
        body = app(environ, Server().start_response)
    except BaseException as exc:
        return exc
    try:
        for _ in body:
            pass
    except BaseException as exc:
        close_body(body)
        return exc
    try:
        close_body(body)
    except BaseException as exc:
        return exc
    raise AssertionError("the app did not raise")


@pytest.mark.parametrize("where", ["call", "iteration", "close"])
def test_app_exception_is_recorded_and_the_same_object_reraised(
    traced: Traced, exporter: InMemorySpanExporter, where: str
) -> None:
    error = Failures.AppError("boom")
    app, result = failing(where, error)
    before = context.get_current()
    assert drive(traced(app), make_environ()) is error
    assert context.get_current() == before
    span = one_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "AppError: boom"
    assert attributes(span)[sc.ERROR_TYPE] == "Failures.AppError"
    assert [event.name for event in span.events] == ["exception"]
    assert dict(span.events[0].attributes or {})["exception.message"] == "boom"
    if result is not None:
        assert result.close_calls == 1


# --- lifecycle rule 1: the body wrapper ---

BODY_CASES = [
    pytest.param(lambda: [b"a", b"b"], 2, id="list"),
    pytest.param(lambda: SizedResult(), 1, id="sized-iterable"),
    pytest.param(lambda: (chunk for chunk in BODY), None, id="generator"),
    pytest.param(lambda: ClosingResult(), None, id="unsized-iterable"),
]


@pytest.mark.parametrize(("make_result", "length"), BODY_CASES)
def test_rule1_body_wrapper_is_a_slotted_iterator_with_len_only_when_the_result_has_one(
    traced: Traced, make_result: Callable[[], Iterable[bytes]], length: int | None
) -> None:
    result = make_result()
    body = traced(result_app(result))(make_environ(), Server().start_response)
    assert body is not result
    assert not inspect.isgenerator(body)
    assert iter(body) is body
    assert hasattr(type(body), "__next__")
    assert isinstance(body, SupportsClose)
    assert not hasattr(body, "__dict__")  # slotted
    if length is None:
        assert not hasattr(body, "__len__")
    else:
        assert isinstance(body, Sized) and isinstance(result, Sized)
        assert len(body) == len(result) == length
    close_body(body)


# --- lifecycle rule 2: close() ---


@pytest.mark.parametrize("consumed", [0, 1, 3], ids=["never-iterated", "partly-iterated", "exhausted"])
def test_rule2_close_calls_the_results_own_close_exactly_once(
    traced: Traced, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture, consumed: int
) -> None:
    result = ClosingResult()
    body = iter(traced(result_app(result))(make_environ(), Server().start_response))
    assert [next(body) for _ in range(consumed)] == list(BODY[:consumed])
    assert spans(exporter) == []
    close_body(body)
    close_body(body)  # a second close does nothing
    assert result.close_calls == 1
    assert result.iterator.close_calls == 0  # not the close() of iter(result)
    assert one_span(exporter).end_time is not None
    assert end_warnings(caplog) == []


def test_rule2_span_ends_once_when_the_inner_close_raises(
    traced: Traced, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    error = OSError("close failed")
    result = ClosingResult(close_error=error)
    body = traced(result_app(result))(make_environ(), Server().start_response)
    assert isinstance(body, SupportsClose)
    with pytest.raises(OSError) as raised:
        body.close()
    assert raised.value is error
    body.close()  # no second inner close, no second end
    assert result.close_calls == 1
    span = one_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert end_warnings(caplog) == []
    assert trace.get_current_span().get_span_context().is_valid is False


# --- lifecycle rule 3: context ---


def test_rule3_no_context_stays_attached_after_call(traced: Traced) -> None:
    before = context.get_current()
    body = traced(list_app())(make_environ({"HTTP_TRACEPARENT": TRACEPARENT}), Server().start_response)
    assert context.get_current() == before
    assert not trace.get_current_span().get_span_context().is_valid
    assert next(iter(body)) == BODY[0]
    assert context.get_current() == before
    close_body(body)
    assert context.get_current() == before


def test_rule3_span_is_current_in_the_body_during_next_and_close(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    seen: list[tuple[str, tuple[int, int]]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", list(HEADERS))
        try:
            seen.append(("next 1", current_ids()))
            yield b"a"
            seen.append(("next 2", current_ids()))
            yield b"b"
        finally:
            seen.append(("close", current_ids()))

    body = iter(traced(app)(make_environ(), Server().start_response))
    assert next(body) == b"a"
    assert current_ids() == (0, 0)  # between chunks, the server's own context
    assert next(body) == b"b"
    close_body(body)  # GeneratorExit inside the generator: its finally sees the span too
    span_ids = ids(one_span(exporter))
    assert seen == [("next 1", span_ids), ("next 2", span_ids), ("close", span_ids)]


def test_rule3_iterating_on_another_thread_does_not_fail_to_detach(
    traced: Traced, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[int, int]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", list(HEADERS))
        seen.append(current_ids())
        yield b"a"

    caplog.set_level(logging.DEBUG)
    before = context.get_current()
    body = traced(app)(make_environ({"HTTP_TRACEPARENT": TRACEPARENT}), Server().start_response)
    chunks: list[bytes] = []

    def consume() -> None:
        chunks.extend(body)
        close_body(body)

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join()
    assert chunks == [b"a"]
    assert context.get_current() == before
    span = one_span(exporter)
    assert seen == [ids(span)]
    assert ids(span)[0] == TRACE_ID
    assert [r.getMessage() for r in caplog.records if "detach" in r.getMessage().lower()] == []


def test_rule3_never_closed_response_does_not_poison_the_next_request(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    app = traced(generator_app())
    abandoned = iter(app(make_environ({"HTTP_TRACEPARENT": TRACEPARENT}), Server().start_response))
    assert next(abandoned) == BODY[0]  # started, then never closed by a broken server
    run(app, make_environ())
    second = one_span(exporter)
    assert second.kind is SpanKind.SERVER
    assert second.parent is None
    assert ids(second)[0] != TRACE_ID
    close_body(abandoned)
    assert len(spans(exporter)) == 2


# --- lifecycle rule 4: wsgi.file_wrapper ---


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(b"file contents " * 1000)
    return path


def test_rule4_file_wrapper_is_returned_itself_and_its_close_ends_the_span(
    traced: Traced, exporter: InMemorySpanExporter, data_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    returned: list[Iterable[bytes]] = []
    opened: list[io.BufferedReader] = []
    inner = file_app(str(data_file), opened)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        returned.append(inner(environ, start_response))
        return returned[-1]

    body = traced(app)(make_environ({"wsgi.file_wrapper": FileWrapper}), Server().start_response)
    assert body is returned[0]
    assert isinstance(body, FileWrapper)
    assert spans(exporter) == []
    body.close()
    assert opened[0].closed
    one_span(exporter)
    body.close()
    one_span(exporter)
    assert end_warnings(caplog) == []


def test_rule4_file_wrapper_through_the_wsgiref_server(
    traced: Traced, exporter: InMemorySpanExporter, data_file: Path
) -> None:
    opened: list[io.BufferedReader] = []
    output, errors = serve(traced(file_app(str(data_file), opened)), make_environ())
    assert errors == ""
    head, _, payload = output.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert payload == data_file.read_bytes()
    assert opened[0].closed
    assert attributes(one_span(exporter))[sc.HTTP_RESPONSE_STATUS_CODE] == 200


def test_rule4_file_wrapper_without_settable_close_falls_back_to_the_body_wrapper(
    traced: Traced, exporter: InMemorySpanExporter, data_file: Path
) -> None:
    opened: list[io.BufferedReader] = []
    environ = make_environ({"wsgi.file_wrapper": SlottedFileWrapper})
    body = traced(file_app(str(data_file), opened))(environ, Server().start_response)
    assert not isinstance(body, SlottedFileWrapper)
    assert b"".join(body) == data_file.read_bytes()
    assert spans(exporter) == []
    close_body(body)
    assert opened[0].closed
    one_span(exporter)


@pytest.mark.parametrize(
    "make_file",
    [
        pytest.param(FileLike, id="python-file-like"),
        pytest.param(lambda raw: raw, id="builtin-buffered-reader"),
    ],
)
def test_rule4_builtin_style_file_wrapper_keeps_identity(
    traced: Traced,
    exporter: InMemorySpanExporter,
    data_file: Path,
    make_file: Callable[[io.BufferedReader], FileLike | io.BufferedReader],
) -> None:
    # uWSGI's wsgi.file_wrapper is a builtin returning the file itself; uWSGI compares identity.
    with open(data_file, "rb") as raw:
        filelike = make_file(raw)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            start_response("200 OK", [])
            result: Iterable[bytes] = environ["wsgi.file_wrapper"](filelike)
            return result

        environ = make_environ({"wsgi.file_wrapper": uwsgi_file_wrapper})
        body = traced(app)(environ, Server().start_response)
        assert body is filelike
        assert spans(exporter) == []
        close_body(body)
        assert raw.closed
        close_body(body)
        one_span(exporter)


# --- lifecycle rule 5: start_response forwarding ---


def test_rule5_two_argument_server_start_response_works(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    received: list[tuple[str, Headers]] = []

    def start_response(status: str, headers: Headers) -> Callable[[bytes], object]:
        received.append((status, headers))
        return lambda data: None

    body = traced(list_app())(make_environ(), start_response)  # type: ignore[arg-type]  # pre-PEP 3333 server
    assert b"".join(body) == b"".join(BODY)
    close_body(body)
    assert received == [("200 OK", HEADERS)]
    one_span(exporter)


@pytest.mark.parametrize("keyword", [False, True], ids=["positional", "keyword"])
def test_rule5_exc_info_reaches_the_server_positionally_or_by_keyword(traced: Traced, keyword: bool) -> None:
    server = Server()
    environ = make_environ()
    run(traced(exc_info_app(keyword=keyword)), environ, server)
    assert server.calls[1][2] is environ["test.exc_info"]
    assert server.calls[0][2] is None


@pytest.mark.parametrize("body_size_metrics", [False, True], ids=["plain", "body-size-metrics"])
def test_rule5_start_response_returns_the_servers_write(traced: Traced, body_size_metrics: bool) -> None:
    writes: list[Callable[[bytes], object]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", list(HEADERS))
        writes.append(write)
        write(b"written ")
        return [b"returned"]

    server = Server()
    response = run(traced(app, config=Config(body_size_metrics=body_size_metrics)), make_environ(), server)
    assert response.body == b"written returned"
    assert server.written == [b"written "]
    if not body_size_metrics:
        assert writes[0] == server.write


# --- exit, interrupt and generator close (BaseException): not errors ---


@pytest.mark.parametrize("where", ["call", "iteration", "close"])
@pytest.mark.parametrize("make_error", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_base_exception_ends_the_span_without_error_and_restores_context(
    traced: Traced,
    exporter: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
    make_error: Callable[[], BaseException],
    where: str,
) -> None:
    error = make_error()
    app, result = failing(where, error)
    before = context.get_current()
    assert drive(traced(app), make_environ()) is error
    assert context.get_current() == before
    span = one_span(exporter)
    assert span.status.status_code is StatusCode.UNSET
    assert sc.ERROR_TYPE not in attributes(span)
    assert span.events == ()
    assert end_warnings(caplog) == []
    if result is not None:
        assert result.close_calls == 1


# --- lifecycle rule 6: tracing never breaks the app ---

MALFORMED_ENVIRONS = [
    pytest.param({"SERVER_PORT": "abc"}, (), id="server-port-abc"),
    pytest.param({"HTTP_HOST": "[::1"}, (), id="unclosed-ipv6-host"),
    pytest.param({"HTTP_HOST": b"example.com", "PATH_INFO": b"/caf\xc3\xa9"}, (), id="bytes-values"),
    pytest.param({"REQUEST_METHOD": b"GET", "QUERY_STRING": b"a=\xff"}, (), id="bytes-method-query"),
    pytest.param({"SERVER_PORT": 8080, "REQUEST_METHOD": 7, "REMOTE_PORT": -1}, (), id="ints"),
    pytest.param({"PATH_INFO": None, "HTTP_USER_AGENT": 3.5}, (), id="none-and-float"),
    pytest.param({"SERVER_NAME": bytearray(b"x"), "SERVER_PORT": [80]}, (), id="unhashable-values"),
    pytest.param({"HTTP_TRACEPARENT": "garbage", "HTTP_BAGGAGE": "\x00=\x01"}, (), id="junk-propagation"),
    pytest.param({"HTTP_TRACEPARENT": TRACEPARENT.encode()}, (), id="bytes-traceparent"),
    pytest.param({"HTTP_X_FORWARDED_FOR": "[", "HTTP_FORWARDED": "for=;;host=["}, (), id="bad-forwarded"),
    pytest.param(
        {},
        ("REQUEST_METHOD", "PATH_INFO", "SERVER_NAME", "SERVER_PORT", "HTTP_HOST", "wsgi.url_scheme"),
        id="missing-keys",
    ),
    pytest.param({}, ("SERVER_PROTOCOL", "SCRIPT_NAME", "QUERY_STRING"), id="missing-protocol"),
]
#: Every optional feature on, so malformed values reach every code path that reads the environ.
EVERYTHING = Config(
    semconv="dup",
    capture_request_headers=(".*",),
    capture_response_headers=(".*",),
    body_size_metrics=True,
    forwarded_headers=True,
)


def malformed(extra: Mapping[str, object], removed: tuple[str, ...]) -> WSGIEnvironment:
    environ = make_environ(extra)
    for key in removed:
        del environ[key]
    return environ


@pytest.mark.parametrize(("extra", "removed"), MALFORMED_ENVIRONS)
def test_rule6_malformed_environ_changes_neither_bytes_nor_exceptions(
    traced: Traced,
    exporter: InMemorySpanExporter,
    extra: Mapping[str, object],
    removed: tuple[str, ...],
) -> None:
    expected = run(generator_app(), malformed(extra, removed))
    for config in (Config(), EVERYTHING):
        assert run(traced(generator_app(), config=config), malformed(extra, removed)) == expected
    error = Failures.AppError("boom")
    assert drive(traced(raising_app(error), config=EVERYTHING), malformed(extra, removed)) is error
    found = spans(exporter)
    assert len(found) == 3
    assert found[-1].status.status_code is StatusCode.ERROR


@pytest.mark.parametrize(
    ("status", "code"),
    [
        pytest.param("200", 200, id="no-reason"),
        pytest.param("404", 404, id="no-reason-404"),
        pytest.param("abc", None, id="letters"),
        pytest.param("", None, id="empty"),
        pytest.param("2000 OK", None, id="four-digits"),
        pytest.param("99 Too Low", None, id="two-digits"),
    ],
)
def test_rule6_odd_status_lines_reach_the_server_unchanged(
    traced: Traced, exporter: InMemorySpanExporter, status: str, code: int | None
) -> None:
    expected = run(list_app(status=status), make_environ())
    for config in (Config(), EVERYTHING):
        assert run(traced(list_app(status=status), config=config), make_environ()) == expected
    assert expected.status == status
    for span in spans(exporter):
        assert attributes(span).get(sc.HTTP_RESPONSE_STATUS_CODE) == code


def test_rule6_raising_propagator_still_traces_the_request(
    traced: Traced, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    app = traced(generator_app(), propagator=RaisingPropagator())
    environ = {"HTTP_TRACEPARENT": TRACEPARENT}
    assert run(app, make_environ(environ)) == run(generator_app(), make_environ(environ))
    error = Failures.AppError("boom")
    assert drive(traced(raising_app(error), propagator=RaisingPropagator()), make_environ(environ)) is error
    found = spans(exporter)
    assert [(span.kind, span.parent) for span in found] == [(SpanKind.SERVER, None)] * 2
    assert any(
        record.exc_info is not None and str(record.exc_info[1]) == "propagator failed"
        for record in caplog.records
        if record.name == "otel_wsgi"
    )


@pytest.mark.parametrize("sampler", [RaisingSampler()])
def test_rule6_raising_sampler_passes_the_request_through(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = wrap(generator_app(), config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    before = context.get_current()
    assert run(app, make_environ()) == run(generator_app(), make_environ())
    error = Failures.AppError("boom")
    raising = wrap(raising_app(error), tracer_provider=provider, meter_provider=meter_provider)
    assert drive(raising, make_environ()) is error
    assert context.get_current() == before
    assert spans(exporter) == []
    assert any(record.name == "otel_wsgi" for record in caplog.records)


@pytest.mark.parametrize(
    "file_wrapper",
    [
        pytest.param(None, id="no-file-wrapper"),
        pytest.param(FileWrapper, id="file-wrapper-class"),
        pytest.param(uwsgi_file_wrapper, id="uwsgi-style-file-wrapper"),
    ],
)
def test_rule6_result_whose_getattr_raises_is_served_unchanged(
    traced: Traced, exporter: InMemorySpanExporter, file_wrapper: object
) -> None:
    # A lazy proxy answers only what it defines; our attribute probes must not turn into its errors.
    result = LazyResult()
    environ = make_environ({} if file_wrapper is None else {"wsgi.file_wrapper": file_wrapper})
    assert run(traced(result_app(result)), environ).body == b"".join(BODY)
    assert result.close_calls == 1
    assert one_span(exporter).end_time is not None


class ProxyWithoutClose:
    """A lazy proxy with no `close`: looking any attribute up raises RuntimeError."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(BODY)

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"proxy has no {name}")


def test_rule6_result_whose_close_lookup_raises_still_ends_the_span(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    assert run(traced(result_app(ProxyWithoutClose())), make_environ()).body == b"".join(BODY)
    assert one_span(exporter).end_time is not None


class RaisingHistogram(metrics_api.NoOpHistogram):
    """A histogram whose `record` raises: a broken metrics pipeline."""

    records = 0

    @override
    def record(
        self, amount: int | float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        RaisingHistogram.records += 1
        raise RuntimeError("metrics pipeline down")


class RaisingMeter(metrics_api.NoOpMeter):
    @override
    def create_histogram(self, name: str, unit: str = "", description: str = "", *,
                         explicit_bucket_boundaries_advisory: Sequence[float] | None = None
                         ) -> metrics_api.Histogram:  # fmt: skip
        return RaisingHistogram(name)


class RaisingMeterProvider(metrics_api.MeterProvider):
    @override
    def get_meter(self, name: str, version: str | None = None, schema_url: str | None = None,
                  attributes: Attributes = None) -> metrics_api.Meter:  # fmt: skip
        return RaisingMeter(name)


def test_rule6_raising_metrics_break_neither_the_response_nor_the_span(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    meters = RaisingMeterProvider()
    RaisingHistogram.records = 0
    app = wrap(list_app(), config=Config(), tracer_provider=provider, meter_provider=meters)
    assert run(app, make_environ()) == run(list_app(), make_environ())
    error = Failures.AppError("boom")
    raising = wrap(raising_app(error), config=Config(), tracer_provider=provider, meter_provider=meters)
    assert drive(raising, make_environ()) is error
    assert RaisingHistogram.records == 2
    assert [span.end_time is not None for span in spans(exporter)] == [True, True]


@pytest.mark.parametrize(
    "status",
    [pytest.param(b"200 OK", id="bytes"), pytest.param(["200 OK"], id="unhashable-list")],
)
def test_rule6_non_text_status_reaches_the_server_unchanged(
    traced: Traced, exporter: InMemorySpanExporter, status: object
) -> None:
    # A buggy app passes a status that is not a str: the server, not the tracer, must object.
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response(environ.get("test.status", status), list(HEADERS))
        return [b"odd"]

    traced_app = traced(app)
    server = Server()
    assert run(traced_app, make_environ(), server).body == b"odd"
    assert server.calls[0][0] is status
    assert one_span(exporter).end_time is not None
    # The odd status left nothing behind: the next, well-formed response is recorded as usual.
    exporter.clear()
    run(traced_app, make_environ({"test.status": "404 Not Found"}))
    assert attributes(one_span(exporter))[sc.HTTP_RESPONSE_STATUS_CODE] == 404


class BrokenSpan(trace.NonRecordingSpan):
    """A span of a third-party tracer that records, but whose every update raises."""

    @override
    def is_recording(self) -> bool:
        return True

    @override
    def set_attribute(self, key: str, value: object) -> None:
        raise RuntimeError("set_attribute failed")

    @override
    def set_attributes(self, attributes: Mapping[str, object]) -> None:
        raise RuntimeError("set_attributes failed")

    @override
    def update_name(self, name: str) -> None:
        raise RuntimeError("update_name failed")

    @override
    def add_event(self, name: str, attributes: Mapping[str, object] | None = None,
                  timestamp: int | None = None) -> None:  # fmt: skip
        raise RuntimeError("add_event failed")

    @override
    def end(self, end_time: int | None = None) -> None:
        BrokenSpan.ended += 1
        raise RuntimeError("end failed")

    ended = 0


class BrokenTracer(trace.NoOpTracer):
    @override
    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        return BrokenSpan(trace.SpanContext(TRACE_ID, PARENT_ID, is_remote=False))


class BrokenTracerProvider(trace.NoOpTracerProvider):
    @override
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return BrokenTracer()


def test_rule6_raising_span_methods_do_not_break_the_response(
    meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    BrokenSpan.ended = 0

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        set_route(environ, "/users/{id}")
        start_response("200 OK", list(HEADERS))
        return list(BODY)

    traced_app = wrap(
        app, config=Config(), tracer_provider=BrokenTracerProvider(), meter_provider=meter_provider
    )
    assert run(traced_app, make_environ()) == run(app, make_environ())
    assert BrokenSpan.ended == 1
    assert any(record.name == "otel_wsgi" for record in caplog.records)


def test_rule6_a_span_that_cannot_take_the_exception_event_still_gets_the_app_exception_through(
    meter_provider: MeterProvider, reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    BrokenSpan.ended = 0
    error = ValueError("boom")
    traced_app = wrap(
        raising_app(error),
        config=Config(),
        tracer_provider=BrokenTracerProvider(),
        meter_provider=meter_provider,
    )
    with pytest.raises(ValueError) as raised:
        traced_app(make_environ(), Server().start_response)
    assert raised.value is error
    assert BrokenSpan.ended == 1
    assert metric_counts(reader) == (0, 1)  # no longer active, and measured
    assert "exception event failed" in caplog.text


class HostileError(Exception):
    """An exception whose `str()` raises (the SDK's `record_exception` calls it)."""

    @override
    def __str__(self) -> str:
        raise RuntimeError("str() failed")


def test_rule6_hostile_exception_is_reraised_itself_and_ends_the_span(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    error = HostileError()
    assert drive(traced(raising_app(error)), make_environ()) is error
    assert one_span(exporter).end_time is not None


@pytest.mark.parametrize("container", [list, iter], ids=["list-body", "iterator-body"])
def test_rule6_non_bytes_chunks_reach_the_server_unchanged(
    traced: Traced, exporter: InMemorySpanExporter, container: Callable[[list[object]], Iterable[object]]
) -> None:
    # A buggy app yields an int: the server, not the tracer, must be the one to object.
    chunks: list[object] = [b"ok", 7, None]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return container(chunks)  # type: ignore[return-value]  # deliberately not bytes

    server = Server()
    body = traced(app)(make_environ(), server.start_response)
    assert list(body) == chunks
    close_body(body)
    assert one_span(exporter).end_time is not None


# --- per-app work happens once, at wrap time ---


def test_config_and_tracer_are_looked_up_at_wrap_time_not_per_request(
    monkeypatch: pytest.MonkeyPatch,
    provider: TracerProvider,
    meter_provider: MeterProvider,
    exporter: InMemorySpanExporter,
) -> None:
    app = wrap(list_app(), tracer_provider=provider, meter_provider=meter_provider)  # config from env
    lookups: list[str] = []

    def counting_from_env(env: Mapping[str, str] | None = None) -> Config:
        lookups.append("Config.from_env")
        return Config()

    def counting_get_tracer(*args: object, **kwargs: object) -> trace.Tracer:
        lookups.append("get_tracer")
        return trace.NoOpTracer()

    monkeypatch.setattr(Config, "from_env", counting_from_env)
    monkeypatch.setattr(provider, "get_tracer", counting_get_tracer)
    for _ in range(3):
        run(app, make_environ())
    assert lookups == []
    assert len(spans(exporter)) == 3


# --- wsgiref.validate and threads ---

VALIDATED_APPS = ["list", "generator", "file"]


@pytest.mark.parametrize("kind", VALIDATED_APPS)
def test_wsgiref_validator_around_the_app_and_the_middleware(
    traced: Traced, exporter: InMemorySpanExporter, data_file: Path, kind: str
) -> None:
    opened: list[io.BufferedReader] = []
    app = {"list": list_app(), "generator": generator_app(), "file": file_app(str(data_file), opened)}[kind]
    expected = data_file.read_bytes() if kind == "file" else b"".join(BODY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for checked in (validator(traced(validator(app))), validator(traced(app))):
            output, errors = serve(checked, make_environ())
            assert errors == ""
            head, _, payload = output.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200 OK")
            assert payload == expected
    assert [str(warning.message) for warning in caught] == []
    assert all(filelike.closed for filelike in opened)
    assert [span.kind for span in spans(exporter)] == [SpanKind.SERVER] * 2


THREADS, REQUESTS = 8, 20


def test_threads_with_distinct_traceparents_never_mix(traced: Traced, exporter: InMemorySpanExporter) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", list(HEADERS))
        yield b"%032x" % current_ids()[0]
        yield b"-%016x" % current_ids()[1]

    traced_app = traced(app)
    barrier = threading.Barrier(THREADS)

    def client(thread: int) -> list[tuple[int, int, bytes]]:
        barrier.wait(timeout=60)  # a safety net against a hang, not a timing assertion
        seen = []
        for request in range(REQUESTS):
            trace_id, parent_id = (thread + 1) << 64 | (request + 1), (thread + 1) << 32 | (request + 1)
            environ = make_environ({"HTTP_TRACEPARENT": f"00-{trace_id:032x}-{parent_id:016x}-01"})
            seen.append((trace_id, parent_id, run(traced_app, environ).body))
        return seen

    with ThreadPoolExecutor(THREADS) as pool:
        results = [row for rows in pool.map(client, range(THREADS)) for row in rows]

    by_parent = {parent_id: trace_id for trace_id, parent_id, _ in results}
    assert len(by_parent) == THREADS * REQUESTS
    found = spans(exporter)
    assert len(found) == THREADS * REQUESTS
    for span in found:
        assert span.parent is not None and span.parent.is_remote
        assert ids(span)[0] == span.parent.trace_id == by_parent[span.parent.span_id]
    # Inside each body the current span was that request's own span.
    assert sorted(body for _, _, body in results) == sorted(b"%032x-%016x" % ids(span) for span in found)
    for trace_id, _, body in results:
        assert body.startswith(b"%032x" % trace_id)


# --- record_exception ---


def handled_error_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    """Like a framework: catches the view's exception, reports it, answers 500."""
    try:
        raise LookupError("no such user")
    except LookupError as error:
        record_exception(environ, error)
    start_response("500 Internal Server Error", list(HEADERS))
    return [b"oops"]


def test_record_exception_marks_the_span_with_the_handled_exception(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    assert run(traced(handled_error_app), make_environ()).body == b"oops"
    span = one_span(exporter)
    assert attributes(span)[sc.ERROR_TYPE] == "LookupError"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_record_exception_then_the_same_exception_raised_is_recorded_once(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    error = LookupError("no such user")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        record_exception(environ, error)
        raise error

    with pytest.raises(LookupError) as raised:
        run(traced(app), make_environ())
    assert raised.value is error
    assert [event.name for event in one_span(exporter).events] == ["exception"]


def test_record_exception_without_middleware_does_nothing() -> None:
    environ = make_environ()
    before = dict(environ)
    record_exception(environ, LookupError("x"))
    assert environ == before
