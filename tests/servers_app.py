"""The traced app that tests/test_servers.py serves with gunicorn in a subprocess.

Spans go to a JSON-lines file (tests/span_lines.py), and so do three probes: the type of the object the
middleware handed the server, each close of a served file, and any warning the SDK or the middleware logs.
Run: `OTEL_WSGI_TEST_EVENTS=/tmp/events.jsonl OTEL_WSGI_TEST_FILE=/tmp/blob python -m gunicorn
--pythonpath tests servers_app:app`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from span_lines import FILE_ENV, JsonLinesExporter, LoggedFile, append_event, log_warnings_to_events

from otel_wsgi import Config, set_route, wrap


def _chunks(count: int) -> Iterator[bytes]:
    for index in range(count):
        yield f"chunk {index}\n".encode()


def inner(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Routes: /hello (list), /stream (generator), /file (file_wrapper), /boom (raises), else 404."""
    path = environ.get("PATH_INFO", "")
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/hello":
        set_route(environ, "/hello")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello\n"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _chunks(5)
    if path == "/file":
        blob = LoggedFile(os.environ[FILE_ENV], environ.get("QUERY_STRING", ""))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        file_wrapper = environ["wsgi.file_wrapper"]
        result: Iterable[bytes] = file_wrapper(blob, 65536)
        return result
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def _spy(traced: WSGIApplication) -> WSGIApplication:
    """Record what the middleware returned to the server (its type, and whether it is the server's
    own `wsgi.file_wrapper` object, which is what gunicorn's sendfile path checks with isinstance)."""

    def spy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        result = traced(environ, start_response)
        file_wrapper = environ["wsgi.file_wrapper"]
        append_event(
            {
                "kind": "result",
                "query": environ.get("QUERY_STRING", ""),
                "type": f"{type(result).__module__}.{type(result).__qualname__}",
                "is_file_wrapper": isinstance(result, file_wrapper),
            }
        )
        return result

    return spy


log_warnings_to_events()

_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))

app: Final = _spy(wrap(inner, config=Config(), tracer_provider=_provider))
