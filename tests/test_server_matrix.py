"""The middleware under eight real servers, each in its own process on 127.0.0.1 (tests/matrix_app.py).

gunicorn (sync, gthread, gevent workers), uWSGI, waitress, wsgiref, werkzeug and cheroot each serve the
same traced app for the whole module (tests/matrix_servers.py); every test makes real HTTP requests and
reads what the worker wrote: its spans, its probes (closes, sendfile calls, what the server was handed)
and its metrics. Waits are bounded; the only durations asserted are lower bounds set by the app's sleeps.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest
import span_lines
from apps import DEADLINE, http_get, wait_until
from matrix_servers import BLOB_SIZE, KINDS, Running, ServerKind, new_query, serving, status_or_none
from span_lines import Record

STREAMED: Final = b"".join(f"chunk {index}\n".encode() for index in range(span_lines.STREAM_CHUNKS))
BASE_METRIC: Final = {"http.request.method": "GET", "url.scheme": "http", "network.protocol.version": "1.1"}


@pytest.fixture(scope="module", params=KINDS, ids=[kind.name for kind in KINDS])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    kind: ServerKind = request.param
    with serving(kind, tmp_path_factory.mktemp(kind.name)) as running:
        yield running


def _duration_points(snapshot: Record, attributes: dict[str, object]) -> list[Record]:
    return [
        point
        for point in snapshot["points"]
        if point["name"] == "http.server.request.duration" and point["attributes"] == attributes
    ]


def _histogram(snapshot: Record, attributes: dict[str, object]) -> tuple[int, float]:
    """(count, sum) of the duration histogram for exactly this attribute set; (0, 0) if never recorded."""
    points = _duration_points(snapshot, attributes)
    return (points[0]["count"], points[0]["sum"]) if points else (0, 0.0)


@dataclass(frozen=True)
class Case:
    """A route and what the client, the span and the duration metric must show for it."""

    path: str
    status: int
    #: The body, for the routes whose body does not depend on the request (None: computed in the test).
    body: bytes | None
    span_name: str
    span_status: str
    #: `http.response.status_code` on the span and the metric (None: the app raised before answering).
    status_code: int | None
    error_type: str | None
    #: How many `close()` of the app's body (or served file) the worker logs for the request.
    closes: int


CASES: Final = [
    pytest.param(Case("/hello", 200, None, "GET /hello", "UNSET", 200, None, 0), id="200"),
    pytest.param(Case("/nope", 404, b"not found\n", "GET", "UNSET", 404, None, 0), id="404"),
    pytest.param(Case("/fail", 500, b"failed\n", "GET", "ERROR", 500, "500", 0), id="500"),
    pytest.param(Case("/boom", 500, None, "GET", "ERROR", None, "RuntimeError", 0), id="exception"),
    pytest.param(Case("/stream", 200, STREAMED, "GET", "UNSET", 200, None, 1), id="stream"),
    pytest.param(Case("/file", 200, None, "GET", "UNSET", 200, None, 1), id="file"),
]


@pytest.mark.parametrize("case", CASES)
def test_each_route_gets_its_status_body_span_and_one_duration_point(server: Running, case: Case) -> None:
    query = new_query(case.path.strip("/"))
    metric_attributes: dict[str, object] = {**BASE_METRIC}
    if case.status_code is not None:
        metric_attributes["http.response.status_code"] = case.status_code
    if case.span_name != "GET":
        metric_attributes["http.route"] = case.span_name.split(" ", 1)[1]
    if case.error_type is not None:
        metric_attributes["error.type"] = case.error_type
    before = _histogram(server.metrics(), metric_attributes)

    if case.path == "/boom":
        status, body = status_or_none(server.port, f"{case.path}?{query}"), b""
    else:
        status, body = http_get(server.port, f"{case.path}?{query}")
    span = server.span(query)
    wait_until(lambda: len(server.of("closed", query)) >= case.closes, "the app's close()")
    # The worker records the metrics just after it ends (and so writes) the span: wait for them too.
    wait_until(
        lambda: _histogram(server.metrics(), metric_attributes)[0] > before[0], "the request's duration"
    )
    after = server.metrics()

    assert status == (server.kind.on_raise if case.path == "/boom" else case.status)
    own_span = f"hello {span['trace_id']}-{span['span_id']}\n".encode()  # the app saw its span as current
    computed = {"/file": server.blob.read_bytes(), "/hello": own_span, "/boom": b""}
    assert body == computed.get(case.path, case.body)
    assert (span["name"], span["span_kind"], span["status"]) == (case.span_name, "SERVER", case.span_status)
    attributes = span["attributes"]
    assert (attributes["url.path"], attributes["url.query"]) == (case.path, query)
    assert attributes["server.port"] == server.port
    assert attributes.get("http.response.status_code") == case.status_code
    assert attributes.get("error.type") == case.error_type
    assert span["events"] == (["exception"] if case.error_type == "RuntimeError" else [])
    assert span["parent_id"] is None
    closed = server.of("closed", query)
    assert len(closed) == case.closes
    # The span ends after the app's close(), so it covers the whole stream (and the file's sending).
    assert all(span["end_ns"] >= record["time_ns"] >= span["start_ns"] for record in closed)
    if case.path == "/stream":
        assert closed[0]["chunks"] == span_lines.STREAM_CHUNKS
        assert span["end_ns"] - span["start_ns"] >= span_lines.STREAM_CHUNKS * span_lines.STREAM_PAUSE * 1e9
    # One more request in this attribute set, measured over exactly the span's interval.
    count_after, sum_after = _histogram(after, metric_attributes)
    assert count_after == before[0] + 1
    assert sum_after - before[1] == pytest.approx((span["end_ns"] - span["start_ns"]) / 1e9, abs=1e-6)
    assert [p["value"] for p in after["points"] if p["name"] == "http.server.active_requests"] == [0]


def test_traceparent_header_is_the_spans_parent_and_the_app_sees_its_span(server: Running) -> None:
    query = new_query("traceparent")
    trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()

    status, body = http_get(server.port, f"/hello?{query}", {"traceparent": f"00-{trace_id}-{parent_id}-01"})
    span = server.span(query)

    assert status == 200
    assert (span["parent_trace_id"], span["parent_id"], span["trace_id"]) == (trace_id, parent_id, trace_id)
    # The app ran with the request's span current.
    assert body == f"hello {span['trace_id']}-{span['span_id']}\n".encode()


def test_file_download_keeps_the_servers_fast_path(server: Running) -> None:
    """The server is handed its own file object back, and sends the file the way it does without us."""
    query = new_query("sendfile")
    status, body = http_get(server.port, f"/file?{query}")
    span = server.span(query)
    (result,) = server.of("result", query)
    sent = [record for record in server.of("sendfile", query) if record["file"] == str(server.blob)]

    assert (status, body == server.blob.read_bytes()) == (200, True)
    assert span["attributes"]["http.response.status_code"] == 200
    assert result["type"] == server.kind.file_result
    assert result["server_object"] is result["file_wrapper"]
    if server.kind.sendfile == "os":
        # gunicorn's socket.sendfile went through os.sendfile (counted inside the worker) for every byte.
        assert sum(record["bytes"] for record in sent) == BLOB_SIZE
        assert len(sent) >= 1
    else:
        assert sent == []
    if server.kind.sendfile == "uwsgi":
        # uWSGI's request log marks responses sent by its C sendfile loop (not os.sendfile).
        line = rf"GET /file\?{query} => generated {BLOB_SIZE} bytes in \d+ msecs via sendfile\(\)"
        wait_until(lambda: re.search(line, server.log.read_text()) is not None, "uWSGI's request log")


def _hang_up_mid_stream(port: int, target: str) -> bytes:
    """Read the head and some of the body, then reset the connection (SO_LINGER 0: an RST, no FIN)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or len(received) < 200_000:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return received


def test_client_disconnect_mid_stream_closes_the_body_and_is_not_an_error(server: Running) -> None:
    query = new_query("disconnect")
    received = _hang_up_mid_stream(server.port, f"/big?{query}")
    span = server.span(query)
    wait_until(lambda: server.of("closed", query) != [], "the app's close()")
    # The worker then serves the next request normally.
    after_query = new_query("after-disconnect")
    status, _ = http_get(server.port, f"/hello?{after_query}")
    after = server.span(after_query)
    server.wait_until_idle()

    assert received.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))  # wsgiref answers in HTTP/1.0
    (closed,) = server.of("closed", query)
    assert closed["chunks"] < span_lines.BIG_CHUNKS
    assert span["end_ns"] >= closed["time_ns"]
    # A client that hangs up is not a server error.
    assert (span["status"], span["events"]) == ("UNSET", [])
    assert span["attributes"]["http.response.status_code"] == 200
    assert (status, after["status"], after["parent_id"]) == (200, "UNSET", None)
    assert server.active_requests() == [0]
