"""Each `Config` field's effect on exported spans, through `wrap()` and the real SDK."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pytest
from apps import Headers, RecordingSampler, Response, Server, Traced, make_environ, run
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_wsgi import Config, set_route
from otel_wsgi.config import MIN_ATTRIBUTE_LENGTH
from otel_wsgi.types import SemconvMode

MODES: tuple[SemconvMode, ...] = ("stable", "old", "dup")
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
REMOTE_TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
REMOTE_SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{REMOTE_TRACE_ID:032x}-{REMOTE_SPAN_ID:016x}-01"


# --- helpers: a configurable app, and one request through `wrap()` with the test's providers ---


@dataclass
class Seen:
    """What the app saw while it ran: the current span's context and the baggage."""

    span_context: trace.SpanContext | None = None
    baggage: Mapping[str, object] = field(default_factory=dict)


def make_app(
    headers: Sequence[tuple[str, str]] = (("Content-Type", "text/plain"),),
    *,
    route: str | None = None,
    seen: Seen | None = None,
    body: bytes = b"hello",
) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if route is not None:
            set_route(environ, route)
        if seen is not None:
            seen.span_context = trace.get_current_span().get_span_context()
            seen.baggage = dict(baggage.get_all())
        start_response("200 OK", list(headers))
        return [body]

    return app


@dataclass
class Probe:
    """Wrap apps with the test's providers and the W3C propagators; run one request, return its span."""

    traced: Traced
    exporter: InMemorySpanExporter

    def wrap(self, app: WSGIApplication, config: Config) -> WSGIApplication:
        return self.traced(app, config=config, propagator=PROPAGATOR)

    def request(
        self, config: Config, environ: WSGIEnvironment | None = None, app: WSGIApplication | None = None
    ) -> tuple[ReadableSpan, Response]:
        """Run one request; return its one exported span and what the client got."""
        response = run(self.wrap(app or make_app(), config), environ)
        (span,) = self.exporter.get_finished_spans()
        return span, response

    def attributes(self, config: Config, environ: WSGIEnvironment | None = None) -> Mapping[str, object]:
        span, _ = self.request(config, environ)
        return dict(span.attributes or {})


@pytest.fixture
def probe(traced: Traced, exporter: InMemorySpanExporter) -> Probe:
    return Probe(traced, exporter)


def serialized(span: ReadableSpan) -> str:
    """Return everything the exporter would ship for a span, as one searchable string."""
    text: str = span.to_json()
    json.loads(text)  # it is real JSON, not a repr
    return text


# --- excluded_urls ---

EXCLUSION_CASES = [
    pytest.param(("/health",), {"PATH_INFO": "/health"}, True, id="path-substring"),
    pytest.param((r"/health$",), {"PATH_INFO": "/healthz"}, False, id="anchored-end-misses"),
    pytest.param(("^/health",), {"PATH_INFO": "/health"}, False, id="searched-in-full-url"),
    pytest.param((r"^http://example\.com/health$",), {"PATH_INFO": "/health"}, True, id="full-url"),
    pytest.param(("^https://",), {"wsgi.url_scheme": "https", "HTTP_HOST": "example.com"}, True, id="scheme"),
    pytest.param(("^https://",), {}, False, id="scheme-misses"),
    pytest.param(
        (r"example\.com:8080/x",), {"HTTP_HOST": "example.com:8080", "PATH_INFO": "/x"}, True, id="port"
    ),
    pytest.param((r"//api\.",), {"HTTP_HOST": "api.example.com"}, True, id="host"),
    pytest.param(("token=abc",), {"QUERY_STRING": "token=abc"}, False, id="query-not-searched"),
    pytest.param((r"\?",), {"QUERY_STRING": "a=1"}, False, id="no-question-mark"),
    pytest.param(("/mnt/x",), {"SCRIPT_NAME": "/mnt", "PATH_INFO": "/x"}, True, id="script-name"),
    pytest.param(("/nomatch", "/x$"), {"PATH_INFO": "/x"}, True, id="second-pattern"),
]


