"""`otel-wsgi serve MODULE:APP`: any WSGI app traced with `wrap()`, under waitress, gunicorn or wsgiref.

Everything that can be wrong with the input (the target, the exporters, the environment's `Config`,
the server options, the address) is found before the first request, and reported as a `CommandError`.
SIGINT and SIGTERM stop the server, then flush and shut down the providers: every span of a request
the server answered is exported before the process exits.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Final
from wsgiref.types import WSGIApplication

from typing_extensions import TypeIs

from otel_wsgi import Config, wrap
from otel_wsgi.cli.decide import CommandError, ServerName, app_target, exporter_kinds
from otel_wsgi.cli.pipeline import Pipeline, build_pipeline
from otel_wsgi.cli.servers import listening_socket, run_gunicorn, start_waitress, start_wsgiref

_DEFAULT_THREADS: Final[dict[ServerName, int]] = {"waitress": 4, "gunicorn": 1, "wsgiref": 1}
# The module each server needs, and the extra that brings it.
_EXTRAS: Final[dict[ServerName, str]] = {"waitress": "cli", "gunicorn": "gunicorn", "wsgiref": "cli"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    """The `serve` command line: the app, where to listen, which server, and where telemetry goes."""

    target: str
    host: str = "127.0.0.1"
    port: int = 8000
    server: ServerName = "waitress"
    workers: int | None = None
    threads: int | None = None
    exporter: str | None = None


def run_serve(options: ServeOptions) -> int:
    """Check everything, then serve until SIGINT or SIGTERM; return the exit code (0)."""
    try:
        module, attribute = app_target(options.target)
        traces = exporter_kinds(options.exporter, os.environ, "traces")
        metric_kinds = exporter_kinds(options.exporter, os.environ, "metrics")
        config = Config.from_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    workers, threads = _process_options(options)
    app = load_app(module, attribute)
    announce = (
        f"otel-wsgi: serving {options.target} with {options.server} ({workers} worker(s) x {threads} "
        f"thread(s)); traces: {', '.join(traces) or 'none'}; metrics: {', '.join(metric_kinds) or 'none'}"
    )
    if options.server == "gunicorn":
        # The workers build their pipelines after fork from the environment: the choice made here wins.
        os.environ["OTEL_TRACES_EXPORTER"] = ",".join(traces) or "none"
        os.environ["OTEL_METRICS_EXPORTER"] = ",".join(metric_kinds) or "none"
        _serve_gunicorn(app, options, announce, {"workers": workers, "threads": threads})
        return 0
    pipeline = build_pipeline(traces, metric_kinds)
    traced = wrap(
        app, config=config, tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
    )
    _serve_embedded(traced, options, announce, threads, pipeline)
    return 0


def _serve_gunicorn(
    app: WSGIApplication, options: ServeOptions, announce: str, settings: dict[str, object]
) -> None:
    """Listen now (a port in use is bad input), then become gunicorn's master until it stops."""
    try:
        sock = listening_socket(options.host, options.port)
    except OSError as exc:
        raise CommandError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
    print(f"{announce}; http://{_address(sock)}", file=sys.stderr, flush=True)
    run_gunicorn(app, sock, settings)


def _serve_embedded(
    traced: WSGIApplication, options: ServeOptions, announce: str, threads: int, pipeline: Pipeline
) -> None:
    """Serve on a thread until SIGINT or SIGTERM; then stop the server and flush the pipeline."""
    stop = _stop_on_signals()
    try:
        if options.server == "waitress":
            running = start_waitress(traced, options.host, options.port, threads=threads)
        else:
            running = start_wsgiref(traced, options.host, options.port)
    except OSError as exc:
        pipeline.shutdown()
        raise CommandError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
    print(f"{announce}; http://{options.host}:{running.port}", file=sys.stderr, flush=True)
    stop.wait()
    try:
        running.stop()
    finally:
        pipeline.shutdown()  # whatever stopping the server did, the spans it ended are exported


def load_app(module_name: str, attribute: str) -> WSGIApplication:
    """Import `module_name` (from the current directory too) and return its callable `attribute`."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise CommandError(f"cannot import {module_name!r}: no module named {missing!r}") from None
        raise CommandError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the app's own import-time failure, reported in one line
        raise CommandError(f"importing {module_name!r} failed: {_one_line(exc)}") from None
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise CommandError(f"module {module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    if not _is_callable(found):
        kind = type(found).__name__
        raise CommandError(f"{module_name}:{attribute} is not a WSGI app: a {kind} is not callable")
    return found


def _is_callable(value: object) -> TypeIs[WSGIApplication]:
    """Whether `value` can be called; a WSGI app cannot be told apart any further before a request."""
    return callable(value)


def _process_options(options: ServeOptions) -> tuple[int, int]:
    """Return (workers, threads) for the chosen server, or raise CommandError for a combination it lacks."""
    if importlib.util.find_spec(options.server) is None:
        raise CommandError(
            f"--server {options.server} is not installed: pip install 'otel-wsgi[{_EXTRAS[options.server]}]'"
        )
    workers = 1 if options.workers is None else options.workers
    threads = _DEFAULT_THREADS[options.server] if options.threads is None else options.threads
    if workers != 1 and options.server != "gunicorn":
        raise CommandError(f"--workers {workers} needs --server gunicorn ({options.server} runs one process)")
    if threads != 1 and options.server == "wsgiref":
        raise CommandError(
            f"--threads {threads} needs --server waitress or gunicorn (wsgiref has one thread)"
        )
    return workers, threads


def _stop_on_signals() -> threading.Event:
    """Return an event that SIGINT or SIGTERM sets (the server keeps running until then)."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _address(sock: socket.socket) -> str:
    host: str = sock.getsockname()[0]
    port: int = sock.getsockname()[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
