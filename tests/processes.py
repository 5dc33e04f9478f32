"""Server processes for the tests: run a command in its own process group with its output in a log file,
wait for the line that says where it listens, and stop the whole group (master and workers) afterwards.

Used for every process a test starts that outlives one call: `otel-wsgi serve`, gunicorn with our hooks,
and the servers of the matrix and server tests. All bind port 0 on 127.0.0.1 and print the port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
from apps import DEADLINE, wait_until

TESTS_DIR: Final = Path(__file__).resolve().parent
REPO_DIR: Final = TESTS_DIR.parent
#: How each server says where it listens: gunicorn and `otel-wsgi serve` (a URL), uWSGI, and
#: tests/matrix_serve.py (`LISTENING <port>`).
LISTENING: Final = re.compile(
    r"http://127\.0\.0\.1:(\d+)|bound to TCP address 127\.0\.0\.1:(\d+)|^LISTENING (\d+)", re.M
)


def process_env(*paths: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any OTEL_ variable of the machine, `paths` first on PYTHONPATH
    (the repository root if none), plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    path = [str(path) for path in paths or (REPO_DIR,)]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [*path, os.environ.get("PYTHONPATH")]))
    return {**env, **extra}


@dataclass(frozen=True)
class Started:
    """A process group a test started, and the file its stdout and stderr go to."""

    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, pattern: str | re.Pattern[str], what: str) -> re.Match[str]:
        """Wait for `pattern` in the log; fail (with the log) if the process exits or time runs out."""
        compiled = re.compile(pattern, re.M) if isinstance(pattern, str) else pattern
        found: list[re.Match[str]] = []

        def seen() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"{what}: the process exited with {self.process.returncode}:\n{self.output()}")
            match = compiled.search(self.output())
            if match is not None:
                found.append(match)
            return match is not None

        wait_until(seen, what, detail=self.output)
        return found[0]

    def port(self) -> int:
        """Wait until the server says where it listens (it was told to bind port 0); return the port."""
        match = self.wait_for(LISTENING, "the server to listen")
        return int(next(group for group in match.groups() if group))


def start(command: list[str], log: Path, *, env: dict[str, str], cwd: Path = REPO_DIR) -> Started:
    """Run `command` in a new process group (session), stdout and stderr both into `log`."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Started(process, log)


def stop(started: Started) -> None:
    """Stop the group (the server, its master and workers): SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(started.process.pid, sig)
        except ProcessLookupError:
            break
        try:
            started.process.wait(DEADLINE)
            return
        except subprocess.TimeoutExpired:
            continue
    started.process.wait(DEADLINE)


@contextmanager
def running(command: list[str], log: Path, *, env: dict[str, str], cwd: Path = REPO_DIR) -> Iterator[Started]:
    """`start` the command; stop its whole group on the way out, whatever the test did to it."""
    started = start(command, log, env=env, cwd=cwd)
    try:
        yield started
    finally:
        stop(started)
