"""Per-request CPU cost of otel_wsgi, side by side with a bare app, the SDK's floor and the reference.

Run by hand, never from the tests (see benchmarks/README.md):

    python benchmarks/overhead.py                 # full run, both request streams (about two minutes)
    python benchmarks/overhead.py --quick         # a few seconds, for a smoke check
    python benchmarks/overhead.py --profile       # cProfile of otel_wsgi on the realistic stream
    python benchmarks/overhead.py --check         # digest of the spans and metrics ours emits

Every case is a WSGI app called in-process, as a server would: a fresh copy of the next environ of a
stream, the app called, its body iterated and closed. Two streams (see `traffic.py`): the realistic one
(3,001 seeded requests that vary as production traffic does) and the single environ (one request
repeated). Every case of both streams runs interleaved round-robin in one process, the order rotated
each round; each round times `--requests` requests of each case in process CPU time
(`time.process_time_ns`, so a batch processor's worker thread is counted too), every case of a stream
getting the same slice of it. The reference rows (`opentelemetry-instrumentation-wsgi`, stable semantic
conventions) are skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib
import importlib.metadata
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

from check import CONFIGS, record, server_start_response
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
from traffic import SINGLE, realistic_stream
from typing_extensions import override

import otel_wsgi
from otel_wsgi.config import Config

BODY: Final = b"Hello, World!\n"
RESPONSE_HEADERS: Final = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BODY)))]
#: Where the floor finds its precomputed span: one extra key in every environ of every case.
FLOOR_KEY: Final = "benchmark.floor"
STREAMS: Final = ("realistic", "single")

#: Bucket advice for `http.server.request.duration` (seconds), from the HTTP semantic conventions.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

#: Medians of overhead-over-bare ratios the Performance issue asks for: (label, numerator, denominator,
#: target). The first six are the headline figures; the batch rows show the processor does not matter.
TARGETS: Final = (
    ("ours / floor, traced", "ours/simple", "floor/simple", 1.2),
    ("ours+metrics / floor+metrics", "ours+metrics/simple", "floor+metrics/simple", 0.9),
    ("ours unsampled+metrics / floor unsampled+metrics", "ours+metrics/unsampled",
     "floor+metrics/unsampled", 0.75),
    ("ours / reference, traced", "ours/simple", "reference/simple", 0.45),
    ("ours / reference, with metrics", "ours+metrics/simple", "reference+metrics/simple", 0.5),
    ("ours / reference, unsampled with metrics", "ours+metrics/unsampled",
     "reference+metrics/unsampled", 0.5),
    ("ours / floor, traced (batch)", "ours/batch", "floor/batch", 1.2),
    ("ours+metrics / floor+metrics (batch)", "ours+metrics/batch", "floor+metrics/batch", 0.9),
    ("ours / reference, traced (batch)", "ours/batch", "reference/batch", 0.45),
    ("ours / reference, with metrics (batch)", "ours+metrics/batch", "reference+metrics/batch", 0.5),
)  # fmt: skip

Processor = Literal["simple", "batch", "unsampled"]
Builder = Callable[[WSGIApplication, TracerProvider, MeterProvider], WSGIApplication]


# --- the application and the "server" ---


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The bare app: a fixed 200 with a Content-Length, the body as one chunk."""
    start_response("200 OK", list(RESPONSE_HEADERS))
    return [BODY]


