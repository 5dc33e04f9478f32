"""The `otel-wsgi` command end to end: real processes, real servers on 127.0.0.1, the official OTLP/HTTP
exporter sending to tests/otlp_receiver.py. Every process started here is stopped here."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import pytest
from apps import DEADLINE, http_get, wait_until
from load_client import run_clients
from otlp_receiver import OtlpReceiver
from processes import REPO_DIR, TESTS_DIR, process_env, running

COMMAND: Final = [sys.executable, "-m", "otel_wsgi"]


# --- the demo ---


def test_demo_prints_a_line_per_request_and_a_summary() -> None:
    done = subprocess.run(
        [*COMMAND, "demo", "--requests", "14"], env=process_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = re.findall(
        r"^(GET\S*(?: \S+)?)\s+(\d{3}|-)\s+[\d.]+ m?s\s+route=(\S+)\s+trace=([0-9a-f]{32})(.*)$",
        done.stdout,
        re.M,
    )
    assert len(lines) == 14
    by_route = {route: (name, status, rest.strip()) for name, status, route, _, rest in lines}
    assert by_route["/users/{id}"][:2] == ("GET /users/{id}", "200")
    assert by_route["-"][:2] == ("GET", "404")
    assert by_route["/fail"] == ("GET /fail", "500", "error=500")
    assert by_route["/boom"][:2] == ("GET /boom", "-") and "error=RuntimeError" in by_route["/boom"][2]
    assert {route for _, _, route, _, _ in lines} == {
        "/",
        "/users/{id}",
        "/stream",
        "/download",
        "-",
        "/fail",
        "/boom",
    }
    assert len([line for line in lines if "continued from traceparent" in line[4]]) == 14 // 3 + (14 % 3 > 1)
    summary = done.stdout.split("http.server.request.duration by route:\n", 1)[1].splitlines()
    assert summary[0].split() == ["route", "count", "p50", "p95", "errors"]
    rows = {row.split()[0]: row.split() for row in summary[1:] if row.strip()}
    assert {route: int(row[-1]) for route, row in rows.items()} == {
        "(unrouted)": 0,
        "/": 0,
        "/users/{id}": 0,
        "/stream": 0,
        "/download": 0,
        "/fail": 2,
        "/boom": 2,
    }
    assert sum(int(row[1]) for row in rows.values()) == 14


def test_demo_also_runs_as_python_m_otel_wsgi_demo_with_no_exporter() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "otel_wsgi.demo", "--requests", "3", "--exporter", "none"],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(re.findall(r"trace=[0-9a-f]{32}", done.stdout)) == 3
    assert "by route" not in done.stdout


def test_demo_exports_over_otlp() -> None:
    with OtlpReceiver() as receiver:
        done = subprocess.run(
            [*COMMAND, "demo", "--requests", "7", "--exporter", "otlp"],
            env=process_env(
                OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_EXPORTER_OTLP_COMPRESSION="gzip"
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        spans = receiver.spans()
        points = receiver.latest_histograms("http.server.request.duration")
    assert done.returncode == 0, done.stderr
    assert receiver.gzipped >= 2 and receiver.rejected == 0  # spans and metrics, compressed
    printed = re.findall(r"trace=([0-9a-f]{32})", done.stdout)
    assert sorted(span.trace_id for span in spans) == sorted(printed)
    assert {span.resource["service.name"] for span in spans} == {"otel-wsgi-demo"}
    assert sum(point.count for point in points) == 7


# --- serve ---

SERVE_CASES: Final = [
    pytest.param("waitress", signal.SIGINT, id="waitress-sigint"),
    pytest.param("wsgiref", signal.SIGTERM, id="wsgiref-sigterm"),
    pytest.param("gunicorn", signal.SIGTERM, id="gunicorn-sigterm"),
    pytest.param("gunicorn", signal.SIGINT, id="gunicorn-sigint"),
]


@pytest.mark.parametrize(("server", "stop_signal"), SERVE_CASES)
def test_serve_flushes_every_span_on_stop(server: str, stop_signal: signal.Signals, tmp_path: Path) -> None:
    requests = 5
    workers = ["--workers", "2"] if server == "gunicorn" else []
    command = [
        *COMMAND,
        "serve",
        "cli_app:app",
        "--port",
        "0",
        "--server",
        server,
        *workers,
        "--exporter",
        "otlp",
    ]
    with OtlpReceiver() as receiver:
        # A long batch delay: the spans are still queued when the signal comes, only shutdown sends them.
        env = process_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="60000",
            OTEL_SERVICE_NAME="cli-test",
        )
        with running(command, tmp_path / "log", env=env, cwd=TESTS_DIR) as started:
            sent = run_clients(started.port(), clients=1, requests=requests, path="/work/1")
            # The last span may still be ending (a server ends it after the client has the whole
            # response): stopping must wait for it.
            assert receiver.spans() == []
            started.process.send_signal(stop_signal)
            assert started.process.wait(DEADLINE) == 0, started.output()
        spans, points = receiver.spans(), receiver.latest_histograms("http.server.request.duration")
    assert "Traceback" not in (tmp_path / "log").read_text()
    assert [request.status for request in sent] == [200] * requests
    assert {span.trace_id: span.parent_span_id for span in spans} == {
        request.trace_id: request.parent_id for request in sent
    }
    assert len(spans) == requests
    assert {span.name for span in spans} == {"GET /work/{n}"}
    assert {span.resource["service.name"] for span in spans} == {"cli-test"}
    assert sum(point.count for point in points) == requests


SLOW_APP: Final = """\
import pathlib, time

