"""What a slow exporter does to request latency: SimpleSpanProcessor blocks, BatchSpanProcessor does not.

Run by hand:

    python benchmarks/slow_exporter.py                  # exporter sleeping 50 ms, 20 requests per case
    python benchmarks/slow_exporter.py --delay 0.2

Each request is served in-process (called, iterated, closed) and timed from the call to the end of
`close()`, which is when the span ends and a `SimpleSpanProcessor` exports it on the request's thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import setup_testing_defaults

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from typing_extensions import override

from otel_wsgi import Config, wrap


class SlowExporter(SpanExporter):
    """An exporter whose every export takes `delay` seconds (a collector far away or overloaded)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(self.delay)
        return SpanExportResult.SUCCESS


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def latency_ms(app: WSGIApplication, requests: int) -> list[float]:
    found = []
    for _ in range(requests):
        environ: WSGIEnvironment = {}
        setup_testing_defaults(environ)
        started = time.perf_counter()
        body = app(environ, lambda status, headers, exc_info=None: lambda data: None)
        for _ in body:
            pass
        getattr(body, "close", lambda: None)()
        found.append((time.perf_counter() - started) * 1000)
    return found


def traced(processor: SpanProcessor) -> tuple[WSGIApplication, TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(processor)
    app = wrap(hello, config=Config(), tracer_provider=provider, meter_provider=NoOpMeterProvider())
    return app, provider


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per export")
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args(argv)
    simple, simple_provider = traced(SimpleSpanProcessor(SlowExporter(args.delay)))
    batch, batch_provider = traced(BatchSpanProcessor(SlowExporter(args.delay)))
    print(f"exporter delay {args.delay * 1000:.0f} ms, {args.requests} requests per case")
    print(f"{'case':<28} {'median ms':>10} {'max ms':>8}")
    for name, app in (("bare app", hello), ("SimpleSpanProcessor", simple), ("BatchSpanProcessor", batch)):
        found = latency_ms(app, args.requests)
        print(f"{name:<28} {statistics.median(found):>10.2f} {max(found):>8.2f}")
    simple_provider.shutdown()
    batch_provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