def serve(app: WSGIApplication, environs: Sequence[WSGIEnvironment]) -> None:
    """Handle one request per environ as a WSGI server does: a fresh copy, iterate the body, close it."""
    for template in environs:
        result = app(template.copy(), server_start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class Stream:
    """The environs one family of cases walks through, each carrying the floor's precomputed span."""

    name: str
    environs: tuple[WSGIEnvironment, ...]

    def window(self, offset: int, requests: int) -> list[WSGIEnvironment]:
        """The `requests` environs from `offset` on, wrapping around (built before the timed region)."""
        size = len(self.environs)
        return [self.environs[(offset + index) % size] for index in range(requests)]


@dataclass(frozen=True, slots=True)
class FloorSpan:
    """What the floor hands the SDK for one request, precomputed from the span ours emitted for it."""

    name: str
    attributes: Attributes
    active: Attributes
    duration: Attributes


def with_floor_spans(name: str, environs: Sequence[WSGIEnvironment]) -> Stream:
    """Return the stream with each environ carrying, under FLOOR_KEY, the span ours emits for it."""
    recorded = record(environs, Config())
    if len(recorded.spans) != len(environs):
        raise SystemExit(f"ours emitted {len(recorded.spans)} spans for {len(environs)} requests")
    carried = []
    for environ, span in zip(environs, recorded.spans, strict=True):
        attributes = dict(span.attributes or {})
        active = {key: attributes[key] for key in ("http.request.method", "url.scheme")}
        duration_keys = (*active, "network.protocol.version", "http.response.status_code")
        duration = {key: attributes[key] for key in duration_keys if key in attributes}
        carried.append({**environ, FLOOR_KEY: FloorSpan(span.name, attributes, active, duration)})
    return Stream(name, tuple(carried))


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
    """The hand-written minimum: extract, a SERVER span with ours' final name and attributes (request
    attributes and the status code, given at start), attach/detach, end; with metrics, one histogram
    record with the span's context and an up-down counter +1/-1. The span of each request is
    precomputed (the environ carries it under FLOOR_KEY): no WSGI logic at all."""
    tracer = tracer_provider.get_tracer("floor")
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

    def floor_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start = time.time_ns()
        precomputed: FloorSpan = environ[FLOOR_KEY]
        parent = propagate.extract(environ, getter=_FLOOR_GETTER)
        span = tracer.start_span(precomputed.name, parent, SpanKind.SERVER, precomputed.attributes)
        ctx = trace.set_span_in_context(span, parent)
        token = context.attach(ctx)
        if instruments is not None:
            instruments[1].add(1, precomputed.active)
        try:
            result = app(environ, start_response)
            body = list(result)  # the floor consumes the body itself: no wrapper object
            close = getattr(result, "close", None)
            if close is not None:
                close()
        finally:
            span.end()
            if instruments is not None:
                seconds = (time.time_ns() - start) / 1e9
                instruments[0].record(seconds, precomputed.duration, context=ctx)
                instruments[1].add(-1, precomputed.active)
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
    """One row: an app built over its own providers, fed by one stream; its per-round ns per request."""

    name: str
    stream: Stream
    app: WSGIApplication
    providers: Providers | None
    samples: list[float] = field(default_factory=list)
    served: int = 0

    def run(self, environs: Sequence[WSGIEnvironment]) -> float:
        gc.collect()
        flush = None if self.providers is None else self.providers.flush
        begin = time.process_time_ns()
        serve(self.app, environs)
        if flush is not None:
            flush()
        elapsed = time.process_time_ns() - begin
        self.served += len(environs)
        return elapsed / len(environs)


def build_cases(builders: dict[str, Builder], stream: Stream, only: Sequence[str]) -> list[Case]:
    cases = [Case("bare", stream, hello, None)]
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
            cases.append(Case(name, stream, builder(hello, chosen.tracer, chosen.meter), chosen))
    excluded_wanted = not only or any("ours/excluded".startswith(prefix) for prefix in only)
    if stream.name == "single" and excluded_wanted:
        # An excluded path (`excluded_urls`) should cost next to nothing: no span, no metric.
        chosen = providers("simple", True)
        excluded = Config(excluded_urls=("/api/users/",))
        app = otel_wsgi.wrap(
            hello, config=excluded, tracer_provider=chosen.tracer, meter_provider=chosen.meter
        )
        cases.append(Case("ours/excluded", stream, app, chosen))
    return cases


# --- checks, timing and the report ---


def check_spans(builders: dict[str, Builder], stream: Stream) -> list[str]:
    """Run a stream once through each middleware into an in-memory exporter: same spans, same parents?"""
    lines = []
    environs = stream.environs
    remote = sum(1 for environ in environs if "HTTP_TRACEPARENT" in environ)
    for label, builder in builders.items():
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        serve(builder(hello, tracer_provider, NoOpMeterProvider()), environs)
        spans = exporter.get_finished_spans()
        if len(spans) != len(environs):
            lines.append(f"  {label:<10} {len(spans)} spans for {len(environs)} requests!")
            continue
        parents = sum(1 for span in spans if span.parent is not None and span.parent.is_remote)
        kinds = sorted({span.kind.name for span in spans})
        attributes = statistics.mean(len(span.attributes or {}) for span in spans)
        with_status = sum(1 for span in spans if "http.response.status_code" in (span.attributes or {}))
        lines.append(
            f"  {label:<10} {len(spans)} {'/'.join(kinds)} spans, {len({s.name for s in spans})} names, "
            f"{attributes:.1f} attributes on average, remote parents {parents}/{remote}, "
            f"status code on {with_status}"
        )
    return lines


def measure(cases: list[Case], rounds: int, requests: int) -> None:
    for case in cases:  # warm up: caches, first-use imports, the SDK's attribute sets
        case.run(case.stream.window(0, min(requests, 500)))
    for index in range(rounds):
        shift = index % len(cases)
        windows = {}  # every case of a stream gets the same slice of it; the slice moves each round
        for case in cases:
            if case.stream.name not in windows:
                windows[case.stream.name] = case.stream.window(index * requests, requests)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(case.run(windows[case.stream.name]))
        print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)


