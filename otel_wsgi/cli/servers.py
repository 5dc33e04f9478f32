"""The servers `serve` and the demo run: waitress and wsgiref on a thread of this process, gunicorn as
this process (its master forks the workers, and the hooks of `otel_wsgi.gunicorn` trace them).

Each embedded server is started listening (so a port in use fails before anything runs) and stopped
by `stop()`, which returns once every request it accepted has ended, span included.
"""

from __future__ import annotations

import importlib
import signal
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

from typing_extensions import override

_JOIN_TIMEOUT: Final = 10.0


@dataclass(frozen=True, slots=True)
class Running:
    """A server listening on `port`, serving on its own thread until `stop()` returns."""

    port: int
    stop: Callable[[], None]


class _Waitress(Protocol):
    """The part of a waitress server we use (waitress ships no type information)."""

    trigger: Any
    task_dispatcher: Any
    accepting: bool
    _map: dict[int, object]

    def run(self) -> None: ...


def start_waitress(app: WSGIApplication, host: str, port: int, *, threads: int) -> Running:
    """Serve `app` with waitress on a thread; raise OSError if the address cannot be bound."""
    waitress_server = importlib.import_module("waitress.server")
    wasyncore = importlib.import_module("waitress.wasyncore")
    server: _Waitress = waitress_server.create_server(app, host=host, port=port, threads=threads)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()

    def refuse() -> None:
        server.accepting = False

    def on_loop(thunk: Callable[[], None]) -> None:
        # The loop thread runs queued thunks under the trigger's lock whenever it wakes, and worker
        # threads wake it at any time: holding the lock until the wake-up byte is written keeps a thunk
        # that closes the trigger from running before that write (which would then hit a closed pipe).
        with server.trigger.lock:
            server.trigger.thunks.append(thunk)
            server.trigger._physical_pull()  # pyright: ignore[reportPrivateUsage]

    def stop() -> None:
        # On the loop's own thread: stop accepting (the listener is no longer polled); then let the
        # worker threads finish the requests they are running, so their spans end; then close every
        # channel, the listener and the trigger, which ends the loop.
        on_loop(refuse)
        server.task_dispatcher.shutdown(timeout=_JOIN_TIMEOUT)
        on_loop(lambda: wasyncore.close_all(server._map))  # pyright: ignore[reportPrivateUsage]
        thread.join(_JOIN_TIMEOUT)

    return Running(int(getattr(server, "effective_port", port)), stop)


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (the span lines already say what was served)."""

    @override
    def log_message(self, format: str, *args: object) -> None:
        pass


def start_wsgiref(app: WSGIApplication, host: str, port: int) -> Running:
    """Serve `app` with the standard library's wsgiref (one request at a time) on a thread."""
    server: WSGIServer = make_server(host, port, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()  # returns once the request being handled, and its span, has ended
        thread.join(_JOIN_TIMEOUT)
        server.server_close()

    return Running(server.server_port, stop)


def listening_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on host:port now, so gunicorn's master gets a ready socket (or we get OSError)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def run_gunicorn(app: WSGIApplication, sock: socket.socket, settings: Mapping[str, object]) -> None:
    """Run gunicorn's master in this process on `sock`, with `settings` and the otel_wsgi hooks.

    Returns only through SystemExit, when the master stops (SIGTERM or SIGINT: graceful, each worker
    finishing its requests, then flushing its pipeline in `worker_exit`).
    """
    base = importlib.import_module("gunicorn.app.base")
    hooks = importlib.import_module("otel_wsgi.gunicorn")

    # gunicorn's own SIGINT is a quick stop: its workers exit in the middle of their requests, which
    # may still be answered after the pipeline has shut down, their spans lost. Here SIGINT, to the
    # master or (Ctrl-C) to the whole process group, stops as gracefully as SIGTERM.
    def on_starting(arbiter: Any) -> None:
        arbiter.handle_int = arbiter.handle_term

    def post_worker_init(worker: Any) -> None:
        hooks.post_worker_init(worker)
        signal.signal(signal.SIGINT, worker.handle_exit)
        signal.siginterrupt(signal.SIGINT, False)  # as gunicorn does for SIGTERM

    options: dict[str, object] = {
        "bind": [f"fd://{sock.detach()}"],  # gunicorn owns the descriptor from now on
        # gthread workers notice SIGTERM within a second (a sync worker can sleep for half its timeout)
        # and keep connections alive.
        "worker_class": "gthread",
        "on_starting": on_starting,
        # No post_fork: gunicorn calls it before the worker has its own signal handlers, so a stop
        # signal arriving while it built the pipeline (imports: seconds under load) was lost and the
        # master waited out its graceful timeout. post_worker_init, called after, builds it instead.
        "post_worker_init": post_worker_init,
        "worker_exit": hooks.worker_exit,
        **settings,
    }

    class Application(base.BaseApplication):  # type: ignore[misc, name-defined]
        """gunicorn's embedding API: our settings instead of a command line, our app instead of an import."""

        def load_config(self) -> None:
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> WSGIApplication:
            return app

    Application().run()
