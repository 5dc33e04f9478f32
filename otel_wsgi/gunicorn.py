"""gunicorn hooks: `gunicorn -c python:otel_wsgi.gunicorn myapp:app` traces every worker, no code change.

Each worker builds its own SDK pipeline after fork (`post_fork`: the master never starts an exporter
thread or opens a connection a fork would share), with its own `service.instance.id`; its app is wrapped
once when it has been loaded (`post_worker_init`); its pipeline is flushed and shut down when it exits
(`worker_exit`), so a graceful stop loses no span. Exporters follow `OTEL_TRACES_EXPORTER` /
`OTEL_METRICS_EXPORTER`, else OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, else the console; `Config`
comes from the environment. With your own config file, import the hooks you need:

    from otel_wsgi.gunicorn import post_fork, post_worker_init, worker_exit

Every public name here is a gunicorn setting (gunicorn reads all of a config module's names).
"""

from __future__ import annotations

import os
from typing import Final, Protocol
from wsgiref.types import WSGIApplication

from otel_wsgi import wrap
from otel_wsgi.cli.decide import exporter_kinds
from otel_wsgi.cli.pipeline import Pipeline, build_pipeline

__all__ = ["post_fork", "post_worker_init", "worker_exit"]

# The pipeline of this process: empty in the master, one entry in a worker between fork and exit.
_PIPELINE: Final[list[Pipeline]] = []


class _Worker(Protocol):
    """The part of a gunicorn worker the hooks use: the app it serves, set before post_worker_init."""

    wsgi: WSGIApplication


def post_fork(server: object, worker: object) -> None:
    """Build this worker's pipeline from the environment (gunicorn calls this in the new worker)."""
    if not _PIPELINE:
        traces = exporter_kinds(None, os.environ, "traces")
        _PIPELINE.append(build_pipeline(traces, exporter_kinds(None, os.environ, "metrics")))


def post_worker_init(worker: _Worker) -> None:
    """Wrap the worker's loaded app once with `wrap()` (building the pipeline if post_fork did not)."""
    post_fork(None, worker)
    pipeline = _PIPELINE[0]
    worker.wsgi = wrap(
        worker.wsgi, tracer_provider=pipeline.tracer_provider, meter_provider=pipeline.meter_provider
    )


def worker_exit(server: object, worker: object) -> None:
    """Flush and shut down this worker's pipeline (a no-op in the master, which has none)."""
    while _PIPELINE:
        _PIPELINE.pop().shutdown()
