"""Soak by hand: a steady request rate for a long time through the production pipeline, sampled each minute.

    python benchmarks/soak.py                          # 200 req/s for 30 minutes
    python benchmarks/soak.py --minutes 10 --rate 100

gunicorn gthread (2 workers x 4 threads) serves tests/cli_app.py with `-c python:otel_wsgi.gunicorn`:
each worker exports through the official OTLP/HTTP exporter (batch span processor, periodic metric
reader) to tests/otlp_receiver.py, running in this process. Every request has its own path, query and
`traceparent`; each span received is paired with its request as it arrives (the receiver hands spans
over and forgets them, so this process stays small). Every `--interval` seconds one row: requests sent,
spans received, spans not paired correctly, and each worker's RSS (VmRSS of /proc/<pid>/status). At the
end: SIGTERM to the master (a graceful stop), then the final counts and the exported metrics' totals.
Exits 1 unless every request has exactly its own span and the metrics add up.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

TESTS_DIR: Final = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS_DIR))

from load_client import Sent  # noqa: E402
from otlp_load import SERVERS, serving, worker_pids  # noqa: E402
from otlp_receiver import OtlpReceiver, ReceivedSpan  # noqa: E402

CLIENTS: Final = 8
#: A client opens a new connection every this many requests, so that both workers keep accepting.
RECONNECT: Final = 500
TIMEOUT: Final = 30.0


@dataclass
class Tally:
    """What happened so far: requests sent and answered, spans received and how they paired."""

    sent: int = 0
    answered: int = 0
    spans: int = 0
    paired: int = 0
    wrong_parent: int = 0
    wrong_path: int = 0
    duplicated: int = 0
    unknown: int = 0


class Pairing:
    """Requests waiting for their span; each span received is paired with its request at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, Sent] = {}
        self._done: set[str] = set()
        self.tally = Tally()

    def sent(self, request: Sent) -> None:
        with self._lock:
            self.tally.sent += 1
            self.tally.answered += request.status == 200
            self._waiting[request.query] = request

    def received(self, spans: list[ReceivedSpan]) -> None:
        with self._lock:
            for span in spans:
                self._pair(span)

    def _pair(self, span: ReceivedSpan) -> None:
        self.tally.spans += 1
        query = span.attributes.get("url.query")
        if not isinstance(query, str):
            self.tally.unknown += 1
            return
        request = self._waiting.pop(query, None)
        if request is None:
            self.tally.duplicated += query in self._done
            self.tally.unknown += query not in self._done
            return
        self._done.add(query)
        self.tally.paired += 1
        self.tally.wrong_parent += (span.trace_id, span.parent_span_id) != (
            request.trace_id,
            request.parent_id,
        )
        self.tally.wrong_path += span.attributes.get("url.path") != request.path

    def snapshot(self) -> Tally:
        with self._lock:
            return Tally(**asdict(self.tally))


class Numbers:
    """Request numbers 0, 1, 2, ... handed out to the client threads one at a time."""

    def __init__(self) -> None:
        self._lock, self._counter = threading.Lock(), itertools.count()

    def take(self) -> int:
        with self._lock:
            return next(self._counter)


def _client(port: int, numbers: Numbers, due: float, rate: float, end: float, out: Pairing) -> None:
    """Send request after request, each at its due time (the shared schedule is `rate` per second)."""
    connection: http.client.HTTPConnection | None = None
    sent = 0
    try:
        while True:
            number = numbers.take()
            start = due + number / rate
            if start >= end:
                return
            time.sleep(max(0.0, start - time.monotonic()))
            if connection is None or sent % RECONNECT == 0:
                if connection is not None:
                    connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
            path, query = f"/work/{number}", f"n={number}"
            try:
                connection.request(
                    "GET", f"{path}?{query}", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
                )
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status, connection = 0, None
            out.sent(Sent(query, trace_id, parent_id, status, path))
            sent += 1
    finally:
        if connection is not None:
            connection.close()


def rss_mib(pid: int) -> float:
    """The resident set size of `pid` in MiB (VmRSS), or 0 if it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match[1]) / 1024 if match else 0.0


def _row(minute: float, tally: Tally, rss: list[float]) -> str:
    lost = tally.wrong_parent + tally.wrong_path + tally.duplicated + tally.unknown
    workers = " ".join(f"{value:7.1f}" for value in rss)
    return f"{minute:6.1f} {tally.sent:9d} {tally.answered:9d} {tally.spans:9d} {lost:6d}   {workers}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between samples")
    args = parser.parse_args()
    pairing = Pairing()
    with OtlpReceiver() as receiver, tempfile.TemporaryDirectory() as directory:
        log_path = Path(directory) / "gunicorn.log"
        with serving(
            SERVERS["gthread"], receiver.endpoint, log_path, {"OTEL_SERVICE_NAME": "otel-wsgi-soak"}
        ) as (
            process,
            port,
        ):
            workers = worker_pids(process.pid)
            print(
                f"gunicorn master {process.pid}, workers {workers}; "
                f"{args.rate:g} req/s for {args.minutes:g} min"
            )
            print("minute      sent  answered     spans  wrong   worker RSS (MiB)", flush=True)
            began = time.monotonic()
            end = began + args.minutes * 60
            numbers = Numbers()
            clients = [
                threading.Thread(
                    target=_client, args=(port, numbers, began, args.rate, end, pairing), daemon=True
                )
                for _ in range(CLIENTS)
            ]
            for client in clients:
                client.start()
            print(_row(0.0, pairing.snapshot(), [rss_mib(pid) for pid in workers]), flush=True)
            while any(client.is_alive() for client in clients):
                next_sample = time.monotonic() + args.interval
                while time.monotonic() < next_sample and any(client.is_alive() for client in clients):
                    time.sleep(0.5)
                    pairing.received(receiver.take_spans())
                minute = (time.monotonic() - began) / 60
                print(_row(minute, pairing.snapshot(), [rss_mib(pid) for pid in workers]), flush=True)
            ran = time.monotonic() - began
            process.send_signal(signal.SIGTERM)
            code = process.wait(TIMEOUT)
            log = log_path.read_text()
        pairing.received(receiver.take_spans())
        durations = receiver.latest_histograms("http.server.request.duration")
        active = receiver.latest_sums("http.server.active_requests")
        rejected = receiver.rejected
    tally = pairing.snapshot()
    counted = sum(point.count for point in durations)
    final = {
        **asdict(tally),
        "missing": tally.sent - tally.paired,
        "minutes": round(ran / 60, 1),
        "rate": round(tally.sent / ran, 1),
        "histogram_count": counted,
        "active_requests": sum(point.value for point in active),
        "rejected": rejected,
        "exit_code": code,
        "workers_replaced": worker_pids_changed(log),
    }
    print(json.dumps(final))
    ok = (
        tally.sent == tally.answered == tally.paired == tally.spans == counted
        and not (tally.wrong_parent or tally.wrong_path or tally.duplicated or tally.unknown or rejected)
        and final["active_requests"] == 0
        and code == 0
    )
    return 0 if ok else 1


def worker_pids_changed(log: str) -> int:
    """How many workers gunicorn booted beyond the first two (a worker that died was replaced)."""
    return max(0, len(re.findall(r"Booting worker with pid", log)) - 2)


if __name__ == "__main__":
    sys.exit(main())
