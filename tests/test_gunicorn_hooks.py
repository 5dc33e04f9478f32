"""`gunicorn -c python:otel_wsgi.gunicorn`: 2 workers, each with its own pipeline built after fork,
exporting through the official OTLP/HTTP exporter to tests/otlp_receiver.py; after SIGTERM to the master,
every request's span has arrived exactly once with its own parent, and the histograms add up."""

from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Final

import pytest
from apps import DEADLINE, http_get, wait_until
from load_client import run_clients
from otlp_receiver import OtlpReceiver
from processes import TESTS_DIR, process_env, running

import otel_wsgi.gunicorn

REQUESTS: Final = 2000
CLIENTS: Final = 8
#: Each client's requests per connection.
RECONNECT: Final = 5
#: How long the master may take to stop its workers, which flush 2000 spans over OTLP as they exit.
SHUTDOWN: Final = 30.0


def test_every_public_name_is_a_gunicorn_hook() -> None:
    """gunicorn applies every name of a config module that matches a setting: export only the hooks."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    settings = {setting.name for setting in KNOWN_SETTINGS}
    public = {name for name in vars(otel_wsgi.gunicorn) if not name.startswith("_")}
    assert public & settings == {"post_fork", "post_worker_init", "worker_exit"}
    assert set(otel_wsgi.gunicorn.__all__) == public & settings


def test_the_master_never_imports_the_sdk() -> None:
    """gunicorn's master imports the config module before it forks; under gevent, an SDK imported before
    the worker's monkey-patching made the metric reader's shutdown hang (the worker then got killed)."""
    code = "import sys, otel_wsgi.gunicorn; print([m for m in sys.modules if 'sdk' in m])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=DEADLINE)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_two_workers_export_every_span_once_over_otlp(tmp_path: Path) -> None:
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    command = [
        sys.executable, "-m", "gunicorn", "-c", "python:otel_wsgi.gunicorn", "-w", "2", "-k", "gthread",
        "--threads", "4", "-b", "127.0.0.1:0", "--no-control-socket", "--graceful-timeout", "20",
        "--pythonpath", str(TESTS_DIR), "cli_app:app",
    ]  # fmt: skip
    with OtlpReceiver() as receiver:
        env = process_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="gunicorn-test")
        with running(command, tmp_path / "gunicorn.log", env=env) as started:
            port = started.port()
            began = time.monotonic()
            # A new connection every few requests, so that both workers get to accept some.
            sent = run_clients(port, CLIENTS, REQUESTS // CLIENTS, path="/work/1", reconnect=RECONNECT)
            elapsed = time.monotonic() - began
            started.process.send_signal(signal.SIGTERM)  # the master stops its workers gracefully
            assert started.process.wait(SHUTDOWN) == 0, started.output()
        spans = receiver.spans()
        points = receiver.latest_histograms("http.server.request.duration")
        rejected = receiver.rejected

    answered = {request.trace_id: request.parent_id for request in sent if request.status == 200}
    work = [span for span in spans if span.name == "GET /work/{n}"]
    duplicates = sum(count - 1 for count in Counter(span.trace_id for span in work).values())
    print(
        f"\n{REQUESTS} requests in {elapsed:.1f} s; {len(work)} spans received, {duplicates} duplicate(s); "
        f"spans per worker: {sorted(Counter(str(span.resource['process.pid']) for span in work).values())}"
    )
    assert len(answered) == REQUESTS
    assert duplicates == 0 and rejected == 0
    assert {span.trace_id: span.parent_span_id for span in work} == answered
    assert len({span.span_id for span in work}) == REQUESTS
    # Each worker that served has its own pipeline: one instance id per worker pid, never the master's.
    # (gunicorn decides which worker accepts each keep-alive connection: often both, maybe one.)
    instances = {span.resource["service.instance.id"] for span in work}
    pairs = {(span.resource["service.instance.id"], span.resource["process.pid"]) for span in work}
    assert len(pairs) == len(instances) == len({pid for _, pid in pairs}) <= 2
    assert started.process.pid not in {pid for _, pid in pairs}
    assert {span.resource["service.name"] for span in work} == {"gunicorn-test"}
    served = [point for point in points if point.attributes.get("http.route") == "/work/{n}"]
    assert {point.resource["service.instance.id"] for point in served} == instances
    assert sum(point.count for point in served) == REQUESTS
    assert sum(sum(point.bucket_counts) for point in served) == REQUESTS
    assert "Traceback" not in started.output()


def test_own_config_file_importing_the_hooks(tmp_path: Path) -> None:
    """A user's config file imports the hooks next to its own settings; console output, SIGINT stop."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "from otel_wsgi.gunicorn import post_fork, post_worker_init, worker_exit\n"
        "workers = 1\nbind = ['127.0.0.1:0']\n"
    )
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(config),
        "--pythonpath",
        str(TESTS_DIR),
        "cli_app:app",
    ]
    with running(command, tmp_path / "gunicorn.log", env=process_env(), cwd=tmp_path) as started:
        status, _ = http_get(started.port(), "/work/7")
        # SIGINT is gunicorn's quick stop: it may cut a request short, so wait for the span to end first.
        wait_until(
            lambda: re.search(r"^GET /work/\{n\}\s+200 ", started.output(), re.M) is not None,
            "the span of the request",
        )
        started.process.send_signal(signal.SIGINT)
        assert started.process.wait(DEADLINE) == 0, started.output()
    text = started.output()
    assert status == 200
    assert re.search(r"^GET /work/\{n\}\s+200 .* route=/work/\{n\}", text, re.M), text
    # The worker printed its metrics summary as it exited.
    assert re.search(r"^/work/\{n\}\s+1 ", text, re.M), text


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "jaeger", "OTEL_TRACES_EXPORTER: unknown exporter 'jaeger'"),
        ("OTEL_PYTHON_WSGI_EXCLUDED_URLS", "(", "excluded_urls"),
    ],
)
def test_bad_environment_stops_gunicorn_with_one_line(
    variable: str, value: str, message: str, tmp_path: Path
) -> None:
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    command = [
        sys.executable, "-m", "gunicorn", "-c", "python:otel_wsgi.gunicorn", "-b", "127.0.0.1:0",
        "--no-control-socket", "--pythonpath", str(TESTS_DIR), "cli_app:app",
    ]  # fmt: skip
    env = process_env(**{variable: value})
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE)
    errors = [line for line in done.stderr.splitlines() if line.startswith("otel-wsgi: error:")]
    # gunicorn's master stops (worker boot error) instead of forking failing workers forever.
    assert done.returncode == 3, done.stderr
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