def app(environ, start_response):
    pathlib.Path(environ["PATH_INFO"]).touch()  # tell the test the request is in flight
    time.sleep(2)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slow\\n"]
"""


@pytest.mark.parametrize("group", [False, True], ids=["master", "process-group"])
def test_serve_gunicorn_sigint_lets_the_request_in_flight_end_and_exports_its_span(
    group: bool, tmp_path: Path
) -> None:
    """SIGINT, to the master or (Ctrl-C) to every process, stops as gracefully as SIGTERM: the request
    being served is answered and its span exported (gunicorn's own SIGINT would drop it)."""
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    started = tmp_path / "started"
    command = [*COMMAND, "serve", "slow_app:app", "--port", "0", "--server", "gunicorn", "--exporter", "otlp"]
    with OtlpReceiver() as receiver:
        env = process_env(REPO_DIR, tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
        with running(command, tmp_path / "log", env=env, cwd=tmp_path) as server:
            port = server.port()
            with ThreadPoolExecutor(1) as pool:
                answer = pool.submit(http_get, port, str(started))
                wait_until(lambda: started.exists() or answer.done(), "the request to be in flight")
                assert started.exists(), server.output()
                if group:
                    os.killpg(server.process.pid, signal.SIGINT)
                else:
                    server.process.send_signal(signal.SIGINT)
                assert answer.result(DEADLINE)[0] == 200
            assert server.process.wait(DEADLINE) == 0, server.output()
        spans = receiver.spans()
    assert [span.name for span in spans] == ["GET"]
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_serve_console_prints_span_lines_and_summary(tmp_path: Path) -> None:
    command = [*COMMAND, "serve", "cli_app:Holder.wsgi", "--port", "0"]
    with running(command, tmp_path / "log", env=process_env(), cwd=TESTS_DIR) as started:
        port = started.port()
        statuses = [http_get(port, path)[0] for path in ("/work/1", "/nope")]
        started.wait_for(r"GET\s+404", "the span line of /nope")
        started.process.send_signal(signal.SIGTERM)
        assert started.process.wait(DEADLINE) == 0
    log = (tmp_path / "log").read_text()
    assert statuses == [200, 404]
    assert re.search(r"^GET /work/\{n\}\s+200 .* route=/work/\{n\}", log, re.M)
    assert re.search(r"^/work/\{n\}\s+1 ", log, re.M) and re.search(r"^\(unrouted\)\s+1 ", log, re.M)


# --- bad input ---


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


BAD_INPUT: Final = [
    pytest.param(["serve", "no_such_module:app"], "cannot import 'no_such_module'", id="unimportable"),
    pytest.param(["serve", "cli_app:missing"], "has no attribute 'missing'", id="missing-attribute"),
    pytest.param(["serve", "cli_app:not_callable"], "not a WSGI app: a int", id="not-callable"),
    pytest.param(["serve", "cli_app"], "expected MODULE:APP", id="malformed-target"),
    pytest.param(
        ["serve", "raising_app:app"], "importing 'raising_app' failed: RuntimeError", id="import-raises"
    ),
    pytest.param(["serve", "cli_app:app", "--port", "BUSY"], "cannot listen on 127.0.0.1:", id="port-in-use"),
    pytest.param(
        ["serve", "cli_app:app", "--port", "BUSY", "--server", "gunicorn"],
        "cannot listen on",
        id="port-in-use-gunicorn",
    ),
    pytest.param(
        ["serve", "cli_app:app", "--server", "wsgiref", "--port", "BUSY"],
        "cannot listen on",
        id="port-in-use-wsgiref",
    ),
    pytest.param(["serve", "cli_app:app", "--exporter", "zipkin"], "expected one of console", id="exporter"),
    pytest.param(["serve", "cli_app:app", "--server", "uwsgi"], "invalid choice: 'uwsgi'", id="server"),
    pytest.param(["serve", "cli_app:app", "--port", "70000"], "expected a port number", id="port-range"),
    pytest.param(
        ["serve", "cli_app:app", "--workers", "2"],
        "--workers 2 needs --server gunicorn",
        id="workers-without-gunicorn",
    ),
    pytest.param(
        ["serve", "cli_app:app", "--server", "wsgiref", "--threads", "3"],
        "--threads 3 needs",
        id="wsgiref-threads",
    ),
    pytest.param(
        ["serve", "cli_app:app", "ENV:OTEL_TRACES_EXPORTER=jaeger"],
        "OTEL_TRACES_EXPORTER: unknown",
        id="exporter-variable",
    ),
    pytest.param(
        ["serve", "cli_app:app", "ENV:OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS=G T"],
        "known_methods",
        id="config-variable",
    ),
    pytest.param(["demo", "--requests", "0"], "expected a whole number", id="demo-requests"),
    pytest.param(["bogus"], "invalid choice: 'bogus'", id="command"),
]


@pytest.mark.parametrize(("arguments", "message"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2(
    arguments: list[str], message: str, busy_port: int, tmp_path: Path
) -> None:
    (tmp_path / "raising_app.py").write_text("raise RuntimeError('no database\\nconfigured')\n")
    env = process_env(REPO_DIR, TESTS_DIR)
    for variable, value in (arg[4:].split("=", 1) for arg in arguments if arg.startswith("ENV:")):
        env[variable] = value
    arguments = [str(busy_port) if arg == "BUSY" else arg for arg in arguments if not arg.startswith("ENV:")]
    done = subprocess.run(
        [*COMMAND, *arguments], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=DEADLINE
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert message in done.stderr
    assert done.stderr.startswith("otel-wsgi")


def test_without_the_cli_extra_the_command_says_so() -> None:
    # An interpreter where the SDK cannot be imported (None in sys.modules makes its import fail).
    probe = (
        "import sys; sys.modules['opentelemetry.sdk'] = None\n"
        "from otel_wsgi.cli import main; sys.exit(main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "demo"],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert "needs the cli extra (pip install 'otel-wsgi[cli]')" in done.stderr
