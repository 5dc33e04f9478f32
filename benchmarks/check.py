"""What otel_wsgi emits for a request stream, as data: the spans in order, the metric points, a digest.

`overhead.py --check` prints the digest of the realistic stream under two configurations. A change that
must not change behaviour (a cache, a leaner shell) leaves every digest as it was; `--check-dump FILE`
writes the lines behind them, so `diff` shows what changed when one moves. The same recorded spans give
the floor its precomputed span per request (`overhead.py`), so the floor and ours emit the same span.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from wsgiref.types import StartResponse, WSGIEnvironment

from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_wsgi
from otel_wsgi.config import Config

BODY = b"Hello, World!\n"

#: The configurations the check runs: the default, and one that takes every optional path a cache
#: could skip (proxy headers trusted, both conventions, captured request and response headers).
CONFIGS: dict[str, Config] = {
    "default": Config(),
    "proxied": Config(
        forwarded_headers=True,
        semconv="dup",
        capture_request_headers=("accept", "x-request-id", "user-agent", "content-type"),
        capture_response_headers=("content-type",),
    ),
}


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The benchmark's app: a fixed 200 with a Content-Length, the body as one chunk."""
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "14")])
    return [BODY]


@dataclass(frozen=True, slots=True)
class Recorded:
    """The finished spans of a stream, in request order, and the lines that describe them and the metrics."""

    spans: tuple[ReadableSpan, ...]
    lines: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.lines).encode()).hexdigest()


def record(environs: Sequence[WSGIEnvironment], config: Config) -> Recorded:
    """Serve each environ once through otel_wsgi into in-memory SDK providers; describe what came out."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = SdkMeterProvider(metric_readers=[reader])
    app = otel_wsgi.wrap(hello, config=config, tracer_provider=tracer_provider, meter_provider=meter_provider)
    for environ in environs:
        result = app(environ.copy(), server_start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    spans = tuple(exporter.get_finished_spans())
    lines = [_span_line(span) for span in spans] + _metric_lines(reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return Recorded(spans, tuple(lines))


def server_start_response(
    status: str, headers: list[tuple[str, str]], exc_info: object = None
) -> Callable[[bytes], object]:
    """A server's `start_response` that takes anything and whose `write` discards (no I/O in the timing)."""
    return _write


def _write(data: bytes) -> object:
    return None


def _span_line(span: ReadableSpan) -> str:
    """Everything about a span that does not change from run to run (no ids of its own, no times)."""
    parent = span.parent
    return json.dumps(
        [
            span.name,
            span.kind.name,
            sorted((span.attributes or {}).items()),
            None
            if parent is None
            else [f"{parent.trace_id:032x}", f"{parent.span_id:016x}", parent.is_remote],
            span.status.status_code.name,
            span.status.description,
            [event.name for event in span.events],
            len(span.links),
        ],
        ensure_ascii=False,
    )


def _metric_lines(reader: InMemoryMetricReader) -> list[str]:
    """One line per data point: metric, attributes, and the count (histograms) or value (sums)."""
    data = reader.get_metrics_data()
    lines = []
    for resource in [] if data is None else data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = sorted((point.attributes or {}).items())
                    if isinstance(point, HistogramDataPoint):
                        value: object = point.count
                    elif isinstance(point, NumberDataPoint):
                        value = point.value
                    else:
                        value = None
                    lines.append(json.dumps([metric.name, attributes, value], ensure_ascii=False))
    return sorted(lines)
