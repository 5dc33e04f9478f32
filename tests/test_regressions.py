"""Known reliability defects, each reproduced in a few lines through the public API.

Each test states the behaviour we promise; while the defect is open it is marked `xfail(strict=True)`,
so the suite stays green and a fix makes it pass (remove the mark with the fix). Two more live where
their measurement does: bounded memory with client-chosen values and the error-path weakref check
(`tests/test_memory.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pytest
from apps import Server, Traced, active_series, list_app, make_environ, metric_counts, raising_app, run
from faults import (
    HistogramFaultMeterProvider,
    HostileError,
    RaisingProcessor,
    TelemetryError,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_wsgi import Config, set_route, wrap
from otel_wsgi import semconv as sc
from otel_wsgi.pure import request_record
from otel_wsgi.types import KNOWN_METHODS


@pytest.fixture
def failing_on_end(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A provider whose spans are exported, then a second processor's `on_end` raises."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider.add_span_processor(RaisingProcessor("on_end"))
    yield tracer_provider
    tracer_provider.shutdown()


def test_processor_raising_on_end_still_balances_active_requests_and_records_the_duration(
    failing_on_end: TracerProvider, meter_provider: MeterProvider, reader: InMemoryMetricReader
) -> None:
    app = wrap(list_app(), config=Config(), tracer_provider=failing_on_end, meter_provider=meter_provider)
    assert run(app, make_environ()) == run(list_app(), make_environ())
    assert metric_counts(reader) == (0, 1)


def test_finished_requests_with_client_chosen_methods_leave_no_active_series(
    traced: Traced, reader: InMemoryMetricReader
) -> None:
    app = traced(list_app(), config=Config(capture_all_methods=True, forwarded_headers=True))
    for n in range(50):
        run(app, make_environ({"REQUEST_METHOD": f"JUNK{n}", "HTTP_X_FORWARDED_PROTO": f"s{n}"}))
    client_chosen = [attrs for attrs, _ in active_series(reader) if attrs[sc.HTTP_REQUEST_METHOD] != "GET"]
    assert client_chosen == []


def test_exception_whose_str_raises_reaches_the_server_and_the_request_finishes(
    traced: Traced, exporter: InMemorySpanExporter, reader: InMemoryMetricReader
) -> None:
    error = HostileError()
    app = traced(raising_app(error))
    with pytest.raises(HostileError) as raised:
        app(make_environ(), Server().start_response)
    assert raised.value is error
    assert len(exporter.get_finished_spans()) == 1
    assert metric_counts(reader) == (0, 1)


def long_route_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    set_route(environ, "/segment" * 20_000)
    start_response("200 OK", [])
    return [b"ok"]


def long_message_app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    raise RuntimeError("x" * 1_000_000)


@pytest.mark.parametrize("app", [long_route_app, long_message_app], ids=["long-route", "1MB-message"])
def test_text_outside_attributes_is_bounded_too(
    traced: Traced, exporter: InMemorySpanExporter, app: WSGIApplication
) -> None:
    limit = 100
    try:
        run(traced(app, config=Config(max_attribute_length=limit)), make_environ())
    except RuntimeError:
        pass
    (span,) = exporter.get_finished_spans()
    texts: list[object] = [span.name, span.status.description or ""]
    texts += [value for event in span.events for value in (event.attributes or {}).values()]
    assert [len(text) for text in texts if isinstance(text, str) and len(text) > limit] == []


def test_each_kind_of_failure_is_logged_once_with_its_traceback(
    traced: Traced, meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[TelemetryError] = []

    def request_hook(*args: object) -> None:
        if not failures:
            failures.append(TelemetryError("request hook failed"))
            raise failures[0]

    caplog.set_level(logging.DEBUG, logger="otel_wsgi")
    app = traced(
        list_app(), meter_provider=HistogramFaultMeterProvider(meter_provider), request_hook=request_hook
    )
    for _ in range(3):
        run(app, make_environ())
    with_traceback = [
        str(record.exc_info[1])
        for record in caplog.records
        if record.name == "otel_wsgi" and record.levelno >= logging.WARNING and record.exc_info
    ]
    # The hook failed once, the histograms every time: each kind once with its traceback, not more.
    assert sorted(with_traceback) == ["histogram failed", "request hook failed"]


# --- Host with an invalid port: one source for address and port ---

#: (HTTP_HOST, acceptable (server.address, server.port) pairs); SERVER_NAME=srv, SERVER_PORT=8080.
HOST_CASES: list[tuple[str, set[tuple[object, object]]]] = [
    ("example.com:8443", {("example.com", 8443)}),
    ("example.com", {("example.com", 8080)}),  # Host without a port: the port the server listens on
    ("bad host", {("srv", 8080)}),  # invalid Host: both from the server
]
INVALID_PORT_CASES: list[tuple[str, set[tuple[object, object]]]] = [
    # The address from Host with no port, or both from the server; never Host's name with SERVER_PORT.
    ("example.com:99999", {("example.com", None), ("srv", 8080)}),
    ("example.com:0", {("example.com", None), ("srv", 8080)}),
    ("example.com:80x", {("example.com", None), ("srv", 8080)}),
]
HOST_PARAMS = [pytest.param(host, pairs, id=host) for host, pairs in HOST_CASES + INVALID_PORT_CASES]


def server_pair(host: str) -> tuple[object, object]:
    environ = make_environ({"HTTP_HOST": host, "SERVER_NAME": "srv", "SERVER_PORT": "8080"})
    attributes = request_record(environ, Config()).attributes
    return attributes.get(sc.SERVER_ADDRESS), attributes.get(sc.SERVER_PORT)


@pytest.mark.parametrize(("host", "pairs"), HOST_PARAMS)
def test_server_address_and_port_come_from_one_source(host: str, pairs: set[tuple[object, object]]) -> None:
    assert server_pair(host) in pairs


def test_forwarded_host_with_an_invalid_port_is_not_given_the_default_port() -> None:
    environ = make_environ({"HTTP_X_FORWARDED_HOST": "example.com:99999", "SERVER_PORT": "8080"})
    attributes = request_record(environ, Config(forwarded_headers=True)).attributes
    assert (attributes.get(sc.SERVER_ADDRESS), attributes.get(sc.SERVER_PORT)) != ("example.com", 80)


def test_span_of_a_request_whose_host_has_an_invalid_port(
    traced: Traced, exporter: InMemorySpanExporter
) -> None:
    run(
        traced(list_app()),
        make_environ({"HTTP_HOST": "example.com:99999", "SERVER_NAME": "srv", "SERVER_PORT": "8080"}),
    )
    (span,) = exporter.get_finished_spans()
    attributes = span.attributes or {}
    assert (attributes.get(sc.SERVER_ADDRESS), attributes.get(sc.SERVER_PORT)) != ("example.com", 8080)


def test_known_methods_are_the_only_series_of_ordinary_requests(
    traced: Traced, reader: InMemoryMetricReader
) -> None:
    # The control for the client-chosen case above: known methods, after they finish, report zero.
    app = traced(list_app())
    for method in sorted(KNOWN_METHODS):
        run(app, make_environ({"REQUEST_METHOD": method}))
    assert sum(value for _, value in active_series(reader)) == 0
