"""The README's first command: the demo serves three requests through the middleware and prints spans."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_prints_three_server_spans_matching_their_traceresponse() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "otel_wsgi.demo"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # The console exporter prints one JSON object per span; the demo prints one line per request.
    spans = [json.loads(block) for block in re.findall(r"^\{\n.*?^\}$", done.stdout, re.M | re.S)]
    assert [(span["name"], span["kind"]) for span in spans] == [
        ("GET /users/{id}", "SpanKind.SERVER"),
        ("GET", "SpanKind.SERVER"),
        ("GET", "SpanKind.SERVER"),
    ]
    assert [span["attributes"]["http.response.status_code"] for span in spans] == [200, 200, 404]
    assert spans[0]["attributes"]["url.query"] == "sig=REDACTED"
    responses = re.findall(r"^--> (\S+): (\d+), traceresponse=00-(\w{32})-(\w{16})-\w\w$", done.stdout, re.M)
    assert [(path, int(code)) for path, code, _, _ in responses] == [
        ("/users/42?sig=secret", 200),
        ("/stream", 200),
        ("/missing", 404),
    ]
    assert [(f"0x{trace}", f"0x{span}") for _, _, trace, span in responses] == [
        (span["context"]["trace_id"], span["context"]["span_id"]) for span in spans
    ]