def spread(values: Sequence[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def report(stream: str, cases: list[Case]) -> None:
    by_name = {case.name: case for case in cases}
    bare = by_name["bare"].samples
    overheads = {
        case.name: [cost - base for cost, base in zip(case.samples, bare, strict=True)] for case in cases
    }
    print(f"\n{stream} stream")
    print(f"{'case':<28} {'µs/request median (min..max)':>30} {'overhead over bare, µs':>28}")
    for case in cases:
        costs = [ns / 1000 for ns in case.samples]
        over = [ns / 1000 for ns in overheads[case.name]]
        print(f"{case.name:<28} {spread(costs):>30} {spread(over) if case.name != 'bare' else '':>28}")
    print(f"\n{'ratio of overheads over bare (' + stream + ')':<52} {'median (min..max)':>22} {'target':>8}")
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
    """Print where one case spends its time: top 30 by tottime, then the otel_wsgi functions alone."""
    case.run(case.stream.window(0, min(requests, 500)))
    environs = case.stream.window(0, requests)
    profiler = cProfile.Profile()
    profiler.enable()
    serve(case.app, environs)
    profiler.disable()
    stats = pstats.Stats(profiler)
    print(
        f"cProfile of {case.name} on the {case.stream.name} stream, {requests} requests "
        "(times include cProfile's own overhead)\n"
    )
    stats.sort_stats(pstats.SortKey.TIME).print_stats(30)
    print("otel_wsgi functions only, by tottime:")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(r"otel_wsgi[/\\]")


def check(dump: str | None) -> None:
    """Print the digest of what ours emits for the realistic stream, per configuration in CONFIGS."""
    environs = realistic_stream()
    lines: list[str] = []
    for name, config in CONFIGS.items():
        recorded = record(environs, config)
        print(f"{name:<8} {len(environs)} requests, {len(recorded.spans)} spans, digest {recorded.digest}")
        lines += [f"{name} {line}" for line in recorded.lines]
    if dump is not None:
        with open(dump, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")


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
        "--streams", default=",".join(STREAMS), help="comma-separated, from realistic, single (default both)"
    )
    parser.add_argument(
        "--profile", nargs="?", const="ours+metrics/simple", metavar="CASE",
        help="cProfile one case instead (default ours+metrics/simple) on the first of --streams; "
        "--requests default 20000",
    )  # fmt: skip
    parser.add_argument(
        "--check",
        action="store_true",
        help="print the digest of ours' spans and metrics on the realistic stream",
    )
    parser.add_argument(
        "--check-dump", metavar="FILE", help="with --check: write the lines behind the digests"
    )
    args = parser.parse_args(argv)
    if args.check:
        check(args.check_dump)
        return
    names = [name for name in args.streams.split(",") if name]
    if unknown := [name for name in names if name not in STREAMS]:
        parser.error(f"unknown streams {unknown}; choose from {', '.join(STREAMS)}")
    rounds = args.rounds or (4 if args.quick else 15)
    requests = args.requests or (20000 if args.profile else 300 if args.quick else 2000)
    builders: dict[str, Builder] = {"floor": floor, "ours": ours}
    reference = reference_builder()
    if reference is not None:
        builders["reference"] = reference
    streams = [
        with_floor_spans(name, realistic_stream() if name == "realistic" else [SINGLE]) for name in names
    ]
    if args.profile:
        chosen = [
            case for case in build_cases(builders, streams[0], [args.profile]) if case.name == args.profile
        ]
        if not chosen:
            parser.error(f"no case named {args.profile!r}")
        profile(chosen[0], requests)
        return
    only = [prefix for prefix in args.only.split(",") if prefix]
    describe(rounds, requests, reference is not None)
    for stream in streams:
        print(f"the {stream.name} stream ({len(stream.environs)} requests) once through each middleware:")
        print("\n".join(check_spans(builders, stream)))
    families = [build_cases(builders, stream, only) for stream in streams]
    measure([case for family in families for case in family], rounds, requests)
    for stream, family in zip(streams, families, strict=True):
        report(stream.name, family)


if __name__ == "__main__":
    main()
