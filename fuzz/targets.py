"""Fuzz targets for the pure core, shared by atheris (`fuzz/fuzz_pure.py`, by hand) and Hypothesis (CI).

Each target takes raw bytes, decodes them into an environ, a status line, headers or a `Config`
(`Decoder`: deterministic, total, biased towards the characters HTTP parsing cares about), calls the
pure functions, and raises `Violation` when a promise breaks: no exception, only valid attribute values
(str, bool, int, float, tuple of str), every string within `max_attribute_length`, ports and status
codes in range, inputs left untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeVar

from otel_wsgi.config import Config
from otel_wsgi.finish import active_key, exception_event, finish_record
from otel_wsgi.pure import (
    content_length,
    environ_header_name,
    header_environ_key,
    header_pairs,
    parse_host,
    parse_status,
    request_attributes,
    request_head,
    request_header_attributes,
    request_record,
    response_header_attributes,
    response_record,
    split_host,
    url_path,
    url_query,
)
from otel_wsgi.types import KNOWN_METHODS, REDACT_QUERY_PARAMS, SANITIZE_HEADERS

T = TypeVar("T")

# Bytes >= 0x80 stand for one of these: the pieces that steer parsers into their odd branches.
PIECES: Final = (
    "%", "%2", "%25", "%C3%A9", "%73ig", "@", ":", ":99999", ":0", ":8080", "[", "]", "[::1]", "[v1.x]",
    "%25eth0", ",", ";", "=", "&", "?", "#", "/", "//", "+", '"', " ", "\t", "\r\n", "\x00", "\x7f",
    "\xe9", "é", "\u0660", "\u00b2", "İ", "ﬃ", "\udcff", "\U0001f600", "HTTP/", "HTTP/1.1", "HTTP/2",
    "http", "https", "HTTPS", "for=", "proto=", "host=", "unknown", "Googlebot", "Pingdom",
    "AWSAccessKeyId", "Signature", "sig", "REDACTED", "GET", "get", "_OTHER", "x" * 300, "1" * 20,
)  # fmt: skip
ENVIRON_KEYS: Final = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "HTTP_HOST", "HTTP_USER_AGENT", "wsgi.url_scheme",
    "HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
    "RAW_URI", "REQUEST_URI", "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_X_REQUEST_ID", "HTTP_COOKIE",
    "HTTP_X_API_KEY", "HTTP_", "HTTP_X__Y",
)  # fmt: skip
PORT_KEYS: Final = frozenset(
    {"server.port", "client.port", "network.peer.port", "net.host.port", "net.peer.port"}
)
# 10 is the smallest limit `Config` accepts (`[REDACTED]` must fit it).
LIMITS: Final = (10, 11, 16, 64, 4096)
STATUS_KEYS: Final = frozenset({"http.response.status_code", "http.status_code"})


class Violation(AssertionError):
    """A promise of the pure core broke on this input."""


class Decoder:
    """Turn fuzzer bytes into choices; past the end every read is 0, so any input decodes."""

    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def byte(self) -> int:
        if self.position >= len(self.data):
            return 0
        self.position += 1
        return self.data[self.position - 1]

    def pick(self, options: Sequence[T]) -> T:
        return options[self.byte() % len(options)]

    def text(self, limit: int = 24) -> str:
        """ASCII for bytes below 0x80, one of `PIECES` for the others."""
        return "".join(
            chr(b) if b < 0x80 else PIECES[b % len(PIECES)]
            for b in (self.byte() for _ in range(self.byte() % (limit + 1)))
        )

    def value(self) -> object:
        """An environ value: mostly text, sometimes what a buggy server or middleware puts there."""
        kind = self.byte() % 10
        if kind < 6:
            return self.text()
        if kind == 6:
            return self.text().encode("utf-8", "surrogatepass")
        if kind == 7:
            return self.byte() * 300 - 1
        return self.pick((None, True, 1.5, float("nan"), [b"x"], ("a", "b"), object()))

    def environ(self) -> dict[str, object]:
        environ: dict[str, object] = {}
        for _ in range(self.byte() % 24):
            key = self.pick(ENVIRON_KEYS) if self.byte() % 8 else self.text(8)
            environ[key] = self.value()
        return environ

    def headers(self) -> list[object]:
        """Response headers, with junk items a buggy app may pass."""
        items: list[object] = []
        for _ in range(self.byte() % 8):
            name = self.pick(("Content-Length", "X-Cache", "Set-Cookie", "content-type", self.text(8)))
            kind = self.byte() % 8
            items.append((name, self.text()) if kind else self.pick(((name,), (name, b"v"), name, None)))
        return items

    def config(self) -> Config:
        return Config(
            semconv=self.pick(("stable", "old", "dup")),
            max_attribute_length=self.pick(LIMITS),
            capture_all_methods=self.byte() % 2 == 1,
            forwarded_headers=self.byte() % 2 == 1,
            capture_request_headers=self.pick(((), ("x-request-id", "cookie"), (".*",), ("x-.*", "host"))),
            capture_response_headers=self.pick(((), ("content-length",), (".*",), ("x-.*", "set-cookie"))),
            sanitize_headers=self.pick((SANITIZE_HEADERS, ("x-",))),
            redact_query_params=self.pick((REDACT_QUERY_PARAMS, frozenset(), frozenset({"a", "token"}))),
            excluded_urls=self.pick(((), ("/healthz$",), ("^https?://[^/]+/static/",), (":99",))),
            known_methods=self.pick((KNOWN_METHODS, frozenset({"GET"}), KNOWN_METHODS | {"PURGE"})),
            body_size_metrics=self.byte() % 2 == 1,
        )


def check(condition: bool, message: str, *context: object) -> None:
    if not condition:
        raise Violation(message, *context)


def check_attributes(attributes: Mapping[str, object], limit: int) -> None:
    """Only valid attribute values, every string within `limit`, ports and codes in range."""
    for key, value in attributes.items():
        if isinstance(value, str):
            check(len(value) <= limit, "string longer than max_attribute_length", key, len(value))
        elif isinstance(value, tuple):
            for item in value:  # pyright: ignore[reportUnknownVariableType]
                check(isinstance(item, str) and len(item) <= limit, "bad item in a tuple value", key)
        elif isinstance(value, int) and not isinstance(value, bool):
            check(key not in PORT_KEYS or 0 < value < 65536, "port out of range", key, value)
            check(key not in STATUS_KEYS or 100 <= value <= 599, "status code out of range", key, value)
        else:
            check(isinstance(value, bool | float), "not an attribute value", key, value)


def untouched(before: Mapping[str, object], after: Mapping[str, object]) -> None:
    """The same keys holding the very same objects (identity, so NaN compares as unchanged)."""
    check(before.keys() == after.keys(), "the environ's keys changed")
    check(all(after[key] is value for key, value in before.items()), "an environ value was replaced")


def request_target(data: bytes) -> None:
    """request_record, and request_head + request_attributes, over any environ and config."""
    decoder = Decoder(data)
    config, environ = decoder.config(), decoder.environ()
    before = dict(environ)
    record = request_record(environ, config)
    head = request_head(environ, config)
    limit = config.max_attribute_length
    check(record.traced == head.traced, "request_record and request_head disagree on tracing")
    check_attributes(record.attributes, limit)
    check(len(record.span_name) <= limit, "span name longer than the limit")
    if head.traced:
        check(request_attributes(environ, config, head) == record.attributes, "two ways, two results")
    untouched(before, environ)


def response_target(data: bytes) -> None:
    """response_record over any status line, header list and config."""
    decoder = Decoder(data)
    config, status, headers = decoder.config(), decoder.text(), decoder.headers()
    record = response_record(status, headers, config)  # type: ignore[arg-type]  # junk items on purpose
    check_attributes(record.attributes, config.max_attribute_length)
    check(record.status_code == parse_status(status), "status code differs from parse_status")
    check(record.error == (record.status_code is None or record.status_code >= 500), "wrong error flag")
    check(record.content_length is None or record.content_length >= 0, "negative content length")


def status_target(data: bytes) -> None:
    status = Decoder(data).text()
    code = parse_status(status)
    check(code is None or (100 <= code <= 599 and status[:3] == str(code)), "bad status code", status)


def host_target(data: bytes) -> None:
    host = Decoder(data).text(40)
    address, port = split_host(host)
    check(port is None or 0 < port < 65536, "port out of range", host)
    check(address is None or "@" not in address, "userinfo kept", host)
    check(address is not None or port is None, "a port without an address", host)
    parsed = parse_host(host)
    check(parsed is None or parsed == (address, port), "parse_host and split_host disagree", host)


def url_target(data: bytes) -> None:
    decoder = Decoder(data)
    path = url_path(decoder.text(), decoder.text())
    check(path.isascii() and all(" " < c < "\x7f" for c in path), "path not in request-line form", path)
    redact = decoder.pick((REDACT_QUERY_PARAMS, frozenset(), frozenset({"a", "é"})))
    query = url_query(decoder.text(), redact)
    check(query.isascii(), "query not ASCII", query)
    check(url_query(query, redact) == query, "url_query is not idempotent", query)


def header_target(data: bytes) -> None:
    decoder = Decoder(data)
    config, environ, headers = decoder.config(), decoder.environ(), decoder.headers()
    name = decoder.text(12)
    back = environ_header_name(header_environ_key(name))
    token = name.isascii() and name.replace("-", "").isalnum() and name == name.lower()
    check(not token or back == name, "header name does not round-trip", name, back)
    limit = config.max_attribute_length
    check_attributes(request_header_attributes(environ, config), limit)
    check_attributes(response_header_attributes(headers, config), limit)  # type: ignore[arg-type]
    pairs = header_pairs(headers)  # type: ignore[arg-type]
    check(all(type(a) is str and type(b) is str for a, b in pairs), "a junk header pair kept")
    length = content_length(headers)  # type: ignore[arg-type]
    check(length is None or length >= 0, "negative content length")


def finish_target(data: bytes) -> None:
    """finish_record and exception_event: route, status line and exception message of any length."""
    decoder = Decoder(data)
    config, environ = decoder.config(), decoder.environ()
    route, status, message = decoder.text(), decoder.text(), (decoder.text() * 1000)[: decoder.byte() * 100]
    limit = config.max_attribute_length
    try:
        raise RuntimeError(message)
    except RuntimeError as caught:
        error = caught
    head = request_head(environ, config)
    record = finish_record(head, route or None, response_record(status, [], config), error, config)
    check(
        len(record.span_name or "") <= limit, "span name longer than the limit", len(record.span_name or "")
    )
    check(len(record.description or "") <= limit, "status description longer than the limit")
    check_attributes(record.attributes, limit)
    check_attributes(exception_event(error, message, limit), limit)
    check(
        active_key(head, config).lasting
        == (
            head.scheme in ("http", "https")
            and (head.method == "_OTHER" or head.method in config.known_methods)
        ),
        "active set lasts wrongly",
    )


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "request": request_target,
    "response": response_target,
    "status": status_target,
    "host": host_target,
    "url": url_target,
    "header": header_target,
    "finish": finish_target,
}
_ORDER: Final = tuple(TARGETS.values())


def run_one(data: bytes) -> None:
    """One fuzzer input: the first byte picks the target, the rest is its input."""
    if data:
        _ORDER[data[0] % len(_ORDER)](data[1:])
