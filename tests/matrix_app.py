"""The traced app every server of tests/test_server_matrix.py serves, in its own process.

What the worker sees goes to a JSON-lines events file (one object per line, appended under a lock):
each ended span (tests/span_lines.py), each `close()` of a response body or served file,
what the middleware handed the server, each `os.sendfile` call, and any warning logged by the SDK or the
middleware. Metrics stay in the worker (an `InMemoryMetricReader`); `GET /_metrics` (an excluded URL, so
never traced nor measured itself) answers them as JSON.
Run under any server with `OTEL_WSGI_TEST_EVENTS=/tmp/events.jsonl OTEL_WSGI_TEST_FILE=/tmp/blob`, e.g.
`python -m gunicorn --pythonpath tests matrix_app:app` or `python tests/matrix_serve.py werkzeug`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from span_lines import (
    BIG_CHUNK,
    BIG_CHUNKS,
    FILE_ENV,
    GEVENT_CHUNKS,
    GEVENT_PAUSE,
    METRICS_PATH,
    STREAM_CHUNKS,
    STREAM_PAUSE,
    JsonLinesExporter,
    LoggedFile,
    append_event,
    log_warnings_to_events,
)

from otel_wsgi import Config, set_route, wrap

_REQUEST: Final = threading.local()  # the query of the request this thread (or greenlet) serves
_IN_FLIGHT_LOCK: Final = threading.Lock()
_in_flight = [0, 0]  # requests being served now, and the most at once


def _query(environ: WSGIEnvironment) -> str:
    query = environ.get("QUERY_STRING", "")
    return query if isinstance(query, str) else ""


class Closing:
    """A streamed body: yields `chunks`, each after `sleep(pause)`; logs its `close()` with the count.

    It counts as in flight from its creation to its `close()` (the peak shows greenlets overlapped).
    """

    def __init__(
        self, query: str, chunks: Iterable[bytes], pause: float, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.query, self.chunks, self.pause, self.sleep = query, chunks, pause, sleep
        self.sent = 0
        self.last_chunk_ns = 0
        with _IN_FLIGHT_LOCK:
            _in_flight[0] += 1
            _in_flight[1] = max(_in_flight)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.pause:
                self.sleep(self.pause)
            self.sent += 1
            self.last_chunk_ns = time.time_ns()
            yield chunk

    def close(self) -> None:
        with _IN_FLIGHT_LOCK:
            _in_flight[0] -= 1
        append_event(
            {
                "kind": "closed",
                "query": self.query,
                "chunks": self.sent,
                "last_chunk_ns": self.last_chunk_ns,
                "time_ns": time.time_ns(),
            }
        )


def _gevent_sleep(seconds: float) -> None:
    import gevent  # type: ignore[import-untyped]  # only under gunicorn's gevent worker

    gevent.sleep(seconds)


def _blocks(blob: LoggedFile) -> Iterator[bytes]:
    while block := blob.read(65536):
        yield block


class FileBody:
    """The app's own file iterable for servers without `wsgi.file_wrapper` (werkzeug, cheroot)."""

    def __init__(self, blob: LoggedFile) -> None:
        self.blob = blob

    def __iter__(self) -> Iterator[bytes]:
        return _blocks(self.blob)

    def close(self) -> None:
        self.blob.close()


def _current_ids() -> str:
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}-{context.span_id:016x}"


def _gevent_chunks(query: str) -> Iterator[bytes]:
    """What `/gevent` streams: in each chunk, the span current while the body runs, and the query."""
    for _ in range(GEVENT_CHUNKS):
        yield f"{_current_ids()} {query}\n".encode()


def _file(environ: WSGIEnvironment, start_response: StartResponse, query: str) -> Iterable[bytes]:
    blob = LoggedFile(os.environ[FILE_ENV], query)
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    file_wrapper = environ.get("wsgi.file_wrapper")
    if file_wrapper is None:
        return FileBody(blob)
    result: Iterable[bytes] = file_wrapper(blob, 65536)
    environ["matrix.file_result"] = result
    return result


