"""The servers of the matrix tests: how each runs tests/matrix_app.py in its own process on 127.0.0.1.

Every server binds port 0 and says where it listens (tests/processes.py); `start` waits until it
answers, `Running.stop` ends its whole process group. `Running` reads what the worker wrote: spans,
probes, metrics. A server that is not installed makes `start` fail (never skip): the dev extra installs
them all.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Final, Literal

import processes
import pytest
import span_lines
from apps import http_get, wait_until
from processes import TESTS_DIR, Started
from span_lines import Record

BLOB_SIZE: Final = 1 << 20
_QUERIES: Final = count()


@dataclass(frozen=True)
class ServerKind:
    """A server configuration and what it is known to do with a `wsgi.file_wrapper` response."""

    name: str
    #: The type the middleware hands the server for `/file`: the server's own object, or our body wrapper.
    file_result: str
    #: How the file is sent: `os.sendfile` (counted in the worker), uWSGI's own C sendfile, or read().
    sendfile: Literal["os", "uwsgi", "none"]
    command: Callable[[], list[str]]
    #: What the client gets when the app raises before answering: the server's 500, or nothing at all.
    on_raise: int | None = 500


def gunicorn_command(*worker: str, workers: int = 1) -> Callable[[], list[str]]:
    return lambda: [
        sys.executable, "-m", "gunicorn", *worker, "-w", str(workers), "-b", "127.0.0.1:0",
        "--no-control-socket", "--graceful-timeout", "5", "--pythonpath", str(TESTS_DIR), "matrix_app:app",
    ]  # fmt: skip


def _uwsgi() -> list[str]:
    binary = shutil.which("uwsgi", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.fail("uwsgi is not installed (it is in the dev extra)")
    return [
        binary, "--http-socket", "127.0.0.1:0", "--home", sys.prefix, "--pythonpath", str(TESTS_DIR),
        "--module", "matrix_app:app", "--master",
        "--processes", "1", "--threads", "2", "--die-on-term",
    ]  # fmt: skip


def _python_server(name: str) -> Callable[[], list[str]]:
    return lambda: [sys.executable, str(TESTS_DIR / "matrix_serve.py"), name]


GUNICORN_FILE: Final = "gunicorn.http.wsgi.FileWrapper"
BODY: Final = "otel_wsgi.body.Body"
KINDS: Final = [
    ServerKind("gunicorn-sync", GUNICORN_FILE, "os", gunicorn_command("-k", "sync")),
    ServerKind("gunicorn-gthread", GUNICORN_FILE, "os", gunicorn_command("-k", "gthread", "--threads", "4")),
    ServerKind("gunicorn-gevent", GUNICORN_FILE, "none", gunicorn_command("-k", "gevent")),
    ServerKind("uwsgi", "span_lines.LoggedFile", "uwsgi", _uwsgi, on_raise=None),
    ServerKind("waitress", "waitress.buffers.ReadOnlyFileBasedBuffer", "none", _python_server("waitress")),
    ServerKind("wsgiref", "wsgiref.util.FileWrapper", "none", _python_server("wsgiref")),
    ServerKind("werkzeug", BODY, "none", _python_server("werkzeug")),
    ServerKind("cheroot", BODY, "none", _python_server("cheroot")),
]


@dataclass(frozen=True)
class Running:
    """A server process serving matrix_app, and the files it writes."""

    kind: ServerKind
    started: Started
    port: int
    events: Path
    blob: Path

    @property
    def log(self) -> Path:
        return self.started.log

    def records(self) -> list[Record]:
        return span_lines.read_records(self.events)

    def of(self, kind: str, query: str) -> list[Record]:
        return span_lines.records_of(self.events, kind, query)

    def span(self, query: str) -> Record:
        """Wait for the span of the request with this query; fail unless there is exactly one."""
        wait_until(lambda: self.of("span", query) != [], f"the span of ?{query} ({self.kind.name})")
        (span,) = self.of("span", query)
        assert [r for r in self.records() if r["kind"] == "log"] == []
        return span

    def active_requests(self) -> list[object]:
        """The values of the active-requests counter now (one per attribute set)."""
        return [p["value"] for p in self.metrics()["points"] if p["name"] == "http.server.active_requests"]

    def wait_until_idle(self) -> None:
        """Wait until no request is active: the worker records a request's metrics just after it ends
        (and so writes) its span, so a test that has the span may be a moment early for the metrics."""
        wait_until(lambda: self.active_requests() == [0], f"no active request ({self.kind.name})")

    def metrics(self) -> Record:
        status, body = http_get(self.port, span_lines.METRICS_PATH)
        assert status == 200
        snapshot: Record = json.loads(body)
        return snapshot

    def stop(self) -> None:
        processes.stop(self.started)


def start(kind: ServerKind, directory: Path) -> Running:
    """Start `kind` serving matrix_app with its files in `directory`; return once it answers."""
    events, blob = directory / "events.jsonl", directory / "blob"
    blob.write_bytes(os.urandom(BLOB_SIZE))
    events.touch()
    env = processes.process_env(TESTS_DIR, OTEL_WSGI_TEST_EVENTS=str(events), OTEL_WSGI_TEST_FILE=str(blob))
    started = processes.start(kind.command(), directory / "server.log", env=env)
    try:
        running = Running(kind, started, started.port(), events, blob)
        # Ready once a request is answered (the worker has imported the app).
        wait_until(lambda: _answers(running.port), f"{kind.name} to answer", detail=started.output)
    except BaseException:
        processes.stop(started)
        raise
    return running


@contextmanager
def serving(kind: ServerKind, directory: Path) -> Iterator[Running]:
    """`start` the server; stop its process group on the way out."""
    running = start(kind, directory)
    try:
        yield running
    finally:
        running.stop()


def _answers(port: int) -> bool:
    try:
        return http_get(port, span_lines.METRICS_PATH)[0] == 200
    except OSError:
        return False


def status_or_none(port: int, target: str) -> int | None:
    """The status of a GET, or None when the server closes the connection without answering."""
    try:
        return http_get(port, target)[0]
    except http.client.RemoteDisconnected:
        return None


def new_query(case: str) -> str:
    """A query no other request of the module carries: it finds the request's span and probes."""
    return f"case={case}-{next(_QUERIES)}"


GEVENT: Final = next(kind for kind in KINDS if kind.name == "gunicorn-gevent")
