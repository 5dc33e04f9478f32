"""Per-request CPU cost of otel_wsgi, side by side with a bare app, the SDK's floor and the reference.

Run by hand, never from the tests (see benchmarks/README.md):

    python benchmarks/overhead.py                 # full run (about a minute)
    python benchmarks/overhead.py --quick         # a few seconds, for a smoke check
    python benchmarks/overhead.py --profile       # cProfile of otel_wsgi, traced + metrics

Every case is a WSGI app called in-process, as a server would: a fresh copy of one gunicorn-like environ,
the app called, its body iterated and closed. The cases run interleaved round-robin in one process, the
order rotated each round, each round timing `--requests` requests of each case in process CPU time
(`time.process_time_ns`, so a batch processor's worker thread is counted too). The reference rows
(`opentelemetry-instrumentation-wsgi`, stable semantic conventions) are skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import importlib.metadata
import io
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
from wsgiref.util import FileWrapper

from opentelemetry import context, propagate, trace
from opentelemetry.metrics import Histogram, MeterProvider, NoOpMeterProvider, UpDownCounter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import Attributes
from typing_extensions import override

import otel_wsgi
from otel_wsgi.config import Config
from otel_wsgi.metrics import DURATION_BUCKETS
from otel_wsgi.pure import request_record

TRACE_ID: Final = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT: Final = f"00-{TRACE_ID}-b7ad6b7169203331-01"
BODY: Final = b"Hello, World!\n"
RESPONSE_HEADERS: Final = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BODY)))]

#: What gunicorn 2x puts in the environ for `GET /api/users/42?page=2` behind a proxy: the WSGI and CGI
#: keys, then 8 request headers including a sampled `traceparent`.
ENVIRON: Final[WSGIEnvironment] = {
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.input": io.BytesIO(b""),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.file_wrapper": FileWrapper,
    "wsgi.input_terminated": True,
    "SERVER_SOFTWARE": "gunicorn/23.0.0",
    "REQUEST_METHOD": "GET",
    "QUERY_STRING": "page=2",
    "RAW_URI": "/api/users/42?page=2",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "10.0.0.7",
    "REMOTE_PORT": "52144",
    "SERVER_NAME": "0.0.0.0",
    "SERVER_PORT": "8000",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/api/users/42",
    "HTTP_HOST": "api.example.com",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "HTTP_ACCEPT": "application/json",
    "HTTP_ACCEPT_ENCODING": "gzip, deflate, br",
    "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.5",
    "HTTP_CONNECTION": "keep-alive",
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "HTTP_TRACEPARENT": TRACEPARENT,
}

#: Medians of overhead-over-bare ratios the Performance issue asks for: (numerator, denominator, target).
TARGETS: Final = (
    ("ours / floor, traced", "ours/simple", "floor/simple", 1.2),
    ("ours / floor, traced (batch)", "ours/batch", "floor/batch", 1.2),
    ("ours+metrics / floor+metrics", "ours+metrics/simple", "floor+metrics/simple", 1.0),
    ("ours+metrics / floor+metrics (batch)", "ours+metrics/batch", "floor+metrics/batch", 1.0),
    ("ours unsampled+metrics / floor unsampled+metrics", "ours+metrics/unsampled",
     "floor+metrics/unsampled", 1.0),
    ("ours / reference, traced", "ours/simple", "reference/simple", 0.45),
    ("ours / reference, traced (batch)", "ours/batch", "reference/batch", 0.45),
    ("ours / reference, with metrics", "ours+metrics/simple", "reference+metrics/simple", 0.6),
    ("ours / reference, with metrics (batch)", "ours+metrics/batch", "reference+metrics/batch", 0.6),
    ("ours / reference, unsampled with metrics", "ours+metrics/unsampled",
     "reference+metrics/unsampled", 0.5),
)  # fmt: skip

Processor = Literal["simple", "batch", "unsampled"]
Builder = Callable[[WSGIApplication, TracerProvider, MeterProvider], WSGIApplication]


# --- the application and the "server" ---


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The bare app: a fixed 200 with a Content-Length, the body as one chunk."""
    start_response("200 OK", list(RESPONSE_HEADERS))
    return [BODY]


def start_response(
    status: str, headers: list[tuple[str, str]], exc_info: object = None
) -> Callable[[bytes], object]:
    return _write


def _write(data: bytes) -> object:
    return None