@pytest.mark.parametrize(("patterns", "overrides", "excluded"), EXCLUSION_CASES)
def test_excluded_urls_are_searched_in_the_url_without_query(
    probe: Probe, patterns: tuple[str, ...], overrides: dict[str, str], excluded: bool
) -> None:
    environ = make_environ(**{"HTTP_HOST": "example.com", **overrides})
    response = run(probe.wrap(make_app(), Config(excluded_urls=patterns)), environ)
    assert response.body == b"hello"
    assert len(probe.exporter.get_finished_spans()) == (0 if excluded else 1)


def test_excluded_request_runs_the_app_untouched(probe: Probe) -> None:
    returned: list[bytes] = [b"untouched"]
    seen: list[tuple[WSGIEnvironment, StartResponse, trace.Span]] = []

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen.append((environ, start_response, trace.get_current_span()))
        start_response("200 OK", [("X-App", "1")])
        return returned

    server = Server()
    environ = make_environ(PATH_INFO="/health")
    before = dict(environ)
    result = probe.wrap(app, Config(excluded_urls=("/health",), traceresponse=True))(
        environ, server.start_response
    )
    assert result is returned
    ((app_environ, app_start_response, current),) = seen
    assert app_environ is environ
    assert app_environ == before
    assert app_start_response == server.start_response
    assert not current.get_span_context().is_valid
    assert server.calls == [("200 OK", [("X-App", "1")], None)]
    assert probe.exporter.get_finished_spans() == ()


# --- header capture ---

