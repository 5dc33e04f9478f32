"""Memory under 100,000 varied requests: tracemalloc (current, peak) and RSS at checkpoints.

Run by hand, never from the tests (`tests/test_memory.py` is the small CI version):

    python benchmarks/memory.py                     # 100,000 requests, client-chosen values (about 2 minutes)
    python benchmarks/memory.py --ordinary          # no client-chosen methods or schemes
    python benchmarks/memory.py --requests 20000    # a quicker run

Every request is new to the middleware: its own path, query, client port and user agent; with the
default mode also one of a few junk methods in three (`capture_all_methods=True`) and, in one in five, its
own `X-Forwarded-Proto` (`forwarded_headers=True`), the values clients choose. The pipeline is the real
SDK's: a `BatchSpanProcessor` exporting to an exporter that discards, and a metric reader collected at
every checkpoint (the collection walks every active-requests series).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import setup_testing_defaults

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from typing_extensions import override

from otel_wsgi import Config, wrap

CHECKPOINTS = (10_000, 20_000, 50_000, 100_000)
METHODS = ("GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")


class Discard(SpanExporter):
    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def environ_for(n: int, client_chosen: bool) -> WSGIEnvironment:
    environ: WSGIEnvironment = {"QUERY_STRING": f"page={n}&q=term{n}"}
    setup_testing_defaults(environ)
    environ.update(
        PATH_INFO=f"/items/{n}/detail",
        REMOTE_ADDR=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
        REMOTE_PORT=str(1024 + n % 64000),
        HTTP_USER_AGENT=f"client/{n} (bench)",
        REQUEST_METHOD=METHODS[n % len(METHODS)],
    )
    if client_chosen and n % 3 == 0:
        environ["REQUEST_METHOD"] = f"JUNK{n}"
    if client_chosen and n % 5 == 0:
        environ["HTTP_X_FORWARDED_PROTO"] = f"proto{n}"
    return environ


def rss_kib() -> int:
    """The resident set now (Linux), else the peak the kernel reports."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def serve(app: WSGIApplication, environ: WSGIEnvironment) -> None:
    body = app(environ, lambda status, headers, exc_info=None: lambda data: None)
    for _ in body:
        pass
    getattr(body, "close")()  # noqa: B009  (the middleware's body always has one)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--ordinary", action="store_true", help="no client-chosen methods or schemes")
    args = parser.parse_args(argv)
    client_chosen = not args.ordinary
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    config = Config(capture_all_methods=True, forwarded_headers=True)
    app = wrap(hello, config=config, tracer_provider=tracer_provider, meter_provider=meter_provider)
    checkpoints = [n for n in CHECKPOINTS if n < args.requests] + [args.requests]
    mode = "client-chosen methods and schemes" if client_chosen else "ordinary values only"
    print(f"{args.requests} requests, {mode}; Python {sys.version.split()[0]}")
    print(f"{'requests':>9} {'traced now':>11} {'traced peak':>12} {'RSS':>10} {'seconds':>8}")
    tracemalloc.start()
    started = time.perf_counter()
    served = 0
    for checkpoint in checkpoints:
        while served < checkpoint:
            serve(app, environ_for(served, client_chosen))
            served += 1
        tracer_provider.force_flush()
        reader.get_metrics_data()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        elapsed = time.perf_counter() - started
        memory = f"{current / 1024:>8.0f} KiB {peak / 1024:>9.0f} KiB {rss_kib():>6} KiB"
        print(f"{served:>9} {memory} {elapsed:>8.1f}")
    tracemalloc.stop()
    tracer_provider.shutdown()
    meter_provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