def serve(app: WSGIApplication, requests: int) -> None:
    """Handle `requests` requests as a WSGI server does: fresh environ, iterate the body, close it."""
    template = ENVIRON
    for _ in range(requests):
        result = app(template.copy(), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()


# --- providers ---


class NoopExporter(SpanExporter):
    """Export nothing, successfully; count what was handed over (a drop check, not a timing)."""

    def __init__(self) -> None:
        self.exported = 0

    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


@dataclass
class Providers:
    """The SDK providers one case records into; `flush` runs inside the timed region."""

    tracer: TracerProvider
    meter: MeterProvider
    exporter: NoopExporter
    flush: Callable[[], object] | None


def providers(processor: Processor, metrics: bool) -> Providers:
    exporter = NoopExporter()
    tracer = TracerProvider(sampler=ALWAYS_OFF) if processor == "unsampled" else TracerProvider()
    span_processor: SpanProcessor = (
        BatchSpanProcessor(exporter) if processor == "batch" else SimpleSpanProcessor(exporter)
    )
    tracer.add_span_processor(span_processor)
    meter: MeterProvider = (
        SdkMeterProvider(metric_readers=[InMemoryMetricReader()]) if metrics else NoOpMeterProvider()
    )
    flush = span_processor.force_flush if processor == "batch" else None
    return Providers(tracer, meter, exporter, flush)


# --- the cases ---


class _FloorGetter(Getter[WSGIEnvironment]):
    """The least a getter can do: `traceparent` -> `HTTP_TRACEPARENT`."""

    @override
    def get(self, carrier: WSGIEnvironment, key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return None if value is None else [value]

    @override
    def keys(self, carrier: WSGIEnvironment) -> list[str]:
        return []


_FLOOR_GETTER: Final = _FloorGetter()


def floor(
    app: WSGIApplication, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> WSGIApplication:
    """The hand-written minimum: extract, a SERVER span with our final attributes (request attributes
    and the status code, given at start), attach/detach, end; with metrics, one histogram record with
    the span's context and an up-down counter +1/-1. Precomputed attributes; no WSGI logic at all."""
    tracer = tracer_provider.get_tracer("floor")
    attributes = {**request_record(ENVIRON, Config()).attributes, "http.response.status_code": 200}
    instruments: tuple[Histogram, UpDownCounter] | None = None
    if not isinstance(meter_provider, NoOpMeterProvider):
        meter = meter_provider.get_meter("floor")
        instruments = (
            meter.create_histogram(
                "http.server.request.duration",
                "s",
                explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
            ),
            meter.create_up_down_counter("http.server.active_requests", "{request}"),
        )
    active: Attributes = {"http.request.method": "GET", "url.scheme": "http"}
    duration: Attributes = {
        "http.request.method": "GET",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }

    def floor_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start = time.time_ns()
        parent = propagate.extract(environ, getter=_FLOOR_GETTER)
        span = tracer.start_span("GET", parent, SpanKind.SERVER, attributes)
        ctx = trace.set_span_in_context(span, parent)
        token = context.attach(ctx)
        if instruments is not None:
            instruments[1].add(1, active)
        try:
            result = app(environ, start_response)
            body = list(result)  # the floor consumes the body itself: no wrapper object
            close = getattr(result, "close", None)
            if close is not None:
                close()
        finally:
            span.end()
            if instruments is not None:
                instruments[0].record((time.time_ns() - start) / 1e9, duration, context=ctx)
                instruments[1].add(-1, active)
            context.detach(token)
        return body

    return floor_app


def ours(
    app: WSGIApplication, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> WSGIApplication:
    return otel_wsgi.wrap(
        app, config=Config(), tracer_provider=tracer_provider, meter_provider=meter_provider
    )


def reference_builder() -> Builder | None:
    """Return a builder for the reference middleware in stable mode, or None when it is not installed."""
    # The reference reads its mode once per process, on first use: set it before importing.
    os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    try:
        module: Any = importlib.import_module("opentelemetry.instrumentation.wsgi")
    except ImportError:
        return None
    middleware = module.OpenTelemetryMiddleware

    def reference(
        app: WSGIApplication, tracer_provider: TracerProvider, meter_provider: MeterProvider
    ) -> WSGIApplication:
        built: WSGIApplication = middleware(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        return built

    return reference


@dataclass
class Case:
    """One row: an app built over its own providers, and its per-round costs in ns per request."""

    name: str
    app: WSGIApplication
    providers: Providers | None
    samples: list[float] = field(default_factory=list)
    served: int = 0

    def run(self, requests: int) -> float:
        gc.collect()
        flush = None if self.providers is None else self.providers.flush
        begin = time.process_time_ns()
        serve(self.app, requests)
        if flush is not None:
            flush()
        elapsed = time.process_time_ns() - begin
        self.served += requests
        return elapsed / requests


def build_cases(builders: dict[str, Builder], only: Sequence[str]) -> list[Case]:
    cases = [Case("bare", hello, None)]
    for label, builder in builders.items():
        variants: list[tuple[str, Processor, bool]] = [
            ("", "simple", False),
            ("", "batch", False),
            ("+metrics", "simple", True),
            ("+metrics", "batch", True),
            ("+metrics", "unsampled", True),
        ]
        for suffix, processor, metrics in variants:
            name = f"{label}{suffix}/{processor}"
            if only and not any(name.startswith(prefix) for prefix in only):
                continue
            chosen = providers(processor, metrics)
            cases.append(Case(name, builder(hello, chosen.tracer, chosen.meter), chosen))
    if not only or any("ours/excluded".startswith(prefix) for prefix in only):
        # An excluded path (`excluded_urls`) should cost next to nothing: no span, no metric.
        chosen = providers("simple", True)
        excluded = Config(excluded_urls=("/api/users/",))
        app = otel_wsgi.wrap(
            hello, config=excluded, tracer_provider=chosen.tracer, meter_provider=chosen.meter
        )
        cases.append(Case("ours/excluded", app, chosen))
    return cases


# --- checks, timing and the report ---


def check_spans(builders: dict[str, Builder]) -> list[str]:
    """Run one request through each middleware into an in-memory exporter: same span, same parent?"""
    lines = []
    for label, builder in builders.items():
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        serve(builder(hello, tracer_provider, NoOpMeterProvider()), 1)
        spans = exporter.get_finished_spans()
        if len(spans) != 1:
            lines.append(f"  {label:<10} {len(spans)} spans (expected 1)!")
            continue
        span = spans[0]
        parent = span.parent is not None and f"{span.parent.trace_id:032x}" == TRACE_ID
        attributes = dict(span.attributes or {})
        lines.append(
            f"  {label:<10} {span.kind.name} {span.name!r}, {len(attributes)} attributes, "
            f"parent from traceparent: {'yes' if parent else 'NO'}, "
            f"status code {attributes.get('http.response.status_code')}"
        )
    return lines


def measure(cases: list[Case], rounds: int, requests: int) -> None:
    for case in cases:  # warm up: caches, first-use imports, the SDK's attribute sets
        case.run(min(requests, 200))
    for index in range(rounds):
        shift = index % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(case.run(requests))
        print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)


def spread(values: Sequence[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def report(cases: list[Case]) -> None:
    by_name = {case.name: case for case in cases}
    bare = by_name["bare"].samples
    overheads = {
        case.name: [cost - base for cost, base in zip(case.samples, bare, strict=True)] for case in cases
    }
    print(f"\n{'case':<28} {'µs/request median (min..max)':>30} {'overhead over bare, µs':>28}")
    for case in cases:
        costs = [ns / 1000 for ns in case.samples]
        over = [ns / 1000 for ns in overheads[case.name]]
        print(f"{case.name:<28} {spread(costs):>30} {spread(over) if case.name != 'bare' else '':>28}")
    print(f"\n{'ratio of overheads over bare':<52} {'median (min..max)':>22} {'target':>8}")
    for label, numerator, denominator, target in TARGETS:
        if numerator not in overheads or denominator not in overheads:
            continue
        ratios = [a / b for a, b in zip(overheads[numerator], overheads[denominator], strict=True) if b > 0]
        if not ratios:
            continue
        mark = "ok" if statistics.median(ratios) <= target else "MISS"
        print(f"{label:<52} {spread(ratios, 2):>22} {'<= ' + str(target):>8} {mark}")
    for case in cases:  # a processor that dropped spans would make its row look cheap
        if case.providers is None:
            continue
        exported = case.providers.exporter.exported
        expected = 0 if case.name.endswith(("/unsampled", "/excluded")) else case.served
        if exported != expected:
            print(f"warning: {case.name} exported {exported} spans for {case.served} requests")


def describe(rounds: int, requests: int, reference: bool) -> None:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    print(f"otel_wsgi overhead, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs, "
        f"{_cpu_model()}); opentelemetry-sdk {version('opentelemetry-sdk')}; "
        f"reference opentelemetry-instrumentation-wsgi {version('opentelemetry-instrumentation-wsgi')}"
        + ("" if reference else " (rows skipped)")
    )
    print(f"{rounds} rounds x {requests} requests per case, interleaved, process CPU time")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def profile(case: Case, requests: int) -> None:
    """Print where one case spends its time: top 25 by tottime, then the otel_wsgi functions alone."""
    case.run(min(requests, 500))
    profiler = cProfile.Profile()
    profiler.enable()
    serve(case.app, requests)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"cProfile of {case.name}, {requests} requests (times include cProfile's own overhead)\n")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(25)
    print("otel_wsgi functions only, by tottime:")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(r"otel_wsgi[/\\]")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15, quick 4)")
    parser.add_argument("--requests", type=int, help="requests per case per round (default 2000, quick 300)")
    parser.add_argument("--quick", action="store_true", help="a short run: fewer rounds and requests")
    parser.add_argument(
        "--only", default="", help="comma-separated case-name prefixes to run besides bare (e.g. ours,floor)"
    )
    parser.add_argument(
        "--profile", nargs="?", const="ours+metrics/simple", metavar="CASE",
        help="cProfile one case instead (default ours+metrics/simple); --requests default 20000",
    )  # fmt: skip
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 15)
    requests = args.requests or (20000 if args.profile else 300 if args.quick else 2000)
    builders: dict[str, Builder] = {"floor": floor, "ours": ours}
    reference = reference_builder()
    if reference is not None:
        builders["reference"] = reference
    if args.profile:
        chosen = [case for case in build_cases(builders, [args.profile]) if case.name == args.profile]
        if not chosen:
            parser.error(f"no case named {args.profile!r}")
        profile(chosen[0], requests)
        return
    only = [prefix for prefix in args.only.split(",") if prefix]
    describe(rounds, requests, reference is not None)
    print("one request through each middleware, into an InMemorySpanExporter:")
    print("\n".join(check_spans(builders)))
    cases = build_cases(builders, only)
    measure(cases, rounds, requests)
    report(cases)


if __name__ == "__main__":
    main()
