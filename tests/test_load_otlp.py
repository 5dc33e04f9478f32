"""Load through the production pipeline, at a small size: gunicorn gthread (2 workers x 4 threads) and
gevent (2 workers) with `-c python:otel_wsgi.gunicorn`, and `otel-wsgi serve --server waitress`; the
official OTLP/HTTP exporter, batch span processor and periodic metric reader, to tests/otlp_receiver.py.

After a graceful stop every request has exactly one span, with its own request's parent, path and query;
the workers' last active-requests values add up to 0 and their duration histograms to the requests.
`python benchmarks/load.py --otlp` runs the same at a large size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from otlp_load import SERVERS, load

CLIENTS: Final = 8
REQUESTS: Final = 25  # per client
#: The servers stop within this (their graceful timeout is 20 s: a worker that outlives it is killed).
STOP_SECONDS: Final = 10.0


@pytest.mark.parametrize("name", list(SERVERS))
def test_every_request_has_its_own_span_after_a_graceful_stop(name: str, tmp_path: Path) -> None:
    figures = load(SERVERS[name], CLIENTS, REQUESTS, tmp_path)
    report, total = figures.report, CLIENTS * REQUESTS
    print(f"\n{figures.row()}")

    assert (report.sent, report.answered, report.spans) == (total, total, total), figures
    assert (report.missing, report.duplicated, report.unknown) == (0, 0, 0), figures
    assert (report.wrong_parent, report.wrong_path) == (0, 0), figures
    assert (figures.histogram_count, figures.histogram_buckets) == (total, total), figures
    # Every worker that served exported its active-requests series last with 0 requests in flight.
    assert dict(figures.active_last) == dict.fromkeys(figures.spans_per_worker, 0), figures
    assert (figures.rejected, figures.exit_code, figures.tracebacks) == (0, 0, 0), figures
    assert figures.stop_seconds < STOP_SECONDS, figures
