"""Load through the production pipeline: a server traced by the gunicorn hooks or by `otel-wsgi serve`,
exporting with the official OTLP/HTTP exporter (batch span processor, periodic metric reader) to
tests/otlp_receiver.py; N clients of tests/load_client.py; a graceful stop; then the figures.

Shared by tests/test_load_otlp.py (small, in CI) and benchmarks/load.py --otlp (large, by hand). Every
server serves tests/cli_app.py in its own process group on 127.0.0.1, port 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from load_client import Report, check, run_clients
from otlp_receiver import OtlpReceiver

TESTS_DIR: Final = Path(__file__).resolve().parent
REPO_DIR: Final = TESTS_DIR.parent
DEADLINE: Final = 30.0
#: Every request has its own path under this route (tests/cli_app.py names it), and its own query.
PATH: Final = "/work/{n}"
ROUTE: Final = "/work/{n}"
DURATION: Final = "http.server.request.duration"
ACTIVE: Final = "http.server.active_requests"
INSTANCE: Final = "service.instance.id"
ROUTE_KEY: Final = "http.route"
#: Each client opens a new connection every this many requests, so both workers of gunicorn accept some.
RECONNECT: Final = 20


@dataclass(frozen=True)
class OtlpServer:
    """A server command whose workers export over OTLP, and the signal that stops it gracefully."""

    name: str
    command: Callable[[], list[str]]
    stop_signal: signal.Signals
    #: gunicorn's worker processes (the waitress command serves in its own process: 0).
    workers: int = 0


def _gunicorn(*worker: str) -> Callable[[], list[str]]:
    return lambda: [
        sys.executable, "-m", "gunicorn", "-c", "python:otel_wsgi.gunicorn", *worker, "-w", "2",
        "-b", "127.0.0.1:0", "--no-control-socket", "--graceful-timeout", "20",
        "--pythonpath", str(TESTS_DIR), "cli_app:app",
    ]  # fmt: skip


def _waitress() -> list[str]:
    return [
        sys.executable, "-m", "otel_wsgi", "serve", "cli_app:app", "--server", "waitress", "--threads", "4",
        "--port", "0", "--exporter", "otlp",
    ]  # fmt: skip


SERVERS: Final = {
    "gthread": OtlpServer(
        "gunicorn-gthread-2x4", _gunicorn("-k", "gthread", "--threads", "4"), signal.SIGTERM, workers=2
    ),
    "gevent": OtlpServer("gunicorn-gevent-2", _gunicorn("-k", "gevent"), signal.SIGTERM, workers=2),
    "waitress": OtlpServer("waitress-4", _waitress, signal.SIGINT),
}
_LISTENING: Final = re.compile(r"http://127\.0\.0\.1:(\d+)")
#: The bit of SIGABRT in /proc/<pid>/status `SigCgt`: a gunicorn worker catches it once it has installed
#: its own signal handlers (the master does not). A SIGTERM that comes before goes to the handler inherited
#: from the master and is lost: the worker then runs on until the graceful timeout kills it. gunicorn's
#: gevent worker monkey-patches first, so that window lasts a few hundred milliseconds after the fork.
_SIGABRT_CAUGHT: Final = 1 << (signal.SIGABRT - 1)


def worker_pids(master: int) -> list[int]:
    """The pids of the master's children (gunicorn's workers), from /proc."""
    pids: list[int] = []
    for task in Path(f"/proc/{master}/task").iterdir():
        pids.extend(int(pid) for pid in (task / "children").read_text().split())
    return sorted(pids)


def _handles_signals(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    found = re.search(r"^SigCgt:\s+([0-9a-f]+)$", status, re.M)
    return found is not None and bool(int(found[1], 16) & _SIGABRT_CAUGHT)


def workers_ready(master: int, workers: int) -> bool:
    """Whether `workers` workers of `master` run, each with its own signal handlers (stoppable gracefully)."""
    pids = worker_pids(master)
    return len(pids) == workers and all(_handles_signals(pid) for pid in pids)


@contextmanager
def serving(
    server: OtlpServer, endpoint: str, log: Path, extra: Mapping[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start `server` exporting to `endpoint` (with `extra` in its environment); yield it and its port
    once it can be stopped gracefully; kill its process group if it is still running afterwards."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_SERVICE_NAME": "otel-wsgi-load",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")])),
            **(extra or {}),  # the caller's values win
        }
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            server.command(), cwd=TESTS_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE
        while (found := _LISTENING.search(log.read_text())) is None or not workers_ready(
            process.pid, server.workers
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not start ({process.poll()}):\n{log.read_text()}")
            time.sleep(0.05)
        yield process, int(found[1])
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(DEADLINE)


@dataclass(frozen=True)
class Figures:
    """What one load run gave: the pairing report, then what the receiver and the server's log say."""

    server: str
    report: Report
    seconds: float
    #: Spans received from each worker process (by `service.instance.id`).
    spans_per_worker: Mapping[str, int]
    #: The duration histograms' final count for the route, and the sum of their bucket counts.
    histogram_count: int
    histogram_buckets: int
    #: Each worker's last `http.server.active_requests` value, summed over its attribute sets.
    active_last: Mapping[str, float]
    rejected: int
    exit_code: int
    tracebacks: int
    #: From the stop signal to the server's exit.
    stop_seconds: float

    def row(self) -> dict[str, object]:
        """The figures as one flat JSON object (what the by-hand script prints)."""
        return {
            "server": self.server,
            **asdict(self.report),
            "ok": self.report.ok,
            "seconds": round(self.seconds, 2),
            "rps": round(self.report.sent / self.seconds) if self.seconds else 0,
            "spans_per_worker": sorted(self.spans_per_worker.values()),
            "histogram_count": self.histogram_count,
            "histogram_buckets": self.histogram_buckets,
            "active_last": sorted(self.active_last.values()),
            "rejected": self.rejected,
            "exit_code": self.exit_code,
            "tracebacks": self.tracebacks,
            "stop_seconds": round(self.stop_seconds, 2),
        }


def load(server: OtlpServer, clients: int, requests: int, directory: Path) -> Figures:
    """Load `server` with `clients` x `requests`, stop it gracefully, and return the figures."""
    log = directory / f"{server.name}.log"
    with OtlpReceiver() as receiver, serving(server, receiver.endpoint, log) as (process, port):
        began = time.monotonic()
        sent = run_clients(port, clients, requests, PATH, reconnect=RECONNECT)
        elapsed = time.monotonic() - began
        process.send_signal(server.stop_signal)
        stopping = time.monotonic()
        code = process.wait(DEADLINE)
        stopped = time.monotonic() - stopping
        spans = receiver.spans()
        durations = [
            p for p in receiver.latest_histograms(DURATION) if p.attributes.get("http.route") == ROUTE
        ]
        active: dict[str, float] = {}
        for point in receiver.latest_sums(ACTIVE):
            instance = str(point.resource.get(INSTANCE))
            active[instance] = active.get(instance, 0) + point.value
        rejected = receiver.rejected
    return Figures(
        server=server.name,
        report=check(sent, [span.record() for span in spans]),
        seconds=elapsed,
        spans_per_worker=Counter(str(span.resource.get(INSTANCE)) for span in spans),
        histogram_count=sum(point.count for point in durations if point.attributes.get(ROUTE_KEY) == ROUTE),
        histogram_buckets=sum(
            sum(point.bucket_counts) for point in durations if point.attributes.get(ROUTE_KEY) == ROUTE
        ),
        active_last=active,
        rejected=rejected,
        exit_code=code,
        tracebacks=log.read_text().count("Traceback"),
        stop_seconds=stopped,
    )
