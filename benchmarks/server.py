"""Throughput under a real server: gunicorn gthread (1 worker, 4 threads) on 127.0.0.1, bare vs wrapped.

Run by hand, never from the tests (see benchmarks/README.md):

    python benchmarks/server.py                   # 5 interleaved rounds of 5 s per app, under wrk
    python benchmarks/server.py --quick           # 2 rounds of 2 s
    python benchmarks/server.py --apps bare,floor+metrics,ours+metrics,reference+metrics

One gunicorn process per app, each on its own port, all started before the first round and loaded in
turn (rotated order each round), so every app sees the same machine state and only one is busy at a
time. Each gunicorn imports this file as `server` and calls `build_app(name)` in its worker. Spans go
to a BatchSpanProcessor over a no-op exporter (the production setup); metrics to an SDK MeterProvider
whose reader is never collected. The load generator is `wrk` when it is on PATH, else a bounded
Python client (threads with keep-alive connections, bounded by time and a request cap); if it cannot
keep the server busy it becomes part of the bottleneck and the ratios move toward 1. Every request
carries a sampled `traceparent`. With taskset and 2+ CPUs the servers are pinned to CPU 0 and the
client to CPU 1 (much steadier numbers; `--no-pin` to disable).
Besides requests/s it prints the gunicorn worker's CPU time per request (from /proc, Linux only): the
steadiest figure, and the one to compare with benchmarks/overhead.py; then that CPU over bare as ratios,
ours / floor (the hand-written SDK minimum of overhead.py) and ours / reference, round by round. The
reference rows are skipped when it is not installed.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

HERE: Final = Path(__file__).resolve().parent
BODY: Final = b"Hello, World!\n"
TRACEPARENT: Final = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
APPS: Final = ("bare", "floor", "ours", "reference", "floor+metrics", "ours+metrics", "reference+metrics")
DEFAULT_APPS: Final = ",".join(APPS)
#: Ratios of worker CPU over bare, round by round: (label, numerator, denominator, target).
RATIOS: Final = (
    ("ours / floor, traced", "ours", "floor", 1.1),
    ("ours+metrics / floor+metrics", "ours+metrics", "floor+metrics", 1.1),
    ("ours / reference, traced", "ours", "reference", None),
    ("ours+metrics / reference+metrics", "ours+metrics", "reference+metrics", None),
)
REFERENCE_MODULE: Final = "opentelemetry.instrumentation.wsgi"
#: Set by --pin: `taskset` prefixes putting the servers and wrk on different CPUs.
CLIENT_PIN: list[str] = []
#: A load generator: (url, seconds, connections) -> (requests per second, requests answered).
Measure = Callable[[str, float, int], tuple[float, int]]


# --- inside the gunicorn worker ---


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response(
        "200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(BODY)))]
    )
    return [BODY]


def build_app(name: str) -> WSGIApplication:
    """Return the app gunicorn serves for one row (`gunicorn 'server:build_app("ours")'`)."""
    if name == "bare":
        return hello
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from typing_extensions import override

    class NoopExporter(SpanExporter):
        @override
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    meter_provider: MeterProvider = (
        SdkMeterProvider(metric_readers=[InMemoryMetricReader()])
        if name.endswith("+metrics")
        else NoOpMeterProvider()
    )
    if name.startswith("floor"):
        return _floor(tracer_provider, meter_provider)
    if name.startswith("ours"):
        import otel_wsgi
        from otel_wsgi.config import Config

        return otel_wsgi.wrap(
            hello, config=Config(), tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    if name.startswith("reference"):
        # OTEL_SEMCONV_STABILITY_OPT_IN=http is set in the server's environment by the driver.
        from opentelemetry.instrumentation.wsgi import (  # type: ignore[import-not-found, unused-ignore]
            OpenTelemetryMiddleware,
        )

        built: WSGIApplication = OpenTelemetryMiddleware(
            hello, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        return built
    raise ValueError(f"unknown app {name!r}; choose from {', '.join(APPS)}")


def _floor(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> WSGIApplication:
    """The hand-written floor of `overhead.py`, its span precomputed from ours' span for the first request.

    The driver sends one URL, so every request has the same attribute keys and types as the first (the
    values differ in the client port only), and the SDK's work depends on those, not on the values.
    """
    from overhead import FLOOR_KEY, FloorSpan, floor, with_floor_spans

    inner = floor(hello, tracer_provider, meter_provider)
    known: list[FloorSpan] = []

    def floor_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not known:  # once per worker, during the warm-up (a race only computes it twice)
            known.append(with_floor_spans("server", [environ]).environs[0][FLOOR_KEY])
        environ[FLOOR_KEY] = known[0]
        return inner(environ, start_response)

    return floor_app


# --- the driver ---


@dataclass
class Server:
    """One gunicorn process serving one app, and the requests/s it reached in each round."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: IO[bytes]
    rates: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # worker CPU seconds per request, where /proc allows

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/users/42?page=2"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start(name: str, threads: int, pin: Sequence[str]) -> Server:
    port = free_port()
    log = tempfile.TemporaryFile()
    command = [
        *pin,
        sys.executable, "-m", "gunicorn", "--worker-class", "gthread", "--workers", "1",
        "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--chdir", str(HERE),
        "--pythonpath", str(HERE), "--log-level", "warning", f"server:build_app({name!r})",
    ]  # fmt: skip
    env = {**os.environ, "OTEL_SEMCONV_STABILITY_OPT_IN": "http"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Server(name, port, process, log)


def wait_ready(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(server.url, timeout=1) as response:
                if response.read() == BODY:
                    return
        except OSError:
            time.sleep(0.1)
    server.log.seek(0)
    raise SystemExit(f"{server.name} did not start:\n{server.log.read().decode(errors='replace')}")


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    server.log.close()


def worker_cpu(master: int) -> float | None:
    """Return the CPU seconds (user + system) used so far by the gunicorn workers of `master`, on Linux."""
    total, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == master:  # fields after "(comm)": state, ppid, ..., utime at 11, stime at 12
            total, found = total + int(fields[11]) + int(fields[12]), True
    return total / os.sysconf("SC_CLK_TCK") if found else None


def wrk_rate(url: str, seconds: float, connections: int) -> tuple[float, int]:
    """Run wrk (one thread): return Requests/sec and the request count; fail on errors or non-2xx."""
    command = [
        *CLIENT_PIN,
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "-H", f"traceparent: {TRACEPARENT}", url,
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"wrk saw errors against {url}:\n{output}")
    rate = re.search(r"Requests/sec:\s*([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    if rate is None or count is None:
        raise SystemExit(f"could not read wrk's output:\n{output}")
    return float(rate.group(1)), int(count.group(1))


def python_rate(url: str, seconds: float, connections: int, limit: int = 2_000_000) -> tuple[float, int]:
    """Keep `connections` keep-alive connections busy for `seconds` (at most `limit` requests)."""
    _, _, rest = url.partition("//")
    netloc, _, path = rest.partition("/")
    host, _, port = netloc.partition(":")
    deadline = time.monotonic() + seconds
    counts = [0] * connections
    errors: list[str] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            while time.monotonic() < deadline and sum(counts) < limit:
                connection.request("GET", "/" + path, headers={"traceparent": TRACEPARENT})
                response = connection.getresponse()
                if response.read() != BODY or response.status != 200:
                    errors.append(f"status {response.status}")
                    return
                counts[index] += 1
        except OSError as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    began = time.monotonic()
    workers = [threading.Thread(target=client, args=(index,)) for index in range(connections)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise SystemExit(f"client errors against {url}: {errors[:3]}")
    return sum(counts) / (time.monotonic() - began), sum(counts)


def load(server: Server, measure: Measure, seconds: float, connections: int) -> None:
    """Load one server for `seconds`; record its requests/s and its workers' CPU time per request."""
    before = worker_cpu(server.process.pid)
    rate, count = measure(server.url, seconds, connections)
    after = worker_cpu(server.process.pid)
    server.rates.append(rate)
    if before is not None and after is not None and count:
        server.cpu.append((after - before) / count)


def report(servers: list[Server]) -> None:
    bare = next((server for server in servers if server.name == "bare"), None)
    print(
        f"\n{'app':<18} {'requests/s median (min..max)':>30} {'ratio to bare':>20} "
        f"{'worker CPU µs/request':>24} {'over bare, µs':>14}"
    )
    for server in servers:
        rates, cpu = server.rates, [seconds * 1e6 for seconds in server.cpu]
        line = f"{server.name:<18} {_spread(rates, 0):>30} "
        if bare is not None and server is not bare:
            line += f"{_spread([rate / base for rate, base in zip(rates, bare.rates, strict=True)], 2):>20} "
        else:
            line += f"{'':>20} "
        if len(cpu) == len(rates):
            line += f"{_spread(cpu, 0):>24} "
            if bare is not None and server is not bare and len(bare.cpu) == len(cpu):
                line += f"{(statistics.median(server.cpu) - statistics.median(bare.cpu)) * 1e6:>14.0f}"
        print(line)


def report_ratios(servers: list[Server]) -> None:
    """Print worker CPU over bare as ratios between apps, computed round by round."""
    by_name = {server.name: server for server in servers}
    bare = by_name.get("bare")
    if bare is None or len(bare.cpu) != len(bare.rates):
        return
    print(f"\n{'ratio of worker CPU over bare':<40} {'median (min..max)':>22} {'target':>8}")
    for label, numerator, denominator, target in RATIOS:
        top, bottom = by_name.get(numerator), by_name.get(denominator)
        if top is None or bottom is None or not len(top.cpu) == len(bottom.cpu) == len(bare.cpu):
            continue
        values = [
            (over - base) / (under - base)
            for over, under, base in zip(top.cpu, bottom.cpu, bare.cpu, strict=True)
            if under > base
        ]
        if not values:
            continue
        mark = "" if target is None else "ok" if statistics.median(values) <= target else "MISS"
        print(
            f"{label:<40} {_spread(values, 2):>22} {'' if target is None else '<= ' + str(target):>8} {mark}"
        )


def _spread(values: Sequence[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--apps", default=DEFAULT_APPS, help=f"comma-separated, from {', '.join(APPS)}")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument(
        "--duration", type=float, help="seconds of load per app per round (default 5, quick 2)"
    )
    parser.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads (1 worker)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        help="servers on CPU 0, the client on CPU 1 (default: when taskset exists and there are 2+ CPUs)",
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.apps = [name for name in args.apps.split(",") if name]
    if unknown := [name for name in args.apps if name not in APPS]:
        parser.error(f"unknown apps {unknown}; choose from {', '.join(APPS)}")
    can_pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    if args.pin and not can_pin:
        parser.error("--pin needs taskset and at least 2 CPUs")
    args.pin = can_pin if args.pin is None else args.pin
    if args.client == "wrk" and shutil.which("wrk") is None:
        parser.error("wrk is not on PATH")
    args.wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    return args


def available(names: list[str]) -> list[str]:
    """Drop the reference rows when `opentelemetry-instrumentation-wsgi` is not installed."""
    if importlib.util.find_spec("opentelemetry.instrumentation") is not None and (
        importlib.util.find_spec(REFERENCE_MODULE) is not None
    ):
        return names
    skipped = [name for name in names if name.startswith("reference")]
    if skipped:
        print(f"opentelemetry-instrumentation-wsgi is not installed: skipping {', '.join(skipped)}")
    return [name for name in names if not name.startswith("reference")]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    names = available(args.apps)
    measure: Measure = wrk_rate if args.wrk else python_rate
    server_pin = ["taskset", "-c", "0"] if args.pin else []
    if args.pin:
        CLIENT_PIN[:] = ["taskset", "-c", "1"]
        os.sched_setaffinity(0, {1})  # the Python client runs in this process
    print(
        f"gunicorn gthread, 1 worker x {args.threads} threads, 127.0.0.1; client "
        f"{'wrk -t1' if args.wrk else 'Python threads'} with {args.connections} connections; "
        f"{args.rounds} rounds x {args.duration:g} s per app, interleaved; {os.cpu_count()} CPUs"
        + ("; servers pinned to CPU 0, client to CPU 1" if args.pin else ""),
        flush=True,
    )
    servers: list[Server] = []
    try:
        for name in names:
            servers.append(start(name, args.threads, server_pin))
        for server in servers:
            wait_ready(server)
            measure(server.url, 1.0, args.connections)  # warm up: imports, caches, instruments
        for index in range(args.rounds):
            shift = index % len(servers)
            for server in servers[shift:] + servers[:shift]:
                load(server, measure, args.duration, args.connections)
            print(f"  round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for server in servers:
            stop(server)
    report(servers)
    report_ratios(servers)


if __name__ == "__main__":
    main()