# A gunicorn config that records what our post_fork leaves behind, and has the master stopped from inside
# a worker's post_worker_init, just before ours builds the pipeline.
_STOP_DURING_BOOT: Final = """
import os, signal, sys
from otel_wsgi import gunicorn as otel
from otel_wsgi.gunicorn import worker_exit

def post_fork(server, worker):
    otel.post_fork(server, worker)
    sdk = sorted(name for name in sys.modules if name.startswith("opentelemetry.sdk"))
    print("after post_fork, SDK modules:", len(sdk), flush=True)

def post_worker_init(worker):
    os.kill(os.getppid(), signal.SIGTERM)
    otel.post_worker_init(worker)
"""


def test_a_stop_while_the_worker_boots_is_still_graceful(tmp_path: Path) -> None:
    """Until gunicorn's worker installs its own signal handlers (after post_fork), a SIGTERM goes to the
    handler it inherited from the master and is lost: the worker then serves on until the graceful timeout
    kills it. So post_fork must do nothing slow (it imports no SDK), and a SIGTERM that comes while the
    pipeline is built (in post_worker_init) must stop the worker at once, gracefully."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(_STOP_DURING_BOOT)
    command = [
        sys.executable, "-m", "gunicorn", "-c", str(config), "-w", "1", "-k", "gthread",
        "-b", "127.0.0.1:0", "--no-control-socket", "--graceful-timeout", "20",
        "--pythonpath", str(TESTS_DIR), "cli_app:app",
    ]  # fmt: skip
    with OtlpReceiver() as receiver:
        env = process_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        started = time.monotonic()
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE
        )
        took = time.monotonic() - started
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "after post_fork, SDK modules: 0" in text
    assert "Worker exiting" in text
    assert took < 10, text  # not the 20 s graceful timeout
