"""The servers of the matrix tests: how each runs tests/matrix_app.py in its own process on 127.0.0.1.

Every server binds port 0 and says where it listens; `start` waits until it answers, `stop` ends its
whole process group. `Running` reads what the worker wrote: spans, probes, metrics. A server that is not
installed makes `start` fail (never skip): the dev extra installs them all.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any, Final, Literal

import pytest
import span_lines

TESTS_DIR: Final = Path(__file__).resolve().parent
REPO_DIR: Final = TESTS_DIR.parent
DEADLINE: Final = 60.0  # bounds every wait on a loaded machine; never a duration asserted
BLOB_SIZE: Final = 1 << 20
_QUERIES: Final = count()

Record = dict[str, Any]


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
    ServerKind("uwsgi", "matrix_app.LoggedFile", "uwsgi", _uwsgi, on_raise=None),
    ServerKind("waitress", "waitress.buffers.ReadOnlyFileBasedBuffer", "none", _python_server("waitress")),
    ServerKind("wsgiref", "wsgiref.util.FileWrapper", "none", _python_server("wsgiref")),
    ServerKind("werkzeug", BODY, "none", _python_server("werkzeug")),
    ServerKind("cheroot", BODY, "none", _python_server("cheroot")),
]
#: How each server says where it listens (all bind port 0).
LISTENING: Final = re.compile(
    r"Listening at: http://127\.0\.0\.1:(\d+)|bound to TCP address 127\.0\.0\.1:(\d+)|^LISTENING (\d+)", re.M
)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll `predicate` until it holds; fail the test (not hang) if it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@dataclass(frozen=True)
class Running:
    """A server process serving matrix_app, and the files it writes."""

    kind: ServerKind
    port: int
    events: Path
    log: Path
    blob: Path

    def records(self) -> list[Record]:
        """Every complete line of the events file (a line being appended now is left for later)."""
        return [json.loads(line) for line in self.events.read_text().split("\n")[:-1]]

    def of(self, kind: str, query: str) -> list[Record]:
        return [r for r in self.records() if r["kind"] == kind and _query_of(r) == query]

    def span(self, query: str) -> Record:
        """Wait for the span of the request with this query; fail unless there is exactly one."""
        wait_until(lambda: self.of("span", query) != [], f"the span of ?{query} ({self.kind.name})")
        (span,) = self.of("span", query)
        assert [r for r in self.records() if r["kind"] == "log"] == []
        return span

    def active_requests(self) -> list[object]:
        """The values of the active-requests counter now (one per attribute set)."""
        return [p["value"] for p in self.metrics()["points"] if p["name"] == "http.server.active_requests"]

    def metrics(self) -> Record:
        status, body = get(self.port, span_lines.METRICS_PATH)
        assert status == 200
        snapshot: Record = json.loads(body)
        return snapshot


def _query_of(record: Record) -> object:
    return record["attributes"].get("url.query") if record["kind"] == "span" else record.get("query")


def start(kind: ServerKind, directory: Path) -> tuple[subprocess.Popen[bytes], Running]:
    events, log, blob = directory / "events.jsonl", directory / "server.log", directory / "blob"
    blob.write_bytes(os.urandom(BLOB_SIZE))
    events.touch()
    env = {**os.environ, "OTEL_WSGI_TEST_EVENTS": str(events), "OTEL_WSGI_TEST_FILE": str(blob)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            kind.command(), cwd=REPO_DIR, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    found: list[int] = []

    def listening() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{kind.name} exited with {process.returncode}:\n{log.read_text()}")
        match = LISTENING.search(log.read_text())
        if match is not None:
            found.append(int(next(group for group in match.groups() if group)))
        return bool(found)

    try:
        wait_until(listening, f"{kind.name} to listen")
        running = Running(kind, found[0], events, log, blob)
        # Ready once a request is answered (the worker has imported the app).
        wait_until(lambda: _answers(running.port), f"{kind.name} to answer")
    except BaseException:
        stop(process)
        raise
    return process, running


def _answers(port: int) -> bool:
    try:
        return get(port, span_lines.METRICS_PATH)[0] == 200
    except OSError:
        return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process group a test started (the server, its master and workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(DEADLINE)
            return
        except subprocess.TimeoutExpired:
            continue


def get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 GET; return the status and the whole body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def status_or_none(port: int, target: str) -> int | None:
    """The status of a GET, or None when the server closes the connection without answering."""
    try:
        return get(port, target)[0]
    except http.client.RemoteDisconnected:
        return None


def new_query(case: str) -> str:
    """A query no other request of the module carries: it finds the request's span and probes."""
    return f"case={case}-{next(_QUERIES)}"


GEVENT: Final = next(kind for kind in KINDS if kind.name == "gunicorn-gevent")
