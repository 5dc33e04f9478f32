"""The end of a request as a pure record, the span-naming policies, and the shell's internal seam.

Expected values come from the conventions (HTTP spans and metrics, W3C Trace Context Level 2) and the
reference instrumentation's documented span names, never from running the code under test.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from apps import make_environ, metric_counts, run
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from typing_extensions import override

from otel_wsgi import Config, set_route
from otel_wsgi.effects import build_middleware
from otel_wsgi.finish import (
    active_key,
    active_overflow_key,
    bounded_text,
    error_description,
    error_record,
    error_type,
    exception_event,
    exception_message,
    finish_record,
    metric_record,
    response_size,
    status_error_type,
    traceresponse,
)
from otel_wsgi.naming import PATH_NAMING, ROUTE_NAMING, path_span_name, reference_method, route_span_name
from otel_wsgi.pure import request_head, response_record
from otel_wsgi.types import OTHER, AttributeValue, ErrorRecord, Naming, RequestHead, ResponseRecord, Scope

STABLE: Config = Config()
OLD: Config = Config(semconv="old")
DUP: Config = Config(semconv="dup")
HEAD: RequestHead = RequestHead("GET", "https", "1.1")
OK: ResponseRecord = response_record("200 OK", [], STABLE)
NOT_FOUND: ResponseRecord = response_record("404 Not Found", [], STABLE)
UNAVAILABLE: ResponseRecord = response_record("503 Service Unavailable", [], STABLE)
MALFORMED: ResponseRecord = response_record("2OO OK", [], STABLE)


class Boom(Exception):
    """An app error whose qualified name shows the nesting."""

    class Inner(Exception):
        pass


class Unprintable(Exception):
    @override
    def __str__(self) -> str:
        raise RuntimeError("no text")


# --- naming policies ---

ROUTE_NAME_CASES = [
    pytest.param(HEAD, None, "GET", id="method-only"),
    pytest.param(HEAD, "/users/{id}", "GET /users/{id}", id="route"),
    pytest.param(HEAD, "", "GET", id="empty-route"),
    pytest.param(RequestHead(OTHER, "http", None), None, "HTTP", id="other-method"),
    pytest.param(RequestHead(OTHER, "http", None), "/x", "HTTP /x", id="other-with-route"),
    pytest.param(RequestHead("GET", "http", None, path="/users/42"), None, "GET", id="never-the-path"),
]


@pytest.mark.parametrize(("head", "route", "expected"), ROUTE_NAME_CASES)
def test_route_policy_names_spans_by_method_and_route(
    head: RequestHead, route: str | None, expected: str
) -> None:
    assert route_span_name(head, route) == expected
    assert ROUTE_NAMING.name(head, route) == expected and not ROUTE_NAMING.reads_path


PATH_NAME_CASES = [
    pytest.param(RequestHead("GET", "http", None, path="/users/42"), None, "GET /users/42", id="path"),
    pytest.param(RequestHead("GET", "http", None, path=""), None, "GET", id="empty-path"),
    pytest.param(RequestHead("GET", "http", None), None, "GET", id="no-path"),
    pytest.param(RequestHead(OTHER, "http", None, path="/users/42"), None, "HTTP", id="other-method"),
    pytest.param(RequestHead("POST", "http", None, path="/a"), "/{x}", "POST /{x}", id="route-wins"),
]


@pytest.mark.parametrize(("head", "route", "expected"), PATH_NAME_CASES)
def test_path_policy_names_spans_by_the_raw_path(head: RequestHead, route: str | None, expected: str) -> None:
    assert path_span_name(head, route) == expected
    assert PATH_NAMING.name(head, route) == expected and PATH_NAMING.reads_path


# (raw REQUEST_METHOD, capture all methods, the reference's method): stripped, upper-cased, then known or
# captured, else `_OTHER` (the reference's sanitising; our own spans keep methods case-sensitive).
REFERENCE_METHOD_CASES = [
    pytest.param("GET", False, "GET", id="known"),
    pytest.param("get", False, "GET", id="upper-cased"),
    pytest.param(" post\t", False, "POST", id="stripped"),
    pytest.param("PURGE", False, OTHER, id="unknown"),
    pytest.param("purge", True, "PURGE", id="captured-upper-cased"),
    pytest.param("", False, OTHER, id="empty"),
    pytest.param("", True, OTHER, id="empty-captured"),
    pytest.param("GE T", True, OTHER, id="not-a-token"),
]


@pytest.mark.parametrize(("raw", "capture_all", "expected"), REFERENCE_METHOD_CASES)
def test_reference_method_upper_cases_and_strips(raw: str, capture_all: bool, expected: str) -> None:
    assert reference_method(raw, capture_all=capture_all) == expected


HEAD_PATH_CASES = [
    pytest.param({"PATH_INFO": "/users/42"}, "/users/42", id="as-sent"),
    pytest.param({"PATH_INFO": "  /a b  "}, "/a b", id="stripped"),
    pytest.param({"PATH_INFO": "/caf\xc3\xa9"}, "/caf\xc3\xa9", id="latin-1-kept"),
    pytest.param({"PATH_INFO": b"/bytes"}, "/bytes", id="bytes"),
    pytest.param({"PATH_INFO": 42}, "", id="junk"),
    pytest.param({}, "", id="missing"),
]


@pytest.mark.parametrize(("environ", "expected"), HEAD_PATH_CASES)
def test_head_carries_the_raw_path_only_when_asked(environ: dict[str, object], expected: str) -> None:
    assert request_head(environ, STABLE, path=True).path == expected
    assert request_head(environ, STABLE).path is None


def test_head_path_is_bounded() -> None:
    head = request_head({"PATH_INFO": "/" + "x" * 100}, Config(max_attribute_length=10), path=True)
    assert head.path == "/xxxxxxxxx"


@given(
    path=st.none() | st.text() | st.binary() | st.integers(),
    method=st.sampled_from(["GET", "get", "PROPFIND", "", "X" * 100]),
    route=st.none() | st.text(max_size=20),
    capture_all=st.booleans(),
)
def test_path_names_are_total_and_bounded(
    path: object, method: str, route: str | None, capture_all: bool
) -> None:
    config = Config(max_attribute_length=32, capture_all_methods=capture_all)
    environ: dict[str, object] = {"REQUEST_METHOD": method} | ({} if path is None else {"PATH_INFO": path})
    head = request_head(environ, config, path=True)
    name = path_span_name(head, route)
    shown = "HTTP" if head.method == OTHER else head.method
    assert name.startswith(shown)
    assert len(name) <= len(shown) + 1 + max(32, len(route or ""))
    if route:
        assert name == route_span_name(head, route)  # a reported route wins over the path


SERVER_CASES = [
    pytest.param({"SERVER_NAME": "srv", "SERVER_PORT": "8000"}, ("srv", 8000), id="both"),
    pytest.param({"SERVER_NAME": "srv", "SERVER_PORT": "junk"}, ("srv", None), id="bad-port"),
    pytest.param({"SERVER_NAME": b"srv", "SERVER_PORT": 70000}, (None, None), id="bytes-name-port-range"),
    pytest.param({}, (None, None), id="missing"),
]


@pytest.mark.parametrize(("environ", "expected"), SERVER_CASES)
def test_head_narrows_the_server_for_the_old_metric_only(
    environ: dict[str, object], expected: tuple[str | None, int | None]
) -> None:
    assert request_head(environ, OLD).server == expected
    assert request_head(environ, DUP).server == expected
    assert request_head(environ, STABLE).server is None


def test_head_reads_the_request_length_only_for_body_size_metrics() -> None:
    environ = {"CONTENT_LENGTH": "12"}
    assert request_head(environ, Config(body_size_metrics=True)).length == 12
    assert request_head({"CONTENT_LENGTH": "-1"}, Config(body_size_metrics=True)).length is None
    assert request_head(environ, STABLE).length is None


# --- error.type, status description, sizes, traceresponse ---

ERROR_TYPE_CASES = [
    pytest.param(None, None, None, id="nothing"),
    pytest.param(None, OK, None, id="ok"),
    pytest.param(None, NOT_FOUND, None, id="4xx-is-no-error"),
    pytest.param(None, UNAVAILABLE, "503", id="5xx-code"),
    pytest.param(None, MALFORMED, OTHER, id="malformed-status"),
    pytest.param(ValueError("x"), None, "ValueError", id="exception"),
    pytest.param(Boom.Inner(), UNAVAILABLE, "Boom.Inner", id="exception-wins-qualified"),
]


@pytest.mark.parametrize(("error", "response", "expected"), ERROR_TYPE_CASES)
def test_error_type(error: Exception | None, response: ResponseRecord | None, expected: str | None) -> None:
    assert error_type(error, response) == expected


@pytest.mark.parametrize(
    ("code", "expected"), [(200, None), (499, None), (500, "500"), (599, "599"), (None, OTHER)]
)
def test_status_error_type(code: int | None, expected: str | None) -> None:
    assert status_error_type(code) == expected


DESCRIPTION_CASES = [
    pytest.param(ValueError("bad value"), "ValueError: bad value", id="message"),
    pytest.param(KeyError("k"), "KeyError: 'k'", id="str-of-the-exception"),
    pytest.param(RuntimeError(), "RuntimeError: ", id="empty"),
    pytest.param(Boom.Inner("x"), "Inner: x", id="plain-name"),
    pytest.param(Unprintable(), "Unprintable", id="str-raises"),
]


@pytest.mark.parametrize(("error", "expected"), DESCRIPTION_CASES)
def test_error_description(error: Exception, expected: str) -> None:
    assert error_description(error) == expected


# --- what is kept of an exception, and its event: bounded text, no exception object ---

ERROR_RECORD_CASES = [
    pytest.param(ValueError("bad"), "bad", 100, ErrorRecord("ValueError", "ValueError: bad"), id="message"),
    pytest.param(Boom.Inner("x"), "x", 100, ErrorRecord("Boom.Inner", "Inner: x"), id="qualified-kind"),
    pytest.param(Unprintable(), None, 100, ErrorRecord("Unprintable", "Unprintable"), id="str-raised"),
    pytest.param(Boom.Inner(), "", 10, ErrorRecord("Boom.Inner", "Inner: "), id="kind-fits-exactly"),
    pytest.param(Unprintable(), None, 10, ErrorRecord("Unprintabl", "Unprintabl"), id="kind-cut"),
    pytest.param(
        RuntimeError(),
        "y" * 50,
        20,
        ErrorRecord("RuntimeError", ("RuntimeError: " + "y" * 50)[:20]),
        id="cut",
    ),
]


@pytest.mark.parametrize(("error", "message", "limit", "expected"), ERROR_RECORD_CASES)
def test_error_record(error: Exception, message: str | None, limit: int, expected: ErrorRecord) -> None:
    assert error_record(error, message, limit) == expected


def test_exception_message_is_none_when_str_raises() -> None:
    assert (exception_message(ValueError("v")), exception_message(Unprintable())) == ("v", None)


BOUNDED_CASES = [
    pytest.param("short", 10, "short", id="fits"),
    pytest.param("0123456789", 10, "0123456789", id="exactly"),
    # The room left by the 5-character cut mark: the start gets the larger half, the end the other.
    pytest.param("abcdefghijklmnop", 11, "abc\n...\nnop", id="start-and-end"),
    pytest.param("abcdefghijklmnop", 12, "abcd\n...\nnop", id="start-gets-the-odd-one"),
    pytest.param("abcdefghijklmnop", 6, "abcdef", id="no-room-for-the-cut-mark"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "limit", "expected"), BOUNDED_CASES)
def test_bounded_text(text: str, limit: int, expected: str) -> None:
    assert bounded_text(text, limit) == expected
    assert len(bounded_text(text, limit)) <= limit


def raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def test_exception_event_is_what_the_sdk_records_when_it_fits(provider: TracerProvider) -> None:
    error = raised(Boom.Inner("it broke"))
    span = provider.get_tracer("t").start_span("s")
    span.record_exception(error)
    span.end()
    assert isinstance(span, ReadableSpan)
    (event,) = span.events
    assert dict(exception_event(error, str(error), 100_000)) == dict(event.attributes or {})


def test_exception_event_is_bounded() -> None:
    error = raised(RuntimeError("x" * 1_000_000))
    event = exception_event(error, str(error), 200)
    assert {key: len(str(value)) <= 200 for key, value in event.items()} == dict.fromkeys(event, True)
    stacktrace = str(event["exception.stacktrace"])
    assert stacktrace.startswith("Traceback (most recent call last):") and "\n...\n" in stacktrace
    assert event["exception.type"] == "RuntimeError"


def test_exception_event_of_an_unprintable_exception_has_no_message() -> None:
    event = exception_event(raised(Unprintable()), None, 4096)
    assert "exception.message" not in event
    assert str(event["exception.type"]).endswith("Unprintable")


def _notes_raise(self: BaseException) -> list[str]:
    raise RuntimeError("no notes")


# An exception the `traceback` module cannot format: its `__notes__` lookup raises (built with `type`, as
# a class statement may not turn BaseException's writable `__notes__` into a read-only property).
UnformattableError = type("UnformattableError", (Exception,), {"__notes__": property(_notes_raise)})


@pytest.mark.skipif(
    sys.version_info >= (3, 13), reason="3.13's traceback module survives a raising __notes__"
)
def test_exception_event_without_a_stack_trace_when_it_cannot_be_formatted() -> None:
    error = UnformattableError("m")
    assert isinstance(error, Exception)
    event = exception_event(raised(error), "m", 4096)
    assert set(event) == {"exception.type", "exception.message", "exception.escaped"}


def test_exception_event_without_a_stack_trace_when_formatting_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.13 formats even the exception above; a failing formatter stands for whatever a later
    # release or a broken traceback object could still raise.
    def failing(*args: object, **kwargs: object) -> list[str]:
        raise RuntimeError("cannot format")

    monkeypatch.setattr(traceback, "format_exception", failing)
    event = exception_event(raised(ValueError("m")), "m", 4096)
    assert set(event) == {"exception.type", "exception.message", "exception.escaped"}


def test_a_failing_finish_record_still_ends_the_request_and_leaves_the_active_count(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    def failing_name(head: RequestHead, route: str | None) -> str:
        if route is not None:
            raise RuntimeError("naming failed")
        return head.method

    app = build_middleware(
        users, config=STABLE, tracer_provider=provider, meter_provider=meter_provider,
        naming=Naming(failing_name),
    )  # fmt: skip
    assert run(app, make_environ({"QUERY_STRING": "route"})) == run(
        users, make_environ({"QUERY_STRING": "route"})
    )
    assert len(exporter.get_finished_spans()) == 1
    assert metric_counts(reader) == (0, 0)  # no record, so no duration: but no request left active


def test_finish_record_bounds_the_span_name_and_the_description() -> None:
    config = Config(max_attribute_length=12)
    record = finish_record(HEAD, "/segment" * 10, None, ValueError("m" * 100), config)
    assert record.span_name == ("GET " + "/segment" * 10)[:12]
    assert record.description == ("ValueError: " + "m" * 100)[:12]


def test_response_size_is_the_bytes_sent_unless_the_server_sends_a_file() -> None:
    sized = response_record("200 OK", [("Content-Length", "1000")], Config(body_size_metrics=True))
    assert response_size(sized, 10, False) == 10
    assert response_size(sized, 0, True) == 1000
    assert response_size(OK, 7, True) == 7  # no Content-Length: what we counted
    assert response_size(None, 0, False) == 0


TRACE_ID, SPAN_ID = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331

TRACERESPONSE_CASES = [
    pytest.param([], 1, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", id="sampled"),
    pytest.param(
        [("X-A", "1")], 0, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", id="unsampled"
    ),
    pytest.param([("TraceResponse", "app's")], 1, None, id="app-set-one"),
    pytest.param([("x", 1), "junk"], 1, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", id="junk"),
]


@pytest.mark.parametrize(("headers", "flags", "expected"), TRACERESPONSE_CASES)
def test_traceresponse_value(headers: list[tuple[str, str]], flags: int, expected: str | None) -> None:
    assert traceresponse(headers, TRACE_ID, SPAN_ID, flags) == expected


def test_traceresponse_never_carries_all_zero_ids() -> None:
    assert traceresponse([], 0, SPAN_ID, 1) is None
    assert traceresponse([], TRACE_ID, 0, 1) is None


# --- metric sets ---


def test_metric_record_in_each_mode() -> None:
    head = RequestHead("GET", "http", "1.1", server=("srv", 8000))
    stable = {
        "http.request.method": "GET",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "http.response.status_code": 503,
        "http.route": "/r",
        "error.type": "503",
    }
    old = {
        "http.method": "GET",
        "http.scheme": "http",
        "http.flavor": "1.1",
        "http.status_code": 503,
        "http.server_name": "srv",
        "net.host.port": 8000,
    }
    assert metric_record(head, 503, "/r", "503", STABLE) == metric_record(head, 503, "/r", "503", STABLE)
    assert dict(metric_record(head, 503, "/r", "503", STABLE).stable) == stable
    assert dict(metric_record(head, 503, "/r", "503", STABLE).old) == {}
    assert dict(metric_record(head, 503, "/r", "503", OLD).stable) == {}
    assert dict(metric_record(head, 503, "/r", "503", OLD).old) == old
    both = metric_record(head, 503, "/r", "503", DUP)
    assert (dict(both.stable), dict(both.old)) == (stable, old)


def test_metric_record_leaves_out_what_is_unknown() -> None:
    record = metric_record(RequestHead("GET", "http", None, server=("", None)), None, None, None, DUP)
    assert dict(record.stable) == {"http.request.method": "GET", "url.scheme": "http"}
    assert dict(record.old) == {"http.method": "GET", "http.scheme": "http"}


# --- the active-requests set ---

CAPTURE_ALL: Config = Config(capture_all_methods=True, forwarded_headers=True)
ACTIVE_CASES = [
    pytest.param(HEAD, STABLE, (("http.request.method", "GET"), ("url.scheme", "https")), True, id="known"),
    pytest.param(RequestHead(OTHER, "http", None), STABLE,
                 (("http.request.method", OTHER), ("url.scheme", "http")), True, id="other-method-lasts"),
    pytest.param(RequestHead("BREW", "http", None), CAPTURE_ALL,
                 (("http.request.method", "BREW"), ("url.scheme", "http")), False, id="captured-method"),
    pytest.param(RequestHead("GET", "gopher", None), CAPTURE_ALL,
                 (("http.request.method", "GET"), ("url.scheme", "gopher")), False, id="forwarded-scheme"),
    pytest.param(HEAD, OLD, (("http.method", "GET"), ("http.scheme", "https")), True, id="old"),
    pytest.param(HEAD, DUP, (("http.request.method", "GET"), ("url.scheme", "https"), ("http.method", "GET"),
                             ("http.scheme", "https")), True, id="dup"),
    pytest.param(RequestHead("PURGE", "http", None), Config(known_methods=frozenset({"PURGE"})),
                 (("http.request.method", "PURGE"), ("url.scheme", "http")), True, id="configured-method"),
]  # fmt: skip


@pytest.mark.parametrize(("head", "config", "attributes", "lasting"), ACTIVE_CASES)
def test_active_key_is_method_and_scheme_lasting_only_when_configuration_bounds_it(
    head: RequestHead, config: Config, attributes: tuple[tuple[str, AttributeValue], ...], lasting: bool
) -> None:
    key = active_key(head, config)
    assert (key.attributes, key.lasting) == (attributes, lasting)


@pytest.mark.parametrize("config", [STABLE, OLD, DUP])
def test_active_overflow_key_is_other_and_never_lasts(config: Config) -> None:
    key = active_overflow_key(config)
    assert {value for _, value in key.attributes} == {OTHER}
    assert [name for name, _ in key.attributes] == [name for name, _ in active_key(HEAD, config).attributes]
    assert not key.lasting


# --- finish_record ---

FINISH_CASES = [
    pytest.param(
        None, OK, None, None, {"http.response.status_code": 200}, False, None, id="ok"
    ),
    pytest.param(
        "/users/{id}", OK, None, "GET /users/{id}",
        {"http.response.status_code": 200, "http.route": "/users/{id}"}, False, None, id="route",
    ),
    pytest.param(
        None, NOT_FOUND, None, None, {"http.response.status_code": 404}, False, None, id="4xx-unset",
    ),
    pytest.param(
        None, UNAVAILABLE, None, None,
        {"http.response.status_code": 503, "error.type": "503"}, True, None, id="5xx-error-no-description",
    ),
    pytest.param(None, MALFORMED, None, None, {"error.type": OTHER}, True, None, id="malformed-status"),
    pytest.param(
        None, None, ValueError("bad"), None, {"error.type": "ValueError"}, True, "ValueError: bad",
        id="exception-before-start-response",
    ),
    pytest.param(
        "/r", UNAVAILABLE, Boom.Inner("x"), "GET /r",
        {"http.response.status_code": 503, "error.type": "Boom.Inner", "http.route": "/r"}, True,
        "Inner: x", id="exception-wins-over-5xx",
    ),
    pytest.param(None, None, None, None, {}, False, None, id="nothing-seen"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("route", "response", "error", "name", "attributes", "is_error", "description"), FINISH_CASES
)
def test_finish_record(
    route: str | None,
    response: ResponseRecord | None,
    error: Exception | None,
    name: str | None,
    attributes: dict[str, AttributeValue],
    is_error: bool,
    description: str | None,
) -> None:
    record = finish_record(HEAD, route, response, error, STABLE)
    assert record.span_name == name
    assert dict(record.attributes) == attributes
    assert (record.error, record.description) == (is_error, description)
    metric = dict(record.metric.stable)
    assert metric.get("error.type") == attributes.get("error.type")
    assert metric.get("http.route") == route
    assert metric.get("http.response.status_code") == attributes.get("http.response.status_code")


def test_finish_record_never_edits_the_response_record() -> None:
    before = dict(UNAVAILABLE.attributes)
    finish_record(HEAD, "/r", UNAVAILABLE, ValueError(), STABLE)
    assert dict(UNAVAILABLE.attributes) == before


def test_finish_record_uses_the_naming_policy() -> None:
    head = RequestHead("GET", "http", None, path="/a")
    assert finish_record(head, "/{x}", OK, None, STABLE, lambda h, r: f"{h.path}|{r}").span_name == "/a|/{x}"


@given(
    route=st.none() | st.text(max_size=8),
    status=st.text(max_size=12),
    error=st.none() | st.sampled_from([ValueError("v"), Unprintable(), Boom.Inner()]),
    mode=st.sampled_from(["stable", "dup"]),
)
def test_finish_record_is_total_and_consistent(
    route: str | None, status: str, error: Exception | None, mode: str
) -> None:
    config = STABLE if mode == "stable" else DUP
    response = response_record(status, [], config)
    record = finish_record(HEAD, route, response, error, config)
    assert record.error == (error is not None or response.error)
    assert ("error.type" in record.attributes) == record.error == ("error.type" in record.metric.stable)
    assert (record.span_name is None) == (route is None)
    assert (record.description is None) == (error is None)


# --- the seam: build_middleware(scope=..., naming=...) ---


def users(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ.get("QUERY_STRING") == "route":
        set_route(environ, "/users/{id}")
    start_response("200 OK", [])
    return [b"ok"]


def test_seam_names_spans_by_path_and_reports_the_given_scope(
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    meter_provider: MeterProvider,
    reader: InMemoryMetricReader,
) -> None:
    scope = Scope("example.scope", "9.9", "https://opentelemetry.io/schemas/1.11.0")
    app = build_middleware(
        users,
        config=STABLE,
        tracer_provider=provider,
        meter_provider=meter_provider,
        scope=scope,
        naming=PATH_NAMING,
    )
    run(app, make_environ({"PATH_INFO": " /users/42 "}))
    run(app, make_environ({"PATH_INFO": "/users/7", "QUERY_STRING": "route"}))
    run(app, make_environ({"PATH_INFO": "/users/42", "REQUEST_METHOD": "BREW"}))
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["GET /users/42", "GET /users/{id}", "HTTP"]
    for span in spans:
        assert span.instrumentation_scope is not None
        assert (span.instrumentation_scope.name, span.instrumentation_scope.version) == (
            "example.scope",
            "9.9",
        )
        assert span.instrumentation_scope.schema_url == scope.schema_url
    data = reader.get_metrics_data()
    assert data is not None
    scopes = {
        (found.scope.name, found.scope.version, found.scope.schema_url)
        for resource in data.resource_metrics
        for found in resource.scope_metrics
    }
    assert scopes == {("example.scope", "9.9", scope.schema_url)}


def test_seam_defaults_are_what_wrap_uses(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    app = build_middleware(users, config=STABLE, tracer_provider=provider)
    run(app, make_environ({"PATH_INFO": "/users/42"}))
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET"
    assert span.instrumentation_scope is not None and span.instrumentation_scope.name == "otel_wsgi"
    assert span.status.status_code is StatusCode.UNSET


def test_an_exception_whose_str_raises_still_reaches_the_server_and_ends_the_span(
    provider: TracerProvider, exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    error = Unprintable()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise error

    wrapped = build_middleware(app, config=STABLE, tracer_provider=provider)
    with pytest.raises(Unprintable) as raised:
        wrapped(make_environ(), lambda status, headers, exc_info=None: lambda data: None)
    assert raised.value is error
    (span,) = exporter.get_finished_spans()
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "Unprintable")
    assert span.attributes is not None and span.attributes["error.type"] == "Unprintable"
    assert "exception event failed" in caplog.text
