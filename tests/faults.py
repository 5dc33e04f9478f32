"""Broken telemetry parts and hostile app values, for the reliability tests.

Each fault is a real implementation of an OpenTelemetry interface that fails the way a buggy vendor
plug-in does (a processor, exporter, sampler, propagator or meter that raises); the SDK pieces around
them are the real ones. (The readers of the two server metrics are the harness's, in tests/apps.py.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from apps import ExtractOnlyPropagator
from opentelemetry import metrics as metrics_api
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackT, Meter, ObservableUpDownCounter
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    default_getter,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes
from typing_extensions import override

#: The ways the telemetry pipeline can fail under a request.
Fault = Literal[
    "none",
    "processor_on_start",
    "processor_on_end",
    "exporter",
    "histogram",
    "sampler",
    "propagator",
    "request_hook",
    "response_hook",
]


class TelemetryError(RuntimeError):
    """What every broken telemetry part raises (never what the app raises)."""


class HostileError(Exception):
    """An app exception whose `str()` raises, as some ORM and proxy errors do."""

    @override
    def __str__(self) -> str:
        raise ValueError("this exception cannot be printed")


class RaisingProcessor(SpanProcessor):
    """A span processor that raises from `on_start` or from `on_end` (so `span.end()` raises)."""

    def __init__(self, where: Literal["on_start", "on_end"]) -> None:
        self.where = where

    @override
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.where == "on_start":
            raise TelemetryError("processor on_start failed")

    @override
    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "on_end":
            raise TelemetryError("processor on_end failed")


class EndedSpans(SpanProcessor):
    """Count every span end the SDK reports, whatever the processors after this one do."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []

    @override
    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


class RaisingExporter(SpanExporter):
    """An exporter whose `export` raises (the SDK's processors are expected to absorb it)."""

    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise TelemetryError("exporter failed")


class DiscardingExporter(SpanExporter):
    """An exporter that accepts and forgets every span: a pipeline whose memory is all ours."""

    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class RaisingSampler(Sampler):
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
        raise TelemetryError("sampler failed")

    @override
    def get_description(self) -> str:
        return "RaisingSampler"


class RaisingPropagator(ExtractOnlyPropagator):
    @override
    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        raise TelemetryError("propagator failed")


class RaisingHistogram(metrics_api.NoOpHistogram):
    @override
    def record(
        self, amount: int | float, attributes: Attributes = None, context: Context | None = None
    ) -> None:
        raise TelemetryError("histogram failed")


class HistogramFaultMeter(metrics_api.NoOpMeter):
    """A meter whose histograms raise while its observable counters are the real SDK's (readable)."""

    def __init__(self, real: Meter) -> None:
        super().__init__("otel_wsgi")
        self.real = real

    @override
    def create_histogram(self, name: str, unit: str = "", description: str = "", *,
                         explicit_bucket_boundaries_advisory: Sequence[float] | None = None
                         ) -> metrics_api.Histogram:  # fmt: skip
        return RaisingHistogram(name)

    @override
    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableUpDownCounter:
        return self.real.create_observable_up_down_counter(name, callbacks, unit, description)


class HistogramFaultMeterProvider(metrics_api.MeterProvider):
    """Hand out `HistogramFaultMeter`s over a real SDK meter provider."""

    def __init__(self, real: metrics_api.MeterProvider) -> None:
        self.real = real

    @override
    def get_meter(self, name: str, version: str | None = None, schema_url: str | None = None,
                  attributes: Attributes = None) -> metrics_api.Meter:  # fmt: skip
        return HistogramFaultMeter(self.real.get_meter(name, version, schema_url, attributes))
