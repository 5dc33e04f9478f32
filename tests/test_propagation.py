"""The environ getter behind context extraction: header names to PEP 3333 keys and back."""

from __future__ import annotations

from wsgiref.types import WSGIEnvironment

import pytest
from opentelemetry.propagators.textmap import Getter

from otel_wsgi import effects

GETTER: Getter[WSGIEnvironment] = effects._GETTER

GET_CASES = [
    pytest.param({"HTTP_TRACEPARENT": "00-a-b-01"}, "traceparent", ["00-a-b-01"], id="traceparent"),
    pytest.param({"HTTP_X_B3_TRACEID": "abc"}, "x-b3-traceid", ["abc"], id="dashes-to-underscores"),
    pytest.param({"HTTP_X_B3_TRACEID": "abc"}, "X-B3-TraceId", ["abc"], id="any-case"),
    pytest.param({"HTTP_BAGGAGE": b"k=v"}, "baggage", None, id="bytes-value-ignored"),
    pytest.param({}, "tracestate", None, id="missing"),
    pytest.param({"CONTENT_TYPE": "text/plain"}, "content-type", ["text/plain"], id="cgi-content-type"),
]


@pytest.mark.parametrize(("environ", "key", "expected"), GET_CASES)
def test_getter_reads_pep3333_keys(environ: WSGIEnvironment, key: str, expected: list[str] | None) -> None:
    assert GETTER.get(environ, key) == expected


def test_getter_keys_lists_request_headers_only() -> None:
    environ: WSGIEnvironment = {
        "HTTP_TRACEPARENT": "x",
        "HTTP_X_B3_SAMPLED": "1",
        "CONTENT_LENGTH": "3",
        "REQUEST_METHOD": "GET",
        "wsgi.input": None,
        "HTTP_": "empty name",
    }
    assert sorted(GETTER.keys(environ)) == ["content-length", "traceparent", "x-b3-sampled"]


def test_every_listed_key_can_be_read_back() -> None:
    environ: WSGIEnvironment = {"HTTP_TRACEPARENT": "a", "HTTP_X_ONE_TWO": "b", "CONTENT_TYPE": "c"}
    assert {key: GETTER.get(environ, key) for key in GETTER.keys(environ)} == {
        "traceparent": ["a"],
        "x-one-two": ["b"],
        "content-type": ["c"],
    }
