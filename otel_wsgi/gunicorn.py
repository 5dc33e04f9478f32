"""gunicorn hooks: `gunicorn -c python:otel_wsgi.gunicorn myapp:app` traces every worker, no code change.

Each worker builds its own SDK pipeline, with its own `service.instance.id`, once its app is loaded
(`post_worker_init`), and wraps the app once; its pipeline is flushed and shut down when it exits
(`worker_exit`), so a graceful stop loses no span. The master never imports the SDK, starts an exporter
thread or opens a connection a fork would share. Why not in `post_fork`: only by `post_worker_init` has
the worker installed its own signal handlers (a SIGTERM that came while the exporters were imported went
to the handler inherited from the master and was lost: the worker served on until the graceful timeout
killed it), and only then has a gevent worker monkey-patched (the SDK's export threads become greenlets).

Exporters follow `OTEL_TRACES_EXPORTER` / `OTEL_METRICS_EXPORTER`, else OTLP when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, else the console; `Config` comes from the environment. With your own
config file, import the hooks you need:

    from otel_wsgi.gunicorn import post_fork, post_worker_init, worker_exit

Every public name here is a gunicorn setting (gunicorn reads all of a config module's names).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Final, NoReturn, Protocol
from wsgiref.types import WSGIApplication

from otel_wsgi import Config, wrap
from otel_wsgi.cli.decide import exporter_kinds

if TYPE_CHECKING:
    from otel_wsgi.cli.pipeline import Pipeline

__all__ = ["post_fork", "post_worker_init", "worker_exit"]

# The pipeline of this process: empty in the master, one entry in a worker from post_worker_init to exit.
_PIPELINE: Final[list[Pipeline]] = []
# gunicorn's exit code for a worker that could not boot: the master stops instead of forking again.
_WORKER_BOOT_ERROR: Final = 3


class _Worker(Protocol):
    """The part of a gunicorn worker the hooks use: the app it serves, set before post_worker_init."""

    wsgi: WSGIApplication


def post_fork(server: object, worker: object) -> None:
    """Nothing: the pipeline is built in `post_worker_init` (see the module docstring). Kept so that
    config files that import or call it keep working."""


def post_worker_init(worker: _Worker) -> None:
    """Build this worker's pipeline from the environment and wrap its loaded app once with `wrap()`."""
    try:
        traces = exporter_kinds(None, os.environ, "traces")
        metric_kinds = exporter_kinds(None, os.environ, "metrics")
        config = Config.from_env()
    except ValueError as exc:
        _refuse(exc)
    if not _PIPELINE:
        # Imported here, never in the master: a gevent worker patches `threading` after the fork, and
        # the SDK's metric reader, imported before that, hangs its shutdown for the full 30 s timeout.
        from otel_wsgi.cli.pipeline import build_pipeline

        _PIPELINE.append(build_pipeline(traces, metric_kinds))
    pipeline = _PIPELINE[0]
    worker.wsgi = wrap(
        worker.wsgi,
        config=config,
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
    )


def _refuse(exc: ValueError) -> NoReturn:
    """Stop a worker whose environment is bad: one line on stderr, and an exit code that makes gunicorn's
    master stop too rather than fork the same failure again."""
    print(f"otel-wsgi: error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(_WORKER_BOOT_ERROR)


def worker_exit(server: object, worker: object) -> None:
    """Flush and shut down this worker's pipeline (a no-op in the master, which has none)."""
    while _PIPELINE:
        _PIPELINE.pop().shutdown()
