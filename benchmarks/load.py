"""Load by hand: N concurrent clients, each request with its own `traceparent`, then every span paired.

    python benchmarks/load.py                                   # gthread 2x4, gevent, waitress; 16 x 500
    python benchmarks/load.py --servers waitress --clients 32 --requests 2000

Each server serves tests/matrix_app.py in its own process on 127.0.0.1 (the same harness as
tests/test_server_concurrency.py runs at a small size in CI), stopped gracefully before the spans are
counted. Spans go to the JSON-lines test exporter with a SimpleSpanProcessor; the OTLP/HTTP exporter with
batch processing is the next step (only the app's exporter changes: the checker reads the same records).
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated: " + ", ".join(SERVERS))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=500, help="per client")
    args = parser.parse_args()
    results = [run(SERVERS[name], args.clients, args.requests) for name in args.servers.split(",")]
    for result in results:
        print(json.dumps(result))
    return 0 if all(result["ok"] for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