def inner(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Routes: /hello, /nope (404), /fail (500 answered), /boom (raises), /stream, /big, /gevent, /file."""
    path, query = environ.get("PATH_INFO", ""), _query(environ)
    if path == METRICS_PATH:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(metrics_snapshot()).encode()]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/file":
        return _file(environ, start_response, query)
    text = [("Content-Type", "text/plain")]
    if path == "/hello":
        set_route(environ, "/hello")
        start_response("200 OK", text)
        return [f"hello {_current_ids()}\n".encode()]
    if path == "/fail":
        start_response("500 Internal Server Error", text)
        return [b"failed\n"]
    stream = _stream(path, query)
    if stream is not None:
        start_response("200 OK", text)
        return stream
    start_response("404 Not Found", text)
    return [b"not found\n"]


def _stream(path: str, query: str) -> Closing | None:
    """The streamed bodies: /stream (paced chunks), /big (up to 64 MiB), /gevent (greenlet sleeps)."""
    if path == "/stream":
        return Closing(query, (f"chunk {index}\n".encode() for index in range(STREAM_CHUNKS)), STREAM_PAUSE)
    if path == "/big":
        return Closing(query, (BIG_CHUNK for _ in range(BIG_CHUNKS)), 0)
    if path == "/gevent":
        return Closing(query, _gevent_chunks(query), GEVENT_PAUSE, _gevent_sleep)
    return None


def metrics_snapshot() -> dict[str, object]:
    """The worker's metrics now: duration histograms (count, sum) and active requests, per attribute set."""
    data = _reader.get_metrics_data()
    points = [
        _point_record(metric.name, point)
        for resource in (data.resource_metrics if data is not None else ())
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    ]
    return {"points": points, "max_in_flight": _in_flight[1], "pid": os.getpid()}


def _point_record(name: str, point: object) -> dict[str, object]:
    record: dict[str, object] = {"name": name}
    if isinstance(point, HistogramDataPoint):
        record.update(attributes=dict(point.attributes or {}), count=point.count, sum=point.sum)
    elif isinstance(point, NumberDataPoint):
        record.update(attributes=dict(point.attributes or {}), value=point.value)
    return record


def _counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
    """`os.sendfile`, logging each call: which request, which file, how many bytes it sent."""
    sent = _os_sendfile(out_fd, in_fd, offset, count)
    append_event(
        {
            "kind": "sendfile",
            "query": getattr(_REQUEST, "query", None),
            "file": os.readlink(f"/proc/self/fd/{in_fd}"),
            "bytes": sent,
        }
    )
    return sent


def _spy(traced: WSGIApplication) -> WSGIApplication:
    """Record what the middleware handed the server: its type, and whether it is the very object the
    server's `wsgi.file_wrapper` returned (the object the server's fast path recognises)."""

    def spy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        _REQUEST.query = _query(environ)
        result = traced(environ, start_response)
        if environ.get("PATH_INFO") == "/file":
            append_event(
                {
                    "kind": "result",
                    "query": _query(environ),
                    "type": f"{type(result).__module__}.{type(result).__qualname__}",
                    "server_object": result is environ.get("matrix.file_result"),
                    "file_wrapper": environ.get("wsgi.file_wrapper") is not None,
                }
            )
        return result

    return spy


log_warnings_to_events()
_os_sendfile: Final = os.sendfile
os.sendfile = _counting_sendfile  # socket.sendfile looks os.sendfile up at each call
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
_reader = InMemoryMetricReader()
_meters = MeterProvider(metric_readers=[_reader])
_config = Config(excluded_urls=(f"{METRICS_PATH}$",))

app: Final = _spy(wrap(inner, config=_config, tracer_provider=_provider, meter_provider=_meters))
