"""Serve three requests through the middleware on 127.0.0.1 and print their spans to the console.

Run: `python -m otel_wsgi.demo`. It needs the OpenTelemetry SDK from the `cli` extra; the standard
library's wsgiref server is enough for three requests.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from typing_extensions import override

from otel_wsgi import Config, set_route, wrap


def hello(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """A tiny app with one route template, one 404 and one streamed body."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/users/"):
        set_route(environ, "/users/{id}")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"hello user {path[7:]}\n".encode()]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"chunk {i}\n".encode() for i in range(3))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


class _QuietHandler(WSGIRequestHandler):
    @override
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    app = wrap(hello, config=Config(traceresponse=True), tracer_provider=provider)
    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    answers = [_fetch(base + path) for path in ("/users/42?sig=secret", "/stream", "/missing")]
    server.shutdown()  # the span of the last request ends before this returns (same thread)
    provider.shutdown()
    for line in answers:  # after the spans, so the two outputs never interleave
        print(line)


def _fetch(url: str) -> str:
    """Request `url`; return one line with its status and the traceresponse header."""
    path = url.split("/", 3)[3]
    try:
        with urllib.request.urlopen(url) as response:
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as error:
        status, headers = error.code, error.headers
    return f"--> /{path}: {status}, traceresponse={headers['traceresponse']}"


if __name__ == "__main__":
    main()
