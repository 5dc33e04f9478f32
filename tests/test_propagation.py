"""The environ getter behind context extraction: header names to PEP 3333 keys and back.

The getter is the one `wrap()` hands its propagator: a propagator that keeps it shows it publicly.
"""

from __future__ import annotations

from collections.abc import Iterable
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from apps import ExtractOnlyPropagator, Traced, list_app, make_environ, run
from opentelemetry import baggage, propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    TextMapPropagator,
    default_getter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from typing_extensions import override

from otel_wsgi.effects import carrier_keys


class GetterKeeper(ExtractOnlyPropagator):
    """A propagator that keeps each getter `extract` is given, and extracts nothing."""

    def __init__(self) -> None:
        self.getters: list[Getter[WSGIEnvironment]] = []

    @override
    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        self.getters.append(getter)  # type: ignore[arg-type]  # wrap() extracts from the environ
        return Context() if context is None else context


@pytest.fixture
def getter(traced: Traced) -> Getter[WSGIEnvironment]:
    """The getter the middleware gives its propagator (one request, through `wrap()`)."""
    keeper = GetterKeeper()
    run(traced(list_app(), propagator=keeper), make_environ())
    (kept,) = keeper.getters
    return kept


GET_CASES = [
    pytest.param({"HTTP_TRACEPARENT": "00-a-b-01"}, "traceparent", ["00-a-b-01"], id="traceparent"),
    pytest.param({"HTTP_X_B3_TRACEID": "abc"}, "x-b3-traceid", ["abc"], id="dashes-to-underscores"),
    pytest.param({"HTTP_X_B3_TRACEID": "abc"}, "X-B3-TraceId", ["abc"], id="any-case"),
    pytest.param({"HTTP_BAGGAGE": b"k=v"}, "baggage", None, id="bytes-value-ignored"),
    pytest.param({}, "tracestate", None, id="missing"),
    pytest.param({"CONTENT_TYPE": "text/plain"}, "content-type", ["text/plain"], id="cgi-content-type"),
]


@pytest.mark.parametrize(("environ", "key", "expected"), GET_CASES)
def test_getter_reads_pep3333_keys(
    getter: Getter[WSGIEnvironment], environ: WSGIEnvironment, key: str, expected: list[str] | None
) -> None:
    assert getter.get(environ, key) == expected


def test_getter_keys_lists_request_headers_only(getter: Getter[WSGIEnvironment]) -> None:
    environ: WSGIEnvironment = {
        "HTTP_TRACEPARENT": "x",
        "HTTP_X_B3_SAMPLED": "1",
        "CONTENT_LENGTH": "3",
        "REQUEST_METHOD": "GET",
        "wsgi.input": None,
        "HTTP_": "empty name",
    }
    assert sorted(getter.keys(environ)) == ["content-length", "traceparent", "x-b3-sampled"]


def test_every_listed_key_can_be_read_back(getter: Getter[WSGIEnvironment]) -> None:
    environ: WSGIEnvironment = {"HTTP_TRACEPARENT": "a", "HTTP_X_ONE_TWO": "b", "CONTENT_TYPE": "c"}
    assert {key: getter.get(environ, key) for key in getter.keys(environ)} == {
        "traceparent": ["a"],
        "x-one-two": ["b"],
        "content-type": ["c"],
    }


# --- which requests are worth extracting ---

TRACECONTEXT = TraceContextTextMapPropagator()
BAGGAGE = W3CBaggagePropagator()

CARRIER_CASES = [
    pytest.param(TRACECONTEXT, ("HTTP_TRACEPARENT", "HTTP_TRACESTATE"), id="tracecontext"),
    pytest.param(BAGGAGE, ("HTTP_BAGGAGE",), id="baggage"),
    pytest.param(
        CompositePropagator([TRACECONTEXT, BAGGAGE]),
        ("HTTP_BAGGAGE", "HTTP_TRACEPARENT", "HTTP_TRACESTATE"),
        id="the-default-composite",
    ),
    pytest.param(CompositePropagator([]), (), id="empty-composite-extracts-nothing"),
    # Any other propagator may read keys beyond its fields (Jaeger reads every `uberctx-*` header).
    pytest.param(GetterKeeper(), None, id="unknown"),
    pytest.param(CompositePropagator([TRACECONTEXT, GetterKeeper()]), None, id="composite-with-unknown"),
]


@pytest.mark.parametrize(("propagator", "expected"), CARRIER_CASES)
def test_carrier_keys(propagator: TextMapPropagator, expected: tuple[str, ...] | None) -> None:
    assert carrier_keys(propagator) == expected


def baggage_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [repr(sorted(baggage.get_all().items())).encode()]


def test_baggage_alone_is_still_extracted(traced: Traced) -> None:
    app = traced(baggage_app, propagator=CompositePropagator([TRACECONTEXT, BAGGAGE]))
    assert run(app, make_environ(HTTP_BAGGAGE="tenant=acme")).body == b"[('tenant', 'acme')]"
    assert run(app, make_environ()).body == b"[]"


def test_a_global_propagator_set_after_wrap_is_used_for_every_request(traced: Traced) -> None:
    app = traced(list_app())  # the global propagator, looked up per request
    run(app, make_environ())  # the default one: nothing to extract from this request
    keeper = GetterKeeper()
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(keeper)
    try:
        run(app, make_environ())
        run(app, make_environ())
    finally:
        propagate.set_global_textmap(previous)
    assert len(keeper.getters) == 2  # not known to read its fields only: asked on every request
    run(app, make_environ())
    assert len(keeper.getters) == 2
