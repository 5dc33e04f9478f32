"""The embedded servers of `otel-wsgi serve` and the demo, in this process: how they stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import pytest
import waitress.server  # type: ignore[import-untyped]

from otel_wsgi.cli.servers import start_waitress


def _app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok\n"]


def test_waitress_stop_survives_a_wake_up_from_another_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker thread wakes waitress's loop at any time. Here one does so between `stop()` queueing a
    thunk and writing its own wake-up byte: the loop must not run the thunk (the last one closes the
    trigger) before that write, or the write fails on a closed pipe and the spans are never flushed."""
    servers: list[Any] = []
    original = waitress.server.create_server

    def create_server(*args: object, **kwargs: object) -> Any:
        servers.append(original(*args, **kwargs))
        return servers[-1]

    monkeypatch.setattr(waitress.server, "create_server", create_server)
    running = start_waitress(_app, "127.0.0.1", 0, threads=1)
    trigger = servers[0].trigger
    physical_pull: Callable[[], None] = trigger._physical_pull
    early: list[bool] = []

    def pull_after_a_worker() -> None:
        worker = threading.Thread(target=physical_pull)
        worker.start()
        worker.join(10)
        deadline = time.monotonic() + 0.5  # long enough for an idle loop to wake and run the thunks
        while trigger.thunks and time.monotonic() < deadline:
            time.sleep(0.01)
        early.append(not trigger.thunks)
        physical_pull()

    trigger._physical_pull = pull_after_a_worker
    running.stop()
    assert early == [False, False]
    assert trigger._closed and servers[0].socket is None
