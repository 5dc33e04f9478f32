"""Load by hand: N concurrent clients, each request with its own `traceparent`, then every span paired.

    python benchmarks/load.py --otlp                            # the production pipeline; 16 x 500
    python benchmarks/load.py                                   # the test exporter; 16 x 500
    python benchmarks/load.py --otlp --servers waitress --clients 32 --requests 2000

Servers: gunicorn gthread (2 workers x 4 threads), gunicorn gevent, waitress; each in its own process on
127.0.0.1, stopped gracefully before the spans are counted.
- `--otlp`: the production pipeline (tests/otlp_load.py, run small in CI by tests/test_load_otlp.py):
  tests/cli_app.py traced by `gunicorn -c python:otel_wsgi.gunicorn` (2 gevent workers) or
  `otel-wsgi serve --server waitress`, exporting with the official OTLP/HTTP exporter, batch span
  processor and periodic metric reader, to tests/otlp_receiver.py. Each request has its own path too.
  Also prints the duration histograms' total, each worker's last active-requests value, the stop time.
- without: tests/matrix_app.py, spans written by the JSON-lines test exporter with a SimpleSpanProcessor
  (the harness of tests/test_server_concurrency.py).
Prints one JSON line per server: requests sent and answered, spans paired, and every mismatch count.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from load_client import check, read_spans, run_clients  # noqa: E402
from matrix_servers import GEVENT, KINDS, ServerKind, gunicorn_command, serving  # noqa: E402
from otlp_load import SERVERS as OTLP_SERVERS  # noqa: E402
from otlp_load import load  # noqa: E402

SERVERS: Final = {
    "gthread": ServerKind(
        "gunicorn-gthread-2x4", "", "os", gunicorn_command("-k", "gthread", "--threads", "4", workers=2)
    ),
    "gevent": GEVENT,
    "waitress": next(kind for kind in KINDS if kind.name == "waitress"),
}


def run(kind: ServerKind, clients: int, requests: int) -> dict[str, object]:
    """Load one server, stop it gracefully, then pair the spans it wrote with the requests sent."""
    with tempfile.TemporaryDirectory() as directory:
        with serving(kind, Path(directory)) as running:
            began = time.monotonic()
            sent = run_clients(running.port, clients, requests)
            elapsed = time.monotonic() - began
        report = check(sent, read_spans(running.events))
    rate = round(len(sent) / elapsed) if elapsed else 0
    return {"server": kind.name, **asdict(report), "ok": report.ok, "seconds": round(elapsed, 2), "rps": rate}


def run_otlp(name: str, clients: int, requests: int) -> dict[str, object]:
    """Load one server through the OTLP pipeline; the figures, with `ok` only if they all add up."""
    with tempfile.TemporaryDirectory() as directory:
        figures = load(OTLP_SERVERS[name], clients, requests, Path(directory))
    total = clients * requests
    row = figures.row()
    row["ok"] = (
        figures.report.ok
        and figures.report.sent == total
        and figures.histogram_count == figures.histogram_buckets == total
        and dict(figures.active_last) == dict.fromkeys(figures.spans_per_worker, 0)
        and (figures.rejected, figures.exit_code, figures.tracebacks) == (0, 0, 0)
    )
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated: " + ", ".join(SERVERS))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=500, help="per client")
    parser.add_argument("--otlp", action="store_true", help="the production pipeline (OTLP, batch)")
    args = parser.parse_args()
    names = args.servers.split(",")
    if args.otlp:
        results = [run_otlp(name, args.clients, args.requests) for name in names]
    else:
        results = [run(SERVERS[name], args.clients, args.requests) for name in names]
    for result in results:
        print(json.dumps(result))
    return 0 if all(result["ok"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
