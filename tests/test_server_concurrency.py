"""Many requests at once: greenlets of one gevent worker, and a small load on three servers.

Each request carries its own `traceparent` and query; each span must pair with its own request only.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import span_lines
from apps import DEADLINE, http_get, in_threads, wait_until
from load_client import check, read_spans, run_clients
from matrix_servers import (
    GEVENT,
    GUNICORN_FILE,
    KINDS,
    Running,
    ServerKind,
    gunicorn_command,
    new_query,
    serving,
)

CONCURRENT: Final = 100


@pytest.fixture(scope="module")
def gevent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A gunicorn gevent worker of its own, so its peak of requests in flight is this test's."""
    with serving(GEVENT, tmp_path_factory.mktemp("gevent-concurrency")) as running:
        yield running


def test_gevent_greenlets_keep_their_own_context(gevent_server: Running) -> None:
    """100 requests stream at once in one worker thread (each greenlet sleeps between chunks): each
    span keeps its own parent and query, and each body saw its own span as current throughout."""
    parents = {new_query("greenlet"): (os.urandom(16).hex(), os.urandom(8).hex()) for _ in range(CONCURRENT)}
    bodies: dict[str, tuple[int, bytes]] = {}
    ready = threading.Barrier(CONCURRENT, timeout=DEADLINE)

    def call(query: str) -> None:
        trace_id, parent_id = parents[query]
        connection = http.client.HTTPConnection("127.0.0.1", gevent_server.port, timeout=DEADLINE)
        try:
            connection.connect()
            ready.wait()  # all connected: the requests arrive together
            connection.request(
                "GET", f"/gevent?{query}", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
            )
            response = connection.getresponse()
            bodies[query] = (response.status, response.read())
        finally:
            connection.close()

    in_threads(call, parents)
    spans = {query: gevent_server.span(query) for query in parents}
    # A request without traceparent, after them all, in the same worker: a root span of a new trace.
    root_query = new_query("no-parent")
    status, root_body = http_get(gevent_server.port, f"/gevent?{root_query}")
    root = gevent_server.span(root_query)
    gevent_server.wait_until_idle()
    snapshot = gevent_server.metrics()

    assert len(bodies) == CONCURRENT
    for query, (trace_id, parent_id) in parents.items():
        span = spans[query]
        assert (span["parent_trace_id"], span["parent_id"], span["trace_id"]) == (
            trace_id,
            parent_id,
            trace_id,
        )
        assert (span["attributes"]["url.path"], span["attributes"]["url.query"]) == ("/gevent", query)
        line = f"{trace_id}-{span['span_id']} {query}\n"
        assert bodies[query] == (200, (line * span_lines.GEVENT_CHUNKS).encode())
        assert len(gevent_server.of("closed", query)) == 1
    assert len({span["span_id"] for span in spans.values()}) == CONCURRENT
    assert (status, root["parent_id"]) == (200, None)
    assert root["trace_id"] not in {trace_id for trace_id, _ in parents.values()}
    assert (
        root_body
        == (f"{root['trace_id']}-{root['span_id']} {root_query}\n" * span_lines.GEVENT_CHUNKS).encode()
    )
    # The greenlets really overlapped in the one worker (100 of 100 in every run here; half is the bar,
    # so a loaded machine that staggers the clients does not fail it), and none is still active.
    assert snapshot["max_in_flight"] >= CONCURRENT // 2
    assert [p["value"] for p in snapshot["points"] if p["name"] == "http.server.active_requests"] == [0]


LOAD_KINDS: Final = [
    ServerKind(
        "gunicorn-gthread-2x4",
        GUNICORN_FILE,
        "os",
        gunicorn_command("-k", "gthread", "--threads", "4", workers=2),
    ),
    GEVENT,
    next(kind for kind in KINDS if kind.name == "waitress"),
]


@pytest.mark.parametrize("kind", LOAD_KINDS, ids=[kind.name for kind in LOAD_KINDS])
def test_small_load_pairs_every_span_with_its_request(kind: ServerKind, tmp_path: Path) -> None:
    """8 keep-alive clients x 25 requests, each with its own traceparent: one span per request, each with
    its own request's parent and path (the by-hand load script runs the same client at a large size)."""
    with serving(kind, tmp_path) as running:
        sent = run_clients(running.port, clients=8, requests=25, path="/hello")
        wait_until(lambda: check(sent, read_spans(running.events)).ok, "every span of the load")
    report = check(sent, read_spans(running.events))

    assert (report.sent, report.answered, report.spans) == (200, 200, 200)
    assert (report.missing, report.duplicated, report.wrong_parent, report.wrong_path) == (0, 0, 0, 0)
    assert [r for r in running.records() if r["kind"] == "log"] == []