REQUEST_CAPTURE_CASES = [
    pytest.param(("x-custom",), {"HTTP_X_CUSTOM": "v1"}, {"x-custom": ("v1",)}, id="literal"),
    pytest.param(("X-CUSTOM",), {"HTTP_X_CUSTOM": "v1"}, {"x-custom": ("v1",)}, id="literal-upper"),
    pytest.param(("x_custom",), {"HTTP_X_CUSTOM": "v1"}, {"x-custom": ("v1",)}, id="literal-underscore"),
    pytest.param(
        ("content-type", "content-length"),
        {"CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "12"},
        {"content-type": ("application/json",), "content-length": ("12",)},
        id="cgi-headers",
    ),
    pytest.param(
        ("content-.*",),
        {"CONTENT_TYPE": "text/csv", "CONTENT_LENGTH": "3"},
        {"content-type": ("text/csv",), "content-length": ("3",)},
        id="cgi-headers-regex",
    ),
    pytest.param(
        ("x-.*",),
        {"HTTP_X_A": "1", "HTTP_X_B_C": "2", "HTTP_ACCEPT": "*/*"},
        {"x-a": ("1",), "x-b-c": ("2",)},
        id="regex",
    ),
    pytest.param(
        ("X-[AB]",), {"HTTP_X_A": "1", "HTTP_X_C": "3"}, {"x-a": ("1",)}, id="regex-case-insensitive"
    ),
    pytest.param(("x-cust",), {"HTTP_X_CUSTOM": "v"}, {}, id="literal-full-match"),
    pytest.param(("x-cust.",), {"HTTP_X_CUSTOM": "v"}, {}, id="regex-full-match"),
    pytest.param(
        ("accept",), {"HTTP_ACCEPT": "a/b, c/d;q=0.5"}, {"accept": ("a/b, c/d;q=0.5",)}, id="joined"
    ),
    pytest.param(("x-missing",), {}, {}, id="absent"),
    pytest.param(("x-empty",), {"HTTP_X_EMPTY": ""}, {"x-empty": ("",)}, id="empty-value"),
]


@pytest.mark.parametrize("mode", ["stable", "dup"])
@pytest.mark.parametrize(("patterns", "headers", "expected"), REQUEST_CAPTURE_CASES)
def test_request_headers_matching_in_full_and_any_case_are_captured(
    probe: Probe,
    mode: SemconvMode,
    patterns: tuple[str, ...],
    headers: dict[str, str],
    expected: dict[str, tuple[str, ...]],
) -> None:
    attributes = probe.attributes(
        Config(semconv=mode, capture_request_headers=patterns), make_environ(**headers)
    )
    captured = {k.removeprefix("http.request.header."): v for k, v in attributes.items() if "header" in k}
    assert captured == expected


RESPONSE_CAPTURE_CASES = [
    pytest.param(("x-multi",), [("X-Multi", "a"), ("x-multi", "b")], {"x-multi": ("a", "b")}, id="repeated"),
    pytest.param(
        ("x-.*",),
        [("X-One", "1"), ("Content-Type", "text/plain"), ("X-Two", "2, 3")],
        {"x-one": ("1",), "x-two": ("2, 3",)},
        id="regex",
    ),
    pytest.param(
        ("CONTENT-TYPE",), [("content-type", "text/html")], {"content-type": ("text/html",)}, id="case"
    ),
    pytest.param(("content",), [("Content-Type", "text/plain")], {}, id="full-match"),
]


@pytest.mark.parametrize("mode", ["stable", "dup"])
@pytest.mark.parametrize(("patterns", "headers", "expected"), RESPONSE_CAPTURE_CASES)
def test_response_headers_are_captured_per_occurrence_and_sent_unchanged(
    probe: Probe,
    mode: SemconvMode,
    patterns: tuple[str, ...],
    headers: list[tuple[str, str]],
    expected: dict[str, tuple[str, ...]],
) -> None:
    span, response = probe.request(
        Config(semconv=mode, capture_response_headers=patterns), app=make_app(headers)
    )
    assert response.headers == headers
    attributes = dict(span.attributes or {})
    captured = {k.removeprefix("http.response.header."): v for k, v in attributes.items() if "header" in k}
    assert captured == expected


def test_old_mode_header_names_use_underscores_and_join_repeated_values(probe: Probe) -> None:
    config = Config(
        semconv="old", capture_request_headers=("custom-header",), capture_response_headers=("x-multi-value",)
    )
    app = make_app([("X-Multi-Value", "a"), ("X-Multi-Value", "b"), ("x-multi-value", "c")])
    span, _ = probe.request(config, make_environ(HTTP_CUSTOM_HEADER="v"), app)
    headers = {k: v for k, v in (span.attributes or {}).items() if ".header." in k}
    assert headers == {
        "http.request.header.custom_header": ("v",),
        "http.response.header.x_multi_value": ("a,b,c",),
    }


def test_dup_mode_headers_use_the_stable_form(probe: Probe) -> None:
    config = Config(
        semconv="dup", capture_request_headers=("custom-header",), capture_response_headers=("x-m",)
    )
    span, _ = probe.request(
        config, make_environ(HTTP_CUSTOM_HEADER="v"), make_app([("X-M", "a"), ("X-M", "b")])
    )
    headers = {k: v for k, v in (span.attributes or {}).items() if ".header." in k}
    assert headers == {"http.request.header.custom-header": ("v",), "http.response.header.x-m": ("a", "b")}


@pytest.mark.parametrize("patterns", [("x-tenant",), ("x-ten.*",)], ids=["literal", "regex"])
def test_request_headers_are_given_to_the_sampler(
    probe: Probe, sampler: RecordingSampler, patterns: tuple[str, ...]
) -> None:
    probe.request(Config(capture_request_headers=patterns), make_environ(HTTP_X_TENANT="acme"))
    (call,) = sampler.calls
    assert call.attributes["http.request.header.x-tenant"] == ("acme",)
    assert call.attributes["http.request.method"] == "GET"


# --- sanitizing ---

SANITIZE_CASES = [
    pytest.param(
        Config(capture_request_headers=("authorization",)),
        "HTTP_AUTHORIZATION",
        "authorization",
        id="default",
    ),
    pytest.param(
        Config(capture_request_headers=("Authorization",)), "HTTP_AUTHORIZATION", "authorization", id="upper"
    ),
    pytest.param(Config(capture_request_headers=(".*",)), "HTTP_COOKIE", "cookie", id="regex-capture"),
    pytest.param(
        Config(capture_request_headers=("x_api_key",)), "HTTP_X_API_KEY", "x-api-key", id="underscore"
    ),
    pytest.param(
        Config(capture_request_headers=("x-my-secret-token",), sanitize_headers=("SECRET",)),
        "HTTP_X_MY_SECRET_TOKEN",
        "x-my-secret-token",
        id="custom-searched-case-insensitive",
    ),
    pytest.param(
        Config(capture_request_headers=("x-.*",), sanitize_headers=("^x-session",)),
        "HTTP_X_SESSION_ID",
        "x-session-id",
        id="custom-regex",
    ),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("config", "environ_key", "header"), SANITIZE_CASES)
def test_sanitized_request_header_value_is_redacted_from_the_span(
    probe: Probe, mode: SemconvMode, config: Config, environ_key: str, header: str
) -> None:
    secret = "Bearer s3cr3t-t0ken-value"
    span, _ = probe.request(replace(config, semconv=mode), make_environ(**{environ_key: secret}))
    name = header.replace("-", "_") if mode == "old" else header
    assert (span.attributes or {})[f"http.request.header.{name}"] == ("[REDACTED]",)
    assert "s3cr3t" not in serialized(span)


@pytest.mark.parametrize("mode", MODES)
def test_sanitized_response_headers_are_redacted_from_the_span_not_the_response(
    probe: Probe, mode: SemconvMode
) -> None:
    app = make_app(
        [("Set-Cookie", "sid=s3cr3t-1"), ("Set-Cookie", "csrf=s3cr3t-2"), ("X-Token-Out", "s3cr3t-3")]
    )
    config = Config(
        semconv=mode,
        capture_response_headers=("set-cookie", "x-token-out"),
        sanitize_headers=("set-cookie", "token"),
    )
    span, response = probe.request(config, app=app)
    attributes = span.attributes or {}
    prefix = "http.response.header."
    cookie, token = ("set_cookie", "x_token_out") if mode == "old" else ("set-cookie", "x-token-out")
    assert attributes[prefix + cookie] == ("[REDACTED]",)
    assert attributes[prefix + token] == ("[REDACTED]",)
    assert "s3cr3t" not in serialized(span)
    assert ("Set-Cookie", "sid=s3cr3t-1") in response.headers  # the response itself is untouched


def test_empty_sanitize_list_keeps_values(probe: Probe) -> None:
    attributes = probe.attributes(
        Config(capture_request_headers=("authorization",), sanitize_headers=()),
        make_environ(HTTP_AUTHORIZATION="Basic abc"),
    )
    assert attributes["http.request.header.authorization"] == ("Basic abc",)


# --- privacy: secrets in the query, userinfo ---

SECRET = "Zx9SECRETqW7"
QUERY = f"a=1&sig={SECRET}&b=&Signature={SECRET}2"
QUERY_ENVIRONS = [
    pytest.param({}, id="no-raw-target"),
    pytest.param({"RAW_URI": f"/p?{QUERY}"}, id="raw-uri"),
    pytest.param({"REQUEST_URI": f"/p?{QUERY}"}, id="request-uri"),
    pytest.param({"RAW_URI": f"http://example.com/p?{QUERY}"}, id="absolute-raw-uri"),
    pytest.param({"RAW_URI": f"/p?{QUERY}", "REQUEST_URI": f"/p?{QUERY}"}, id="both"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("overrides", QUERY_ENVIRONS)
def test_query_secret_never_exported(probe: Probe, mode: SemconvMode, overrides: dict[str, str]) -> None:
    environ = make_environ(PATH_INFO="/p", QUERY_STRING=QUERY, HTTP_HOST="example.com", **overrides)
    span, _ = probe.request(Config(semconv=mode), environ)
    assert SECRET not in serialized(span)
    attributes = span.attributes or {}
    redacted = "a=1&sig=REDACTED&b=&Signature=REDACTED"
    if mode != "old":
        assert attributes["url.query"] == redacted
    if mode != "stable":
        if overrides:
            raw_target = overrides.get("RAW_URI", overrides.get("REQUEST_URI", ""))
            assert attributes["http.target"] == f"{raw_target.partition('?')[0]}?{redacted}"
            assert "http.url" not in attributes
        else:
            assert attributes["http.url"] == f"http://example.com/p?{redacted}"
            assert "http.target" not in attributes


def test_custom_redact_params_replace_the_default_list(probe: Probe) -> None:
    config = Config(redact_query_params=frozenset({"token"}), semconv="dup")
    environ = make_environ(QUERY_STRING=f"token={SECRET}&sig=visible&Token=kept", RAW_URI=f"/?token={SECRET}")
    span, _ = probe.request(config, environ)
    attributes = span.attributes or {}
    assert attributes["url.query"] == "token=REDACTED&sig=visible&Token=kept"
    assert attributes["http.target"] == "/?token=REDACTED"
    assert SECRET not in serialized(span)


USERINFO_ENVIRONS = [
    pytest.param({"HTTP_HOST": "alice:Pw0rdSECRET@example.com"}, id="host"),
    pytest.param({"HTTP_HOST": "alice:Pw0rdSECRET@example.com:8080"}, id="host-port"),
    pytest.param({"RAW_URI": "http://alice:Pw0rdSECRET@example.com/x"}, id="raw-uri"),
    pytest.param({"REQUEST_URI": "https://alice:Pw0rdSECRET@example.com/x?q=1"}, id="request-uri"),
    pytest.param({"HTTP_X_FORWARDED_HOST": "alice:Pw0rdSECRET@proxy.example"}, id="x-forwarded-host"),
    pytest.param({"HTTP_FORWARDED": 'host="alice:Pw0rdSECRET@proxy.example"'}, id="forwarded-host"),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("overrides", USERINFO_ENVIRONS)
def test_userinfo_never_exported(probe: Probe, mode: SemconvMode, overrides: dict[str, str]) -> None:
    environ = make_environ(PATH_INFO="/x", **overrides)
    span, _ = probe.request(Config(semconv=mode, forwarded_headers=True), environ)
    text = serialized(span)
    assert "Pw0rdSECRET" not in text
    assert "alice" not in text


# --- max_attribute_length ---

HUGE = "a" * (1 << 20)


def _string_values(attributes: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    for key, value in attributes.items():
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, tuple):
            yield from ((key, item) for item in value if isinstance(item, str))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("limit", [MIN_ATTRIBUTE_LENGTH, 64])  # the smallest limit Config accepts
def test_every_string_attribute_is_bounded(probe: Probe, mode: SemconvMode, limit: int) -> None:
    config = Config(
        semconv=mode,
        max_attribute_length=limit,
        capture_request_headers=("x-big", "x-.*"),
        capture_response_headers=("x-out",),
        capture_all_methods=True,
        forwarded_headers=True,
    )
    environ = make_environ(
        REQUEST_METHOD="M" * len(HUGE),
        PATH_INFO="/" + HUGE,
        QUERY_STRING="q=" + HUGE,
        RAW_URI="/" + HUGE + "?q=" + HUGE,
        HTTP_USER_AGENT="Mozilla " + HUGE,
        HTTP_X_BIG=HUGE,
        HTTP_X_OTHER=HUGE,
        HTTP_HOST=HUGE + ".example",
        HTTP_X_FORWARDED_FOR=HUGE,
        HTTP_X_FORWARDED_PROTO="h" + HUGE,
        SERVER_NAME=HUGE,
        SERVER_PROTOCOL="HTTP/1." + "1" * len(HUGE),
    )
    app = make_app([("X-Out", HUGE), ("X-Out", HUGE)], route="/" + HUGE)
    span, _ = probe.request(config, environ, app)
    attributes = span.attributes or {}
    strings = dict(_string_values(attributes))
    # The huge inputs did reach the span, cut to the limit.
    assert "http.request.header." + ("x_big" if mode == "old" else "x-big") in strings
    assert "http.route" in strings
    too_long = {key: len(value) for key, value in _string_values(attributes) if len(value) > limit}
    assert too_long == {}
    # The captured method names the span: bounded too (the route is the app's own template).
    assert span.name.partition(" ")[0] == "M" * limit


# --- known_methods / capture_all_methods ---

METHOD_CASES = [
    pytest.param(Config(), "GET", None, "GET", "GET", None, id="known"),
    pytest.param(Config(), "QUERY", None, "QUERY", "QUERY", None, id="query-method"),
    pytest.param(Config(), "PURGE", None, "HTTP", "_OTHER", "PURGE", id="unknown"),
    pytest.param(Config(), "get", None, "HTTP", "_OTHER", "get", id="case-sensitive"),
    pytest.param(Config(), "PURGE", "/items/{id}", "HTTP /items/{id}", "_OTHER", "PURGE", id="unknown-route"),
    pytest.param(
        Config(known_methods=frozenset({"PURGE"})), "PURGE", None, "PURGE", "PURGE", None, id="custom"
    ),
    pytest.param(
        Config(known_methods=frozenset({"PURGE"})), "GET", None, "HTTP", "_OTHER", "GET", id="replaced"
    ),
    pytest.param(Config(capture_all_methods=True), "PURGE", None, "PURGE", "PURGE", None, id="capture-all"),
    pytest.param(
        Config(capture_all_methods=True),
        "PURGE",
        "/x/{y}",
        "PURGE /x/{y}",
        "PURGE",
        None,
        id="capture-all-route",
    ),
    pytest.param(
        Config(capture_all_methods=True), "get", None, "get", "get", None, id="capture-all-lowercase"
    ),
    pytest.param(
        Config(capture_all_methods=True), "BAD METHOD", None, "HTTP", "_OTHER", "BAD METHOD", id="not-a-token"
    ),
    pytest.param(Config(known_methods=frozenset()), "GET", None, "HTTP", "_OTHER", "GET", id="empty-set"),
]


@pytest.mark.parametrize(("config", "method", "route", "name", "attribute", "original"), METHOD_CASES)
def test_unknown_method_is_other_and_never_puts_the_path_in_the_span_name(
    probe: Probe,
    config: Config,
    method: str,
    route: str | None,
    name: str,
    attribute: str,
    original: str | None,
) -> None:
    for mode in MODES:
        probe.exporter.clear()
        span, _ = probe.request(
            replace(config, semconv=mode),
            make_environ(REQUEST_METHOD=method, PATH_INFO="/items/7"),
            make_app(route=route),
        )
        attributes = span.attributes or {}
        assert span.name == name, mode
        assert "/items/7" not in span.name
        if mode != "old":
            assert attributes["http.request.method"] == attribute
            assert attributes.get("http.request.method_original") == original
        if mode != "stable":
            assert attributes["http.method"] == attribute


# --- trust_remote_context ---

REMOTE_HEADERS = {"HTTP_TRACEPARENT": TRACEPARENT, "HTTP_BAGGAGE": "tenant=acme,user=42"}


def test_untrusted_remote_context_is_a_link(probe: Probe, sampler: RecordingSampler) -> None:
    seen = Seen()
    span, _ = probe.request(
        Config(trust_remote_context=False), make_environ(**REMOTE_HEADERS), make_app(seen=seen)
    )
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert span.context.trace_id != REMOTE_TRACE_ID
    (link,) = span.links
    assert (link.context.trace_id, link.context.span_id) == (REMOTE_TRACE_ID, REMOTE_SPAN_ID)
    assert link.context.is_remote
    # The sampler saw the link at start, and no parent.
    (call,) = sampler.calls
    assert [(lk.context.trace_id, lk.context.span_id) for lk in call.links] == [
        (REMOTE_TRACE_ID, REMOTE_SPAN_ID)
    ]
    assert not call.parent.is_valid
    # Inside the app: our span is current, the incoming baggage is gone.
    assert seen.span_context == span.context
    assert seen.baggage == {}


def test_untrusted_without_incoming_context_has_no_link(probe: Probe, sampler: RecordingSampler) -> None:
    seen = Seen()
    environ = make_environ(HTTP_TRACEPARENT="00-not-a-valid-header-01", HTTP_BAGGAGE="tenant=acme")
    span, _ = probe.request(Config(trust_remote_context=False), environ, make_app(seen=seen))
    assert span.parent is None
    assert list(span.links) == []
    assert list(sampler.calls[0].links) == []
    assert seen.baggage == {}


def test_trusted_baggage_without_traceparent_is_kept(probe: Probe) -> None:
    seen = Seen()
    probe.request(Config(), make_environ(HTTP_BAGGAGE="tenant=acme"), make_app(seen=seen))
    assert seen.baggage == {"tenant": "acme"}


def test_trusted_remote_context_is_the_parent(probe: Probe, sampler: RecordingSampler) -> None:
    seen = Seen()
    span, _ = probe.request(Config(), make_environ(**REMOTE_HEADERS), make_app(seen=seen))
    assert span.parent is not None
    assert (span.parent.trace_id, span.parent.span_id) == (REMOTE_TRACE_ID, REMOTE_SPAN_ID)
    assert span.parent.is_remote
    assert span.context.trace_id == REMOTE_TRACE_ID
    assert list(span.links) == []
    (call,) = sampler.calls
    assert (call.parent.trace_id, call.parent.span_id) == (REMOTE_TRACE_ID, REMOTE_SPAN_ID)
    assert list(call.links) == []
    assert seen.baggage == {"tenant": "acme", "user": "42"}


# --- forwarded_headers ---

SOCKET = {
    "REMOTE_ADDR": "10.0.0.5",
    "REMOTE_PORT": "40000",
    "HTTP_HOST": "internal.local:8000",
    "wsgi.url_scheme": "http",
}
NOT_FORWARDED = ("10.0.0.5", 40000, "http", "internal.local", 8000)

FORWARDED_CASES = [
    pytest.param(
        {"HTTP_FORWARDED": "for=203.0.113.7;proto=https;host=api.example.com"},
        ("203.0.113.7", None, "https", "api.example.com", 443),
        id="forwarded",
    ),
    pytest.param(
        {"HTTP_FORWARDED": 'For="[2001:db8::1]:4711";Proto=https, for=198.51.100.1'},
        ("2001:db8::1", 4711, "https", "internal.local", 8000),
        id="forwarded-ipv6-first-element",
    ),
    pytest.param(
        {
            "HTTP_X_FORWARDED_FOR": "203.0.113.7, 10.0.0.1",
            "HTTP_X_FORWARDED_PROTO": "https",
            "HTTP_X_FORWARDED_HOST": "api.example.com:8443",
        },
        ("203.0.113.7", None, "https", "api.example.com", 8443),
        id="x-forwarded",
    ),
    pytest.param(
        {"HTTP_X_FORWARDED_FOR": "203.0.113.7:5000"},
        ("203.0.113.7", 5000, "http", "internal.local", 8000),
        id="x-forwarded-for-only",
    ),
    pytest.param(
        {"HTTP_FORWARDED": "for=198.51.100.9", "HTTP_X_FORWARDED_FOR": "203.0.113.7"},
        ("198.51.100.9", None, "http", "internal.local", 8000),
        id="forwarded-wins",
    ),
]


@pytest.mark.parametrize(("headers", "expected"), FORWARDED_CASES)
@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "forged"])
def test_forwarded_headers_are_used_only_when_trusted(
    probe: Probe,
    headers: dict[str, str],
    expected: tuple[str, int | None, str, str, int],
    trusted: bool,
) -> None:
    attributes = probe.attributes(
        Config(forwarded_headers=trusted, semconv="dup"), make_environ(**SOCKET, **headers)
    )
    client, client_port, scheme, server, server_port = expected if trusted else NOT_FORWARDED
    assert attributes["client.address"] == client
    assert attributes.get("client.port") == client_port
    assert attributes["url.scheme"] == scheme
    assert attributes["server.address"] == server
    assert attributes["server.port"] == server_port
    # The socket peer never changes.
    assert attributes["network.peer.address"] == "10.0.0.5"
    assert attributes["network.peer.port"] == 40000
    assert attributes["net.peer.ip"] == "10.0.0.5"
    assert attributes["net.peer.port"] == 40000


# --- traceresponse ---


def _traceresponse(headers: Headers) -> list[str]:
    return [value for name, value in headers if name.lower() == "traceresponse"]


@pytest.mark.parametrize("incoming", [{}, {"HTTP_TRACEPARENT": TRACEPARENT}], ids=["root", "child"])
def test_traceresponse_matches_exported_span(probe: Probe, incoming: dict[str, str]) -> None:
    span, response = probe.request(Config(traceresponse=True), make_environ(**incoming))
    ctx = span.context
    assert _traceresponse(response.headers) == [
        f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    ]
    assert ctx.trace_flags.sampled
    assert int(_traceresponse(response.headers)[0][-2:], 16) & 0x01  # the sampled flag


@pytest.mark.parametrize("sampler", [ALWAYS_OFF])
def test_traceresponse_when_unsampled(probe: Probe, exporter: InMemorySpanExporter) -> None:
    seen = Seen()
    environ = make_environ(HTTP_TRACEPARENT=TRACEPARENT)
    response = run(probe.wrap(make_app(seen=seen), Config(traceresponse=True)), environ)
    assert exporter.get_finished_spans() == ()
    ctx = seen.span_context
    assert ctx is not None and ctx.is_valid
    assert ctx.trace_id == REMOTE_TRACE_ID
    assert ctx.span_id != REMOTE_SPAN_ID
    assert _traceresponse(response.headers) == [f"00-{REMOTE_TRACE_ID:032x}-{ctx.span_id:016x}-00"]


@pytest.mark.parametrize("name", ["traceresponse", "TraceResponse", "TRACERESPONSE"])
def test_traceresponse_not_duplicated(probe: Probe, name: str) -> None:
    app_value = f"00-{'1' * 32}-{'2' * 16}-01"
    _, response = probe.request(Config(traceresponse=True), app=make_app([(name, app_value)]))
    assert response.headers == [(name, app_value)]


def test_no_traceresponse_header_by_default(probe: Probe) -> None:
    _, response = probe.request(Config(), app=make_app([("X-A", "1")]))
    assert response.headers == [("X-A", "1")]


@pytest.mark.parametrize("outer_on", [False, True], ids=["outer-off", "outer-on"])
def test_traceresponse_not_added_by_nested_layer(probe: Probe, outer_on: bool) -> None:
    inner = probe.wrap(make_app([("X-A", "1")]), Config(traceresponse=True))
    outer = probe.wrap(inner, Config(traceresponse=outer_on))
    response = run(outer, make_environ())
    spans = {s.kind: s for s in probe.exporter.get_finished_spans()}
    assert set(spans) == {SpanKind.SERVER, SpanKind.INTERNAL}
    if outer_on:
        ctx = spans[SpanKind.SERVER].context
        assert _traceresponse(response.headers) == [
            f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
        ]
    else:
        assert _traceresponse(response.headers) == []


# --- semconv old / dup ---

CANONICAL = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/users/42",
    "QUERY_STRING": "q=1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "example.com:8080",
    "HTTP_USER_AGENT": "curl/8.0",
    "REMOTE_ADDR": "192.0.2.1",
    "REMOTE_PORT": "51000",
    "SERVER_NAME": "server.local",
    "SERVER_PORT": "8080",
}
STABLE_KEYS = {
    "http.request.method", "url.scheme", "url.path", "url.query", "server.address", "server.port",
    "client.address", "client.port", "network.peer.address", "network.peer.port",
    "network.protocol.version", "user_agent.original", "http.response.status_code",
}  # fmt: skip
OLD_KEYS = {
    "http.method", "http.scheme", "http.host", "net.host.name", "net.host.port", "http.status_code",
    "http.flavor", "http.user_agent", "net.peer.ip", "net.peer.port", "http.server_name",
}  # fmt: skip
KEY_CASES = [
    pytest.param("stable", {}, STABLE_KEYS, id="stable"),
    pytest.param("stable", {"RAW_URI": "/users/42?q=1"}, STABLE_KEYS, id="stable-raw-uri"),
    pytest.param("old", {}, OLD_KEYS | {"http.url"}, id="old"),
    pytest.param("old", {"RAW_URI": "/users/42?q=1"}, OLD_KEYS | {"http.target"}, id="old-raw-uri"),
    pytest.param("dup", {}, STABLE_KEYS | OLD_KEYS | {"http.url"}, id="dup"),
    pytest.param(
        "dup", {"REQUEST_URI": "/users/42?q=1"}, STABLE_KEYS | OLD_KEYS | {"http.target"}, id="dup-uri"
    ),
]


@pytest.mark.parametrize(("mode", "overrides", "keys"), KEY_CASES)
@pytest.mark.parametrize("route", [None, "/users/{id}"], ids=["no-route", "route"])
def test_each_semconv_mode_emits_exactly_its_keys(
    probe: Probe, mode: SemconvMode, overrides: dict[str, str], keys: set[str], route: str | None
) -> None:
    span, _ = probe.request(
        Config(semconv=mode), make_environ(**CANONICAL, **overrides), make_app(route=route)
    )
    expected = keys | ({"http.route"} if route else set())
    assert set(span.attributes or {}) == expected
    assert span.name == ("GET /users/{id}" if route else "GET")


@pytest.mark.parametrize("mode", ["old", "dup"])
def test_old_mode_attribute_values(probe: Probe, mode: SemconvMode) -> None:
    attributes = probe.attributes(Config(semconv=mode), make_environ(**CANONICAL))
    old = {key: attributes[key] for key in OLD_KEYS | {"http.url"}}
    assert old == {
        "http.method": "GET",
        "http.scheme": "http",
        "http.host": "example.com:8080",
        "net.host.name": "example.com",
        "net.host.port": 8080,
        "http.url": "http://example.com:8080/users/42?q=1",
        "http.status_code": 200,
        "http.flavor": "1.1",
        "http.user_agent": "curl/8.0",
        "net.peer.ip": "192.0.2.1",
        "net.peer.port": 51000,
        "http.server_name": "server.local",
    }
