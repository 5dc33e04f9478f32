"""`gunicorn -c python:otel_wsgi.gunicorn`: 2 workers, each with its own pipeline built after fork,
exporting through the official OTLP/HTTP exporter to tests/otlp_receiver.py; after SIGTERM to the master,
every request's span has arrived exactly once with its own parent, and the histograms add up."""

from __future__ import annotations

import http.client
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import pytest
from otlp_receiver import OtlpReceiver

import otel_wsgi.gunicorn

TESTS_DIR: Final = Path(__file__).resolve().parent
REPO_DIR: Final = TESTS_DIR.parent
REQUESTS: Final = 2000
CLIENTS: Final = 8
RECONNECT: Final = 40
DEADLINE: Final = 60.0  # bounds waits on a loaded machine; never a duration asserted


def test_every_public_name_is_a_gunicorn_hook() -> None:
    """gunicorn applies every name of a config module that matches a setting: export only the hooks."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

    settings = {setting.name for setting in KNOWN_SETTINGS}
    public = {name for name in vars(otel_wsgi.gunicorn) if not name.startswith("_")}
    assert public & settings == {"post_fork", "post_worker_init", "worker_exit"}
    assert set(otel_wsgi.gunicorn.__all__) == public & settings


def _wait_for_port(log: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + DEADLINE
    while (match := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text())) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not start (exit code {process.poll()}):\n{log.read_text()}")
        time.sleep(0.05)
    return int(match[1])


def _send_all(port: int) -> dict[str, str]:
    """Send REQUESTS GETs over CLIENTS keep-alive connections, each with its own traceparent;
    return {trace id: parent span id} of the requests answered 200."""
    local = threading.local()
    answered: dict[str, str] = {}
    opened: list[http.client.HTTPConnection] = []

    def send(number: int) -> None:
        # A new connection every RECONNECT requests, so that both workers get to accept some.
        if number % RECONNECT < CLIENTS or not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
            opened.append(local.connection)
        trace_id, parent = f"{0xC0FFEE00000 + number:032x}", f"{number + 1:016x}"
        connection: http.client.HTTPConnection = local.connection
        connection.request("GET", f"/work/{number}", headers={"traceparent": f"00-{trace_id}-{parent}-01"})
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            answered[trace_id] = parent

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(send, range(REQUESTS)))
    finally:
        for connection in opened:
            connection.close()
    return answered


def test_two_workers_export_every_span_once_over_otlp(tmp_path: Path) -> None:
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    log = tmp_path / "gunicorn.log"
    command = [
        sys.executable, "-m", "gunicorn", "-c", "python:otel_wsgi.gunicorn", "-w", "2", "-k", "gthread",
        "--threads", "4", "-b", "127.0.0.1:0", "--no-control-socket", "--graceful-timeout", "20",
        "--pythonpath", str(TESTS_DIR), "cli_app:app",
    ]  # fmt: skip
    with OtlpReceiver() as receiver:
        env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_SERVICE_NAME="gunicorn-test")
        with open(log, "wb") as out:
            process = subprocess.Popen(
                command, cwd=REPO_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            port = _wait_for_port(log, process)
            started = time.monotonic()
            answered = _send_all(port)
            sent = time.monotonic() - started
            process.send_signal(signal.SIGTERM)  # the master stops its workers gracefully
            assert process.wait(DEADLINE) == 0, log.read_text()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(DEADLINE)
        spans = receiver.spans()
        points = receiver.latest_histograms("http.server.request.duration")
        rejected = receiver.rejected

    work = [span for span in spans if span.name == "GET /work/{n}"]
    duplicates = sum(count - 1 for count in Counter(span.trace_id for span in work).values())
    print(
        f"\n{REQUESTS} requests in {sent:.1f} s; {len(work)} spans received, {duplicates} duplicate(s); "
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
    assert process.pid not in {pid for _, pid in pairs}
    assert {span.resource["service.name"] for span in work} == {"gunicorn-test"}
    served = [point for point in points if point.attributes.get("http.route") == "/work/{n}"]
    assert {point.resource["service.instance.id"] for point in served} == instances
    assert sum(point.count for point in served) == REQUESTS
    assert sum(sum(point.bucket_counts) for point in served) == REQUESTS
    assert "Traceback" not in log.read_text()


def test_own_config_file_importing_the_hooks(tmp_path: Path) -> None:
    """A user's config file imports the hooks next to its own settings; console output, SIGINT stop."""
    if importlib.util.find_spec("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "from otel_wsgi.gunicorn import post_fork, post_worker_init, worker_exit\n"
        "workers = 1\nbind = ['127.0.0.1:0']\n"
    )
    log = tmp_path / "gunicorn.log"
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
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        port = _wait_for_port(log, process)
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.sendall(b"GET /work/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            # Read to the end: the sync worker closes the connection only once the request has ended,
            # its span and metrics included (gunicorn's SIGINT stops a worker even mid-request).
            answer = b"".join(iter(lambda: sock.recv(65536), b""))
        status = int(answer.split()[1])
        process.send_signal(signal.SIGINT)
        assert process.wait(DEADLINE) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(DEADLINE)
    text = log.read_text()
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
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env[variable] = value
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE)
    errors = [line for line in done.stderr.splitlines() if line.startswith("otel-wsgi: error:")]
    # gunicorn's master stops (worker boot error) instead of forking failing workers forever.
    assert done.returncode == 3, done.stderr
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
