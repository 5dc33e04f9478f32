"""A small OTLP/HTTP receiver for tests: decodes what the official exporter sends, with opentelemetry-proto.

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}  # give this to the process under test
        ...
        spans = receiver.spans()          # ReceivedSpan: ids as hex, name, attributes, resource
        points = receiver.latest_histograms("http.server.request.duration")  # final cumulative totals
        active = receiver.latest_sums("http.server.active_requests")  # each series' last value
        records = [span.record() for span in spans]  # the JSON-lines form tests/load_client.py checks

It listens on 127.0.0.1 (a free port) on its own threads, answers `POST /v1/traces` and `/v1/metrics`
(protobuf, gzip or not) with an empty success response, and keeps every decoded span, histogram
point and sum point in arrival order (`take_spans` hands the spans over and forgets them, for long
runs); anything else gets a 404 and is counted in `rejected`. Leaving the `with` block stops it.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Final, TypeVar

from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from typing_extensions import override

#: An attribute value as decoded: a scalar, or a tuple for an array value.
Value = str | bool | int | float | bytes | tuple[object, ...] | None


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as the receiver decoded it; ids are lowercase hex, `parent_span_id` None for a root."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    attributes: Mapping[str, Value]
    resource: Mapping[str, Value]

    def record(self) -> dict[str, object]:
        """This span in the JSON-lines form of tests/span_lines.py (the fields tests/load_client.py reads).

        OTLP names no parent trace id: a parent is always in its child's trace.
        """
        return {
            "kind": "span",
            "name": self.name,
            "attributes": dict(self.attributes),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_id": self.parent_span_id,
            "parent_trace_id": None if self.parent_span_id is None else self.trace_id,
        }


@dataclass(frozen=True, slots=True)
class ReceivedSumPoint:
    """One point of sum metric `name` (a counter or an up-down counter), with its resource."""

    name: str
    attributes: Mapping[str, Value]
    value: int | float
    time_unix_nano: int
    resource: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class ReceivedHistogramPoint:
    """One histogram data point of metric `name`, with its resource (e.g. `service.instance.id`)."""

    name: str
    attributes: Mapping[str, Value]
    count: int
    bucket_counts: tuple[int, ...]
    time_unix_nano: int
    resource: Mapping[str, Value]


def _value(value: AnyValue) -> Value:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    if kind in ("string_value", "bool_value", "int_value", "double_value", "bytes_value"):
        decoded: Value = getattr(value, kind)
        return decoded
    return None


def _attributes(pairs: list[KeyValue]) -> dict[str, Value]:
    return {pair.key: _value(pair.value) for pair in pairs}


class OtlpReceiver:
    """An OTLP/HTTP endpoint on 127.0.0.1 that stores what it decodes (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._points: list[ReceivedHistogramPoint] = []
        self._sums: list[ReceivedSumPoint] = []
        self.rejected = 0
        self.gzipped = 0  # requests that came gzip-compressed (OTEL_EXPORTER_OTLP_COMPRESSION=gzip)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def endpoint(self) -> str:
        """The base URL for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces, /v1/metrics)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def histograms(self, name: str) -> list[ReceivedHistogramPoint]:
        """Every histogram point of metric `name` received so far, in arrival order."""
        with self._lock:
            return [point for point in self._points if point.name == name]

    def latest_histograms(self, name: str) -> list[ReceivedHistogramPoint]:
        """The newest point of each series of metric `name` (a series: one resource and attribute set).

        The SDK exports cumulative points by default, so these are each process's final totals.
        """
        return _latest(self.histograms(name))

    def sums(self, name: str) -> list[ReceivedSumPoint]:
        """Every point of sum metric `name` received so far, in arrival order."""
        with self._lock:
            return [point for point in self._sums if point.name == name]

    def latest_sums(self, name: str) -> list[ReceivedSumPoint]:
        """The newest point of each series of sum metric `name`: each process's last value."""
        return _latest(self.sums(name))

    def take_spans(self) -> list[ReceivedSpan]:
        """The spans received since the last call (or the start), forgotten here: memory stays flat."""
        with self._lock:
            taken = list(self._spans)
            self._spans.clear()
        return taken

    def wait_for_spans(self, count: int, timeout: float) -> list[ReceivedSpan]:
        """Wait until at least `count` spans arrived or `timeout` seconds passed; return the spans."""
        deadline = time.monotonic() + timeout
        while len(spans := self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return spans

    def _store_traces(self, request: ExportTraceServiceRequest) -> None:
        found = [
            ReceivedSpan(
                span.trace_id.hex(),
                span.span_id.hex(),
                span.parent_span_id.hex() or None,
                span.name,
                _attributes(list(span.attributes)),
                _attributes(list(resource_spans.resource.attributes)),
            )
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self._spans.extend(found)

    def _store_metrics(self, request: ExportMetricsServiceRequest) -> None:
        found = [
            ReceivedHistogramPoint(
                metric.name,
                _attributes(list(point.attributes)),
                point.count,
                tuple(point.bucket_counts),
                point.time_unix_nano,
                _attributes(list(resource_metrics.resource.attributes)),
            )
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.WhichOneof("data") == "histogram"
            for point in metric.histogram.data_points
        ]
        sums = [
            ReceivedSumPoint(
                metric.name,
                _attributes(list(point.attributes)),
                point.as_int if point.WhichOneof("value") == "as_int" else point.as_double,
                point.time_unix_nano,
                _attributes(list(resource_metrics.resource.attributes)),
            )
            for resource_metrics in request.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
            if metric.WhichOneof("data") == "sum"
            for point in metric.sum.data_points
        ]
        with self._lock:
            self._points.extend(found)
            self._sums.extend(sums)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                    with receiver._lock:
                        receiver.gzipped += 1
                try:
                    answer = receiver._decode(self.path, body)
                except DecodeError:
                    answer = None
                if answer is None:
                    with receiver._lock:
                        receiver.rejected += 1
                    self._send(404 if self.path not in _PATHS else 400, b"")
                else:
                    self._send(200, answer)

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            @override
            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def _decode(self, path: str, body: bytes) -> bytes | None:
        """Store the request's content; return the serialized success response, or None for a bad path."""
        if path == "/v1/traces":
            self._store_traces(ExportTraceServiceRequest.FromString(body))
            traces_answer: bytes = ExportTraceServiceResponse().SerializeToString()
            return traces_answer
        if path == "/v1/metrics":
            self._store_metrics(ExportMetricsServiceRequest.FromString(body))
            metrics_answer: bytes = ExportMetricsServiceResponse().SerializeToString()
            return metrics_answer
        return None


_PATHS: Final = ("/v1/traces", "/v1/metrics")


_Point = TypeVar("_Point", ReceivedHistogramPoint, ReceivedSumPoint)


def _latest(points: list[_Point]) -> list[_Point]:
    """The newest of `points` in each series (one resource and one attribute set)."""
    latest: dict[str, _Point] = {}
    for point in points:
        series = repr((sorted(point.resource.items(), key=str), sorted(point.attributes.items(), key=str)))
        if series not in latest or point.time_unix_nano >= latest[series].time_unix_nano:
            latest[series] = point
    return list(latest.values())
