"""The traced app that tests/test_servers.py serves with gunicorn in a subprocess.

Spans go to a JSON-lines file through a small `SpanExporter` (one line per ended span), and so do three
probes: the type of the object the middleware handed the server, each close of a served file, and any
warning the SDK or the middleware logs (the SDK only logs a second `end()` of a span).
Run: `OTEL_WSGI_TEST_EVENTS=/tmp/events.jsonl OTEL_WSGI_TEST_FILE=/tmp/blob python -m gunicorn
--pythonpath tests servers_app:app`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from typing_extensions import override

from otel_wsgi import Config, set_route, wrap

#: Where spans and probe records are appended, one JSON object per line.
EVENTS_ENV: Final = "OTEL_WSGI_TEST_EVENTS"
#: The file `/file` serves through `wsgi.file_wrapper`.
FILE_ENV: Final = "OTEL_WSGI_TEST_FILE"

_LOCK: Final = threading.Lock()


def _append(record: dict[str, object]) -> None:
    """Append one record to the events file (threads of one worker share it: one lock, one write)."""
    line = json.dumps(record) + "\n"
    with _LOCK, open(os.environ[EVENTS_ENV], "a", encoding="utf-8") as out:
        out.write(line)


class JsonLinesExporter(SpanExporter):
    """Write each ended span as `{"kind": "span", ...}` to the events file."""

    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            context = span.get_span_context()
            _append(
                {
                    "kind": "span",
                    "name": span.name,
                    "span_kind": span.kind.name,
                    "status": span.status.status_code.name,
                    "description": span.status.description,
                    "attributes": dict(span.attributes or {}),
                    "events": [event.name for event in span.events],
                    "trace_id": f"{context.trace_id:032x}" if context is not None else None,
                    "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
                }
            )
        return SpanExportResult.SUCCESS


class _LogToEvents(logging.Handler):
    """Record warnings of the SDK and the middleware (a second `end()`, a failing hook) as events."""

    @override
    def emit(self, record: logging.LogRecord) -> None:
        _append({"kind": "log", "logger": record.name, "message": record.getMessage()})


class _LoggedFile(io.FileIO):
    """A served file that records its (first) close, so a test sees the server closed it."""

    def __init__(self, path: str, query: str) -> None:
        super().__init__(path, "rb")
        self.query = query

    @override
    def close(self) -> None:
        if not self.closed:
            _append({"kind": "file_closed", "query": self.query})
        super().close()


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
        blob = _LoggedFile(os.environ[FILE_ENV], environ.get("QUERY_STRING", ""))
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
        _append(
            {
                "kind": "result",
                "query": environ.get("QUERY_STRING", ""),
                "type": f"{type(result).__module__}.{type(result).__qualname__}",
                "is_file_wrapper": isinstance(result, file_wrapper),
            }
        )
        return result

    return spy


for _name in ("opentelemetry", "otel_wsgi"):
    logging.getLogger(_name).addHandler(_LogToEvents(logging.WARNING))

_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))

app: Final = _spy(wrap(inner, config=Config(), tracer_provider=_provider))
