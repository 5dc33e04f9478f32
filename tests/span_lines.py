"""The events file tests/matrix_app.py writes in its worker process (one JSON object per line), and
what its routes serve.

The worker writes each ended span (`JsonLinesExporter`), the probes the app adds and any warning the SDK
or the middleware logs (the SDK only logs a second `end()`); the tests and the load checker read it back
(`read_records`, `records_of`). This module never imports the app, so tests can import it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from typing_extensions import override

#: Where spans and probe records are appended, one JSON object per line.
EVENTS_ENV: Final = "OTEL_WSGI_TEST_EVENTS"
#: The file the apps serve at `/file`.
FILE_ENV: Final = "OTEL_WSGI_TEST_FILE"


# What tests/matrix_app.py serves, shared with the tests that check it.
#: Chunks of `/stream` and the pause before each (the span must cover them all).
STREAM_CHUNKS: Final = 5
STREAM_PAUSE: Final = 0.04
#: `/big`: at most this many 64 KiB chunks (a client that hangs up stops it much earlier).
BIG_CHUNKS: Final = 1024
BIG_CHUNK: Final = b"x" * 65536
#: `/gevent`: chunks, each after a `gevent.sleep` of this long.
GEVENT_CHUNKS: Final = 3
GEVENT_PAUSE: Final = 0.05
METRICS_PATH: Final = "/_metrics"


_LOCK: Final = threading.Lock()
#: One line of the events file, as read back.
Record = dict[str, Any]


def append_event(record: dict[str, object]) -> None:
    """Append one record to the events file (threads of one worker share it: one lock, one write)."""
    line = json.dumps(record) + "\n"
    with _LOCK, open(os.environ[EVENTS_ENV], "a", encoding="utf-8") as out:
        out.write(line)


def span_record(span: ReadableSpan) -> dict[str, object]:
    """What a test needs of an ended span, as plain JSON values (ids in hex, times in ns)."""
    context, parent = span.get_span_context(), span.parent
    return {
        "kind": "span",
        "name": span.name,
        "span_kind": span.kind.name,
        "status": span.status.status_code.name,
        "description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "trace_id": f"{context.trace_id:032x}" if context is not None else None,
        "span_id": f"{context.span_id:016x}" if context is not None else None,
        "parent_id": f"{parent.span_id:016x}" if parent is not None else None,
        "parent_trace_id": f"{parent.trace_id:032x}" if parent is not None else None,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
    }


class LoggedFile(io.FileIO):
    """A served file that logs its first close, so a test sees the server closed it exactly once."""

    def __init__(self, path: str, query: str) -> None:
        super().__init__(path, "rb")
        self.query = query

    @override
    def close(self) -> None:
        if not self.closed:
            append_event({"kind": "closed", "query": self.query, "time_ns": time.time_ns()})
        super().close()


class JsonLinesExporter(SpanExporter):
    """Write each ended span as `{"kind": "span", ...}` to the events file."""

    @override
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            append_event(span_record(span))
        return SpanExportResult.SUCCESS


class _LogToEvents(logging.Handler):
    """Record warnings of the SDK and the middleware (a second `end()`, a failing hook) as events."""

    @override
    def emit(self, record: logging.LogRecord) -> None:
        append_event({"kind": "log", "logger": record.name, "message": record.getMessage()})


def log_warnings_to_events() -> None:
    """Send the SDK's and the middleware's warnings to the events file (call once per process)."""
    for name in ("opentelemetry", "otel_wsgi"):
        logging.getLogger(name).addHandler(_LogToEvents(logging.WARNING))


# --- reading the events file (in the test process) ---


def read_records(events: Path) -> list[Record]:
    """Every complete line of the events file (a line being appended right now is left for later)."""
    return [json.loads(line) for line in events.read_text().split("\n")[:-1]]


def query_of(record: Record) -> object:
    """The query string of the request a record belongs to (a span carries it as `url.query`)."""
    return record["attributes"].get("url.query") if record["kind"] == "span" else record.get("query")


def records_of(events: Path, kind: str, query: str) -> list[Record]:
    """The records of this kind (`span`, `closed`, `result`, ...) that belong to the request with `query`."""
    return [record for record in read_records(events) if record["kind"] == kind and query_of(record) == query]
