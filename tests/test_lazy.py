"""Attributes built on first use: complete for samplers and recorded spans, never built for dropped ones."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
from apps import Server, Traced, close_body, list_app, make_environ
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    Span,
    SpanKind,
    Tracer,
    TracerProvider,
    TraceState,
    _Links,
)
from opentelemetry.util._decorator import _agnosticcontextmanager
from opentelemetry.util.types import Attributes
from typing_extensions import override

from otel_wsgi import Config, wrap
from otel_wsgi.pure import request_record

UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


class ReadLog(dict[str, object]):
    """An environ that remembers which keys were read through `get`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.read: list[str] = []

    @override
    def get(self, key: str, default: object = None) -> object:
        self.read.append(key)
        return super().get(key, default)


def environ() -> ReadLog:
    return ReadLog(make_environ(HTTP_USER_AGENT="curl/8", QUERY_STRING="a=1", REMOTE_ADDR="10.0.0.1"))


def serve(traced: Traced, env: ReadLog) -> None:
    """One request through `wrap()` with the test's providers (and so its `sampler`)."""
    body = traced(list_app([b"hi"]))(env, Server().start_response)
    assert list(body) == [b"hi"]
    close_body(body)


@pytest.mark.parametrize(
    ("sampler", "extra"),
    [
        pytest.param(ALWAYS_OFF, {}, id="always-off"),
        pytest.param(ParentBased(ALWAYS_ON), {"HTTP_TRACEPARENT": UNSAMPLED_PARENT}, id="unsampled-parent"),
    ],
)
def test_a_dropped_span_never_builds_its_attributes(
    traced: Traced, exporter: InMemorySpanExporter, sampler: Sampler, extra: dict[str, str]
) -> None:
    env = environ()
    env.update(extra)
    serve(traced, env)
    assert exporter.get_finished_spans() == ()
    # Only the full attribute set reads these; the span name and metrics need none of them.
    assert {"HTTP_USER_AGENT", "QUERY_STRING", "REMOTE_ADDR", "PATH_INFO"} & set(env.read) == set()


@pytest.mark.parametrize("sampler", [ALWAYS_ON])  # a sampler that does not read the attributes itself
def test_a_recorded_span_gets_every_attribute(traced: Traced, exporter: InMemorySpanExporter) -> None:
    env = environ()
    serve(traced, env)
    (span,) = exporter.get_finished_spans()
    expected = dict(request_record(environ(), Config()).attributes)
    assert dict(span.attributes or {}) == expected | {"http.response.status_code": 200}
    assert "HTTP_USER_AGENT" in env.read


class KeepingSampler(Sampler):
    """Keep the attribute mapping each `should_sample` call is given, unread, and drop the span."""

    def __init__(self) -> None:
        self.kept: list[Attributes] = []

    @override
    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.kept.append(attributes)
        return SamplingResult(Decision.DROP)

    @override
    def get_description(self) -> str:
        return "KeepingSampler"


@runtime_checkable
class SupportsCopy(Protocol):
    def copy(self) -> Mapping[str, object]: ...


def kept_attributes(traced: Traced, sampler: KeepingSampler, env: ReadLog) -> Mapping[str, object]:
    """Serve one request; return the attribute mapping the sampler was given."""
    serve(traced, env)
    (kept,) = sampler.kept
    assert kept is not None
    return kept


@pytest.mark.parametrize("sampler", [KeepingSampler()])
def test_the_samplers_attributes_behave_as_the_record_attributes(
    traced: Traced, sampler: KeepingSampler
) -> None:
    env = environ()
    expected = request_record(environ(), Config()).attributes
    lazy = kept_attributes(traced, sampler, env)
    # Nothing only the attributes need was read until asked.
    assert {"HTTP_USER_AGENT", "QUERY_STRING", "REMOTE_ADDR"} & set(env.read) == set()
    assert len(lazy) == len(expected)
    assert dict(lazy) == expected
    assert isinstance(lazy, SupportsCopy)
    assert lazy.copy() == expected
    assert MappingProxyType(lazy).copy() == expected  # what the SDK's SamplingResult does
    assert lazy["url.query"] == "a=1"
    assert "user_agent.original" in lazy
    assert list(lazy.values()) == list(expected.values())
    assert list(lazy.items()) == list(expected.items())
    reads = len(env.read)
    assert list(iter(lazy)) == list(expected)
    assert len(env.read) == reads  # built once


@pytest.mark.parametrize("sampler", [KeepingSampler()])
def test_keys_iterates_in_record_order(traced: Traced, sampler: KeepingSampler) -> None:
    lazy = kept_attributes(traced, sampler, environ())
    keys: Iterator[str] = iter(lazy.keys())
    assert list(keys) == list(request_record(environ(), Config()).attributes)


class KeptSpan(NonRecordingSpan):
    """A span of a tracer that records but keeps the attribute mapping it was given, unread."""

    @override
    def is_recording(self) -> bool:
        return True


class KeepingTracer(Tracer):
    """A tracer (not the SDK's) that stores `attributes` by reference and reads them only later."""

    def __init__(self) -> None:
        self.kept: list[Mapping[str, object]] = []

    @override
    def start_span(self, name: str, context: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Attributes = None, links: _Links = None, start_time: int | None = None,
                   record_exception: bool = True, set_status_on_exception: bool = True) -> Span:  # fmt: skip
        self.kept.append(attributes if attributes is not None else {})
        return KeptSpan(INVALID_SPAN_CONTEXT)

    @override
    @_agnosticcontextmanager
    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Iterator[Span]:
        yield self.start_span(*args, **kwargs)


class KeepingProvider(TracerProvider):
    def __init__(self) -> None:
        super().__init__()
        self.tracer = KeepingTracer()

    @override
    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        return self.tracer


def test_a_recording_span_has_its_attributes_built_before_the_app_runs(meter_provider: MeterProvider) -> None:
    provider = KeepingProvider()

    def rewriting_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["PATH_INFO"] = "/rewritten"  # a dispatcher editing the environ, as WSGI allows
        start_response("200 OK", [])
        return [b"ok"]

    app = wrap(rewriting_app, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
    env = environ()
    env["PATH_INFO"] = "/original"
    body = app(env, Server().start_response)
    assert list(body) == [b"ok"] and env["PATH_INFO"] == "/rewritten"
    (kept,) = provider.tracer.kept
    assert dict(kept)["url.path"] == "/original"
