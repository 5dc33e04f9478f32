"""`otel-wsgi demo`: a bundled app under waitress on 127.0.0.1, a few requests, a line per span, a summary.

Every kind of response the middleware handles shows up: a plain route, a templated route, a 404, a 500,
an exception, a streamed body and a file download through `wsgi.file_wrapper`; some requests continue a
trace from an incoming `traceparent`.
"""

from __future__ import annotations

import http.client
import io
import logging
import random
import sys
from collections.abc import Iterable, Iterator
from typing import Final, TextIO
from wsgiref.types import StartResponse, WSGIEnvironment

from otel_wsgi import Config, set_route, wrap
from otel_wsgi.cli.decide import ExporterKind
from otel_wsgi.cli.pipeline import build_pipeline
from otel_wsgi.cli.servers import start_waitress

#: Finer buckets than the HTTP conventions' (5 ms .. 10 s): demo requests take about a millisecond.
DEMO_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)
#: The paths the demo cycles through (`{n}` is the request's number).
DEMO_PATHS: Final = ("/", "/users/{n}", "/stream", "/download", "/missing", "/fail", "/boom")
DOWNLOAD: Final = b"otel-wsgi demo file\n" * 64
_TIMEOUT: Final = 10.0


def demo_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The bundled app: `/`, `/users/<id>`, `/stream`, `/download`, `/fail` (a 500), `/boom` (raises),
    anything else a 404."""
    path: str = environ.get("PATH_INFO", "")
    text = [("Content-Type", "text/plain")]
    if path.startswith("/users/"):
        set_route(environ, "/users/{id}")
        start_response("200 OK", text)
        return [f"user {path[7:]}\n".encode()]
    if path in ("/", "/stream", "/download", "/fail", "/boom"):
        set_route(environ, path)
    if path == "/":
        start_response("200 OK", text)
        return [b"ok\n"]
    if path == "/stream":
        start_response("200 OK", text)
        return _chunks(5)
    if path == "/download":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        file_wrapper = environ["wsgi.file_wrapper"]
        body: Iterable[bytes] = file_wrapper(io.BytesIO(DOWNLOAD), 8192)
        return body
    if path == "/fail":
        start_response("500 Internal Server Error", text)
        return [b"failed\n"]
    if path == "/boom":
        raise RuntimeError("the demo app raised")
    start_response("404 Not Found", text)
    return [b"not found\n"]


def _chunks(count: int) -> Iterator[bytes]:
    for index in range(count):
        yield f"chunk {index}\n".encode()


def run_demo(requests: int, exporters: tuple[ExporterKind, ...], out: TextIO = sys.stdout) -> int:
    """Serve `requests` requests of the demo app, printing each span and then the summary; return 0.

    The console lines are the demo itself, so they are printed whatever `exporters` says; `otlp` also
    exports both signals, and no exporter at all (`none`) prints the lines without the summary.
    """
    traces: tuple[ExporterKind, ...] = ("console", *(kind for kind in exporters if kind != "console"))
    metric_kinds = traces if exporters else ()
    pipeline = build_pipeline(
        traces, metric_kinds, out=out, service_name="otel-wsgi-demo", buckets=DEMO_BUCKETS, install=False
    )
    app = wrap(
        demo_app,
        config=Config(),
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
    )
    # waitress logs the traceback of /boom; the span line already reports it.
    logging.getLogger("waitress").setLevel(logging.CRITICAL)
    server = start_waitress(app, "127.0.0.1", 0, threads=2)
    print(f"otel-wsgi demo: {requests} requests to http://127.0.0.1:{server.port}", file=out, flush=True)
    try:
        for number in range(requests):
            _request(server.port, DEMO_PATHS[number % len(DEMO_PATHS)].format(n=number), number % 3 == 1)
    finally:
        server.stop()
    print("\nhttp.server.request.duration by route:" if metric_kinds else "", file=out, flush=True)
    pipeline.shutdown(out)
    return 0


def _request(port: int, path: str, continued: bool) -> None:
    """GET `path`, with a fresh `traceparent` when `continued`; read and drop the answer."""
    headers: dict[str, str] = {}
    if continued:
        headers["traceparent"] = f"00-{random.getrandbits(128):032x}-{random.getrandbits(64):016x}-01"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=_TIMEOUT)
    try:
        connection.request("GET", path, headers=headers)
        connection.getresponse().read()
    finally:
        connection.close()
