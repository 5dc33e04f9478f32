"""The SDK pipeline of one process: providers, processors, readers and exporters, and its orderly end.

Only the command and the gunicorn hooks import this module (it needs the `cli` extra): `wrap()` itself
never depends on the SDK. One pipeline per process; under gunicorn, one per worker, built after fork.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Final, TextIO

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import PROCESS_PID, SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import StatusCode
from typing_extensions import override

from otel_wsgi import semconv as sc
from otel_wsgi.cli.decide import (
    ExporterKind,
    Histogram,
    RouteSample,
    SpanView,
    span_line,
    summary_lines,
)

#: The summary's row for requests no route was reported for (404s, unrouted apps).
NO_ROUTE: Final = "(unrouted)"


class LineExporter(SpanExporter):
    """Print one readable line per span as it ends (the console exporter of the command)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [_line(span) for span in spans]
        with self._lock:
            for line in lines:
                print(line, file=self._out, flush=True)
        return SpanExportResult.SUCCESS


def _line(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    status, error, route = (
        attributes.get(sc.HTTP_RESPONSE_STATUS_CODE),
        attributes.get(sc.ERROR_TYPE),
        attributes.get(sc.HTTP_ROUTE),
    )
    if error is None and span.status.status_code is StatusCode.ERROR:
        error = "ERROR"
    seconds = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
    view = SpanView(
        span.name, status if isinstance(status, int) else None, None if error is None else str(error), seconds
    )
    context = span.get_span_context()
    remote = span.parent is not None and span.parent.is_remote
    trace_id = 0 if context is None else context.trace_id
    return span_line(view, route if isinstance(route, str) else None, trace_id, remote_parent=remote)


class Pipeline:
    """The providers of this process, with what `shutdown` must flush and print."""

    __slots__ = ("tracer_provider", "meter_provider", "summary")

    def __init__(
        self,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        summary: InMemoryMetricReader | None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.summary = summary

    def shutdown(self, out: TextIO | None = None) -> None:
        """Flush and shut down both providers (batched spans and the last metrics are exported now),
        then print the per-route summary of the console metrics, if any."""
        self.tracer_provider.shutdown()
        lines = [] if self.summary is None else summary_lines(route_samples(self.summary))
        self.meter_provider.shutdown()
        for line in lines:
            print(line, file=out or sys.stdout, flush=True)


def build_pipeline(
    traces: Sequence[ExporterKind],
    metric_kinds: Sequence[ExporterKind],
    *,
    out: TextIO | None = None,
    service_name: str | None = None,
    buckets: Sequence[float] | None = None,
    install: bool = True,
) -> Pipeline:
    """Build this process's providers from exporter choices and the SDK's standard variables.

    Each call gets its own `service.instance.id` (one per gunicorn worker). `service_name` is used
    only when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names the service; `buckets`
    replaces the duration histogram's buckets (the demo's requests take well under 5 ms).
    `install` makes the providers the global ones, so the app's own spans and metrics join them.
    """
    resource = _resource(service_name)
    tracer_provider = TracerProvider(resource=resource)
    for kind in traces:
        tracer_provider.add_span_processor(_span_processor(kind, out or sys.stdout))
    summary = InMemoryMetricReader() if "console" in metric_kinds else None
    readers: list[MetricReader] = [] if summary is None else [summary]
    if "otlp" in metric_kinds:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    views = [] if buckets is None else [_duration_view(buckets)]
    meter_provider = MeterProvider(metric_readers=readers, resource=resource, views=views)
    if install:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return Pipeline(tracer_provider, meter_provider, summary)


def _span_processor(kind: ExporterKind, out: TextIO) -> SimpleSpanProcessor | BatchSpanProcessor:
    if kind == "console":
        return SimpleSpanProcessor(LineExporter(out))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter())


def _resource(service_name: str | None) -> Resource:
    resource = Resource.create({SERVICE_INSTANCE_ID: str(uuid.uuid4()), PROCESS_PID: os.getpid()})
    named = resource.attributes.get(SERVICE_NAME)
    if service_name and (not isinstance(named, str) or named.startswith("unknown_service")):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    return resource


def _duration_view(buckets: Sequence[float]) -> View:
    return View(
        instrument_name=sc.HTTP_SERVER_REQUEST_DURATION,
        aggregation=ExplicitBucketHistogramAggregation(boundaries=list(buckets)),
    )


def route_samples(reader: InMemoryMetricReader) -> list[RouteSample]:
    """Read the duration histogram's points from `reader`, one sample per point (route, error, buckets)."""
    data = reader.get_metrics_data()
    samples: list[RouteSample] = []
    if data is None:
        return samples
    for resource_metrics in data.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name != sc.HTTP_SERVER_REQUEST_DURATION:
                    continue
                samples.extend(
                    _sample(point)
                    for point in metric.data.data_points
                    if isinstance(point, HistogramDataPoint)
                )
    return samples


def _sample(point: HistogramDataPoint) -> RouteSample:
    attributes: Mapping[str, object] = point.attributes or {}
    route = attributes.get(sc.HTTP_ROUTE)
    histogram = Histogram(
        tuple(point.explicit_bounds), tuple(point.bucket_counts), float(point.min), float(point.max)
    )
    return RouteSample(route if isinstance(route, str) else NO_ROUTE, sc.ERROR_TYPE in attributes, histogram)


def environment() -> Mapping[str, str]:
    """The process environment, read here so the decisions stay pure functions of a mapping."""
    return os.environ
