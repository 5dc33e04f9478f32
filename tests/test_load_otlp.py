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
from apps import wait_until
from load_client import check, run_clients
from otlp_load import DEADLINE, PATH, ROUTE, SERVERS, load, serving
from otlp_receiver import OtlpReceiver

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


def test_gevent_workers_export_on_schedule_before_any_stop(tmp_path: Path) -> None:
    """Under gevent the batch processor's and the metric reader's threads are greenlets of the worker's
    hub: they must still run on their schedule while the worker serves, not only at its exit."""
    extra = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
    with (
        OtlpReceiver() as receiver,
        serving(SERVERS["gevent"], receiver.endpoint, tmp_path / "log", extra) as (process, port),
    ):
        sent = run_clients(port, clients=4, requests=5, path=PATH)
        spans = receiver.wait_for_spans(len(sent), timeout=DEADLINE)
        wait_until(lambda: _counted(receiver) == len(sent), "the histograms to count every request")
        assert process.poll() is None  # all of it arrived while the workers were serving

    assert check(sent, [span.record() for span in spans]).ok


def _counted(receiver: OtlpReceiver) -> int:
    return sum(
        point.count
        for point in receiver.latest_histograms("http.server.request.duration")
        if point.attributes.get("http.route") == ROUTE
    )
