"""The pure core: a table per rule of the stable HTTP conventions, then Hypothesis properties.

Expected values come from the HTTP semantic conventions, PEP 3333 and RFC 3986/9110, never from
running the code under test.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Mapping
from dataclasses import FrozenInstanceError, fields
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from otel_wsgi.config import Config
from otel_wsgi.pure import (
    EXCLUDED,
    environ_header_name,
    header_environ_key,
    normalize_method,
    parse_host,
    parse_port,
    parse_status,
    protocol_version,
    request_record,
    response_header_attributes,
    response_record,
    span_name,
    split_host,
    synthetic_type,
    url_path,
    url_query,
)
from otel_wsgi.types import KNOWN_METHODS, AttributeValue, RequestRecord, ResponseRecord, SemconvMode

STABLE: Config = Config()
OLD: Config = Config(semconv="old")
DUP: Config = Config(semconv="dup")
MODES: tuple[SemconvMode, ...] = ("stable", "old", "dup")

#: The smallest environ a server gives; each case adds or overrides keys.
BASE: dict[str, object] = {
    "REQUEST_METHOD": "GET",
    "wsgi.url_scheme": "http",
    "SERVER_NAME": "srv.local",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/",
}

#: A full request, for the one-span-per-mode golden tests.
FULL: dict[str, object] = BASE | {
    "HTTP_HOST": "example.com:8080",
    "SCRIPT_NAME": "/app",
    "PATH_INFO": "/users/42",
    "QUERY_STRING": "a=1&sig=s3cr3t",
    "REMOTE_ADDR": "10.0.0.1",
    "REMOTE_PORT": "51000",
    "REMOTE_HOST": "client.example",
    "HTTP_USER_AGENT": "curl/8.5",
}


def attributes_of(environ: Mapping[str, object], config: Config = STABLE) -> dict[str, AttributeValue]:
    return dict(request_record(environ, config).attributes)


# --- parse_status ---

STATUS_CASES = [
    pytest.param("200 OK", 200, id="ok"),
    pytest.param("200", 200, id="code-only"),
    pytest.param("200 ", 200, id="code-space"),
    pytest.param("404 Not Found", 404, id="404"),
    pytest.param("100 Continue", 100, id="lowest"),
    pytest.param("599 Whatever", 599, id="highest"),
    pytest.param("500 Internal Server Error", 500, id="500"),
    pytest.param("200 ÖK \x00", 200, id="any-reason-phrase"),
    pytest.param("", None, id="empty"),
    pytest.param("20 OK", None, id="two-digits"),
    pytest.param("20", None, id="two-digits-alone"),
    pytest.param("2000 OK", None, id="four-digits"),
    pytest.param("600 X", None, id="600"),
    pytest.param("099 x", None, id="099"),
    pytest.param("000", None, id="000"),
    pytest.param("2OO OK", None, id="letter-o"),
    pytest.param(" 200", None, id="leading-space"),
    pytest.param("200OK", None, id="no-space"),
    pytest.param("200\tOK", None, id="tab"),
    pytest.param("200-OK", None, id="dash"),
    pytest.param("+20 OK", None, id="sign"),
    pytest.param("1_0 x", None, id="underscore"),
    pytest.param("٢٠٠ OK", None, id="arabic-indic-digits"),
    pytest.param("２００ OK", None, id="fullwidth-digits"),
    pytest.param("²⁰⁰ OK", None, id="superscript-digits"),
]


@pytest.mark.parametrize(("status", "expected"), STATUS_CASES)
def test_parse_status(status: str, expected: int | None) -> None:
    assert parse_status(status) == expected


# --- parse_port ---

PORT_CASES = [
    pytest.param("80", 80, id="text"),
    pytest.param(80, 80, id="int"),
    pytest.param("1", 1, id="lowest"),
    pytest.param("65535", 65535, id="highest"),
    pytest.param(b"8080", 8080, id="bytes"),
    pytest.param(bytearray(b"81"), 81, id="bytearray"),
    pytest.param("080", 80, id="leading-zero"),
    pytest.param("0", None, id="zero"),
    pytest.param(0, None, id="int-zero"),
    pytest.param("65536", None, id="too-big"),
    pytest.param(65536, None, id="int-too-big"),
    pytest.param(-1, None, id="negative"),
    pytest.param("-1", None, id="negative-text"),
    pytest.param("+80", None, id="sign"),
    pytest.param(" 80", None, id="space"),
    pytest.param("80 ", None, id="trailing-space"),
    pytest.param("000080", None, id="six-digits"),
    pytest.param("", None, id="empty"),
    pytest.param("http", None, id="name"),
    pytest.param("٨٠", None, id="arabic-indic-digits"),
    pytest.param(True, None, id="bool"),
    pytest.param(8.0, None, id="float"),
    pytest.param(None, None, id="none"),
    pytest.param(["80"], None, id="list"),
]


@pytest.mark.parametrize(("raw", "expected"), PORT_CASES)
def test_parse_port(raw: object, expected: int | None) -> None:
    assert parse_port(raw) == expected


# --- split_host ---

HOST_CASES = [
    pytest.param("example.com", "example.com", None, id="name"),
    pytest.param("example.com:8080", "example.com", 8080, id="name-port"),
    pytest.param("EXAMPLE.Com:81", "example.com", 81, id="uppercase"),
    pytest.param(" example.com ", "example.com", None, id="whitespace"),
    pytest.param("127.0.0.1:5000", "127.0.0.1", 5000, id="ipv4"),
    pytest.param("[::1]", "::1", None, id="ipv6"),
    pytest.param("[::1]:8080", "::1", 8080, id="ipv6-port"),
    pytest.param("[2001:DB8::1]:443", "2001:DB8::1", 443, id="ipv6-kept-as-sent"),
    pytest.param("[fe80::1%25eth0]:80", "fe80::1%25eth0", 80, id="ipv6-zone"),
    pytest.param("[v1.fe80::a+en1]", "v1.fe80::a+en1", None, id="ipvfuture"),
    pytest.param("[V1.x]:8", "V1.x", 8, id="ipvfuture-uppercase-v"),
    pytest.param("[v1.a b]", None, None, id="ipvfuture-space"),
    pytest.param("[v1.<x>]", None, None, id="ipvfuture-junk"),
    pytest.param("user:pw@example.com:81", "example.com", 81, id="userinfo"),
    pytest.param("a@b@example.com", "example.com", None, id="double-at"),
    pytest.param("user@[::1]:9", "::1", 9, id="userinfo-ipv6"),
    pytest.param("example.com:abc", "example.com", None, id="non-numeric-port"),
    pytest.param("example.com:", "example.com", None, id="empty-port"),
    pytest.param("example.com:0", "example.com", None, id="port-zero"),
    pytest.param("example.com:65536", "example.com", None, id="port-too-big"),
    pytest.param("example.com:+80", "example.com", None, id="signed-port"),
    pytest.param("[::1]:x", "::1", None, id="ipv6-bad-port"),
    pytest.param("", None, None, id="empty"),
    pytest.param("   ", None, None, id="blank"),
    pytest.param("[::1", None, None, id="unclosed-bracket"),
    pytest.param("[::1]x", None, None, id="junk-after-bracket"),
    pytest.param("[]", None, None, id="empty-brackets"),
    pytest.param("[not-ip]", None, None, id="bracketed-name"),
    pytest.param("::1", None, None, id="bare-ipv6"),
    pytest.param(":80", None, None, id="port-only"),
    pytest.param("/tmp/x.sock", None, None, id="unix-socket"),
    pytest.param("unix:/tmp/x.sock", "unix", None, id="unix-socket-url-bad-port"),
    pytest.param("a b", None, None, id="space-inside"),
    pytest.param("exa\u00e9mple.com", None, None, id="non-ascii"),
    pytest.param("host/path", None, None, id="slash"),
]


@pytest.mark.parametrize(("host", "address", "port"), HOST_CASES)
def test_split_host(host: str, address: str | None, port: int | None) -> None:
    assert split_host(host) == (address, port)


# parse_host: the same splits, but a host whose port is given and invalid is invalid as a whole.
PARSE_HOST_CASES = [
    pytest.param("example.com", ("example.com", None), id="name"),
    pytest.param("example.com:8080", ("example.com", 8080), id="name-port"),
    pytest.param("example.com:", ("example.com", None), id="empty-port-is-absent"),
    pytest.param("[::1]:8080", ("::1", 8080), id="ipv6-port"),
    pytest.param("user:pw@example.com:81", ("example.com", 81), id="userinfo"),
    pytest.param("example.com:99999", None, id="port-too-big"),
    pytest.param("example.com:0", None, id="port-zero"),
    pytest.param("example.com:80x", None, id="junk-port"),
    pytest.param("[::1]:x", None, id="ipv6-bad-port"),
    pytest.param("bad host", None, id="bad-name"),
    pytest.param("", None, id="empty"),
]


@pytest.mark.parametrize(("host", "expected"), PARSE_HOST_CASES)
def test_parse_host(host: str, expected: tuple[str, int | None] | None) -> None:
    assert parse_host(host) == expected


@pytest.mark.parametrize("host", [param.values[0] for param in HOST_CASES])
def test_parse_host_agrees_with_split_host_when_valid(host: str) -> None:
    parsed = parse_host(host)
    if parsed is not None:
        assert split_host(host) == parsed


# --- normalize_method and span_name ---

METHOD_CASES = [
    pytest.param("GET", KNOWN_METHODS, False, "GET", id="get"),
    pytest.param("PATCH", KNOWN_METHODS, False, "PATCH", id="patch"),
    pytest.param("QUERY", KNOWN_METHODS, False, "QUERY", id="query"),
    pytest.param("CONNECT", KNOWN_METHODS, False, "CONNECT", id="connect"),
    pytest.param("get", KNOWN_METHODS, False, "_OTHER", id="case-sensitive"),
    pytest.param("Get", KNOWN_METHODS, False, "_OTHER", id="mixed-case"),
    pytest.param("PROPFIND", KNOWN_METHODS, False, "_OTHER", id="unknown"),
    pytest.param("GET ", KNOWN_METHODS, False, "_OTHER", id="trailing-space"),
    pytest.param("", KNOWN_METHODS, False, "_OTHER", id="empty"),
    pytest.param("_OTHER", KNOWN_METHODS, False, "_OTHER", id="other-itself"),
    pytest.param("GET", frozenset({"FOO"}), False, "_OTHER", id="custom-set-drops-get"),
    pytest.param("FOO", frozenset({"FOO"}), False, "FOO", id="custom-set"),
    pytest.param("get", KNOWN_METHODS, True, "get", id="capture-all-lowercase"),
    pytest.param("PROPFIND", KNOWN_METHODS, True, "PROPFIND", id="capture-all-unknown"),
    pytest.param("G E T", KNOWN_METHODS, True, "_OTHER", id="capture-all-not-a-token"),
    pytest.param("", KNOWN_METHODS, True, "_OTHER", id="capture-all-empty"),
    pytest.param("GÉT", KNOWN_METHODS, True, "_OTHER", id="capture-all-non-ascii"),
]


@pytest.mark.parametrize(("method", "known", "capture_all", "expected"), METHOD_CASES)
def test_normalize_method(method: str, known: frozenset[str], capture_all: bool, expected: str) -> None:
    assert normalize_method(method, known, capture_all=capture_all) == expected


SPAN_NAME_CASES = [
    pytest.param("GET", None, "GET", id="method"),
    pytest.param("GET", "/users/{id}", "GET /users/{id}", id="method-route"),
    pytest.param("GET", "", "GET", id="empty-route"),
    pytest.param("_OTHER", None, "HTTP", id="other"),
    pytest.param("_OTHER", "/users/{id}", "HTTP /users/{id}", id="other-route"),
]


@pytest.mark.parametrize(("method", "route", "expected"), SPAN_NAME_CASES)
def test_span_name(method: str, route: str | None, expected: str) -> None:
    assert span_name(method, route) == expected


# --- url_path ---

PATH_CASES = [
    pytest.param("", "", "/", id="empty"),
    pytest.param("", "/", "/", id="root"),
    pytest.param("/app", "", "/app", id="script-only"),
    pytest.param("/app", "/users/42", "/app/users/42", id="script-and-path"),
    pytest.param("", "/caf\xc3\xa9", "/caf%C3%A9", id="utf8-bytes-as-latin1"),
    pytest.param("/\xc3\xa9", "/x", "/%C3%A9/x", id="utf8-in-script-name"),
    pytest.param("", "/café", "/caf%E9", id="latin1-byte"),
    pytest.param("", "/€", "/%E2%82%AC", id="wider-than-latin1"),
    pytest.param("", "/100%", "/100%25", id="percent"),
    pytest.param("", "/%41", "/%2541", id="decoded-escape-stays-literal"),
    pytest.param("", "/a?b", "/a%3Fb", id="question-mark"),
    pytest.param("", "/a#b", "/a%23b", id="hash"),
    pytest.param("", "/a b", "/a%20b", id="space"),
    pytest.param("", "/a\nb", "/a%0Ab", id="newline"),
    pytest.param("", '/a"<>\\^`{|}', "/a%22%3C%3E%5C%5E%60%7B%7C%7D", id="unsafe-ascii"),
    pytest.param("", "/a-._~:@!$&'()*+,;=/", "/a-._~:@!$&'()*+,;=/", id="pchars-kept"),
    pytest.param("", "users", "users", id="no-leading-slash"),
]


@pytest.mark.parametrize(("script_name", "path_info", "expected"), PATH_CASES)
def test_url_path(script_name: str, path_info: str, expected: str) -> None:
    assert url_path(script_name, path_info) == expected


# --- url_query ---

DEFAULT_REDACT = Config().redact_query_params

QUERY_CASES = [
    pytest.param("", DEFAULT_REDACT, "", id="empty"),
    pytest.param("a=1&b=2", DEFAULT_REDACT, "a=1&b=2", id="plain"),
    pytest.param("b=2&a=1", DEFAULT_REDACT, "b=2&a=1", id="order-kept"),
    pytest.param("a=1&&b=&=c&", DEFAULT_REDACT, "a=1&&b=&=c&", id="blanks-kept"),
    pytest.param("a=%20+b%2B", DEFAULT_REDACT, "a=%20+b%2B", id="encoding-kept"),
    pytest.param("a=b#c;d", DEFAULT_REDACT, "a=b#c;d", id="odd-ascii-kept"),
    pytest.param("sig=abc", DEFAULT_REDACT, "sig=REDACTED", id="sig"),
    pytest.param("x=1&sig=abc&y=2", DEFAULT_REDACT, "x=1&sig=REDACTED&y=2", id="sig-middle"),
    pytest.param("sig=", DEFAULT_REDACT, "sig=REDACTED", id="sig-empty-value"),
    pytest.param("sig=a=b", DEFAULT_REDACT, "sig=REDACTED", id="value-with-equals"),
    pytest.param("sig=1&sig=2", DEFAULT_REDACT, "sig=REDACTED&sig=REDACTED", id="repeated"),
    pytest.param("sig", DEFAULT_REDACT, "sig", id="key-without-value"),
    pytest.param("Sig=abc", DEFAULT_REDACT, "Sig=abc", id="case-sensitive"),
    pytest.param("x-goog-signature=x", DEFAULT_REDACT, "x-goog-signature=x", id="case-sensitive-goog"),
    pytest.param("signature=abc", DEFAULT_REDACT, "signature=abc", id="not-a-prefix-match"),
    pytest.param("xsig=abc&sigx=d", DEFAULT_REDACT, "xsig=abc&sigx=d", id="not-a-substring-match"),
    pytest.param("%73ig=abc", DEFAULT_REDACT, "%73ig=REDACTED", id="encoded-key"),
    pytest.param("s%69g=abc&a=%41", DEFAULT_REDACT, "s%69g=REDACTED&a=%41", id="encoded-key-middle"),
    pytest.param(
        "AWSAccessKeyId=AK&Signature=S&Expires=1&X-Goog-Signature=G",
        DEFAULT_REDACT,
        "AWSAccessKeyId=REDACTED&Signature=REDACTED&Expires=1&X-Goog-Signature=REDACTED",
        id="all-defaults",
    ),
    pytest.param("sig=abc", frozenset(), "sig=abc", id="redaction-off"),
    pytest.param("token=t&sig=s", frozenset({"token"}), "token=REDACTED&sig=s", id="custom-set"),
    pytest.param("q=caf\xc3\xa9", DEFAULT_REDACT, "q=caf%C3%A9", id="utf8-bytes-as-latin1"),
    pytest.param("q=café", DEFAULT_REDACT, "q=caf%E9", id="latin1-byte"),
    pytest.param("q=€", DEFAULT_REDACT, "q=%E2%82%AC", id="wider-than-latin1"),
    pytest.param("q=\xe9&sig=\xe9", DEFAULT_REDACT, "q=%E9&sig=REDACTED", id="non-ascii-and-redacted"),
    pytest.param(
        "cl\xc3\xa9=1&cl%C3%A9=2",
        frozenset({"clé"}),
        "cl%C3%A9=REDACTED&cl%C3%A9=REDACTED",
        id="non-ascii-key",
    ),
]


@pytest.mark.parametrize(("query", "redact", "expected"), QUERY_CASES)
def test_url_query(query: str, redact: frozenset[str], expected: str) -> None:
    assert url_query(query, redact) == expected


# --- protocol_version, synthetic_type ---

PROTOCOL_CASES = [
    pytest.param("HTTP/1.1", "1.1", id="1.1"),
    pytest.param("HTTP/1.0", "1.0", id="1.0"),
    pytest.param("HTTP/2", "2", id="2"),
    pytest.param("HTTP/3", "3", id="3"),
    pytest.param("http/2.0", "2.0", id="lowercase"),
    pytest.param("HTTP/", None, id="no-version"),
    pytest.param("HTTP/1.", None, id="trailing-dot"),
    pytest.param("HTTP/.1", None, id="leading-dot"),
    pytest.param("HTTP/1.1.1", None, id="three-parts"),
    pytest.param("HTTP/x", None, id="letters"),
    pytest.param("HTTP/١", None, id="arabic-indic-digit"),
    pytest.param("HTTP/1.1 ", None, id="trailing-space"),
    pytest.param("SPDY/3", None, id="other-protocol"),
    pytest.param("INCLUDED", None, id="cgi-included"),
    pytest.param("", None, id="empty"),
]


@pytest.mark.parametrize(("server_protocol", "expected"), PROTOCOL_CASES)
def test_protocol_version(server_protocol: str, expected: str | None) -> None:
    assert protocol_version(server_protocol) == expected


AGENT_CASES = [
    pytest.param("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", None, id="browser"),
    pytest.param("curl/8.5.0", None, id="curl"),
    pytest.param("", None, id="empty"),
    pytest.param("Googlebot/2.1 (+http://www.google.com/bot.html)", "bot", id="googlebot"),
    pytest.param("Mozilla/5.0 (compatible; bingbot/2.0)", "bot", id="bingbot"),
    pytest.param("Mozilla/5.0 AppleWebKit/537.36 (compatible; GPTBot/1.0)", "bot", id="gptbot"),
    pytest.param("GOOGLEBOT", "bot", id="case-insensitive"),
    pytest.param("AlwaysOn", "test", id="azure-availability"),
    pytest.param("Datadog/SyntheticsDatadogSynthetics", "test", id="datadog"),
    pytest.param("Pingdom.com_bot_version_1.4", "test", id="pingdom-test-wins-over-bot"),
    pytest.param("Mozilla/5.0+(compatible; UptimeRobot/2.0)", "test", id="uptimerobot"),
]


@pytest.mark.parametrize(("user_agent", "expected"), AGENT_CASES)
def test_synthetic_type(user_agent: str, expected: str | None) -> None:
    assert synthetic_type(user_agent) == expected


# --- header names <-> environ keys ---

HEADER_KEY_CASES = [
    pytest.param("x-a", "HTTP_X_A", id="dash"),
    pytest.param("X-Forwarded-For", "HTTP_X_FORWARDED_FOR", id="mixed-case"),
    pytest.param("host", "HTTP_HOST", id="host"),
    pytest.param("traceparent", "HTTP_TRACEPARENT", id="traceparent"),
    pytest.param("content-type", "CONTENT_TYPE", id="cgi-content-type"),
    pytest.param("Content-Length", "CONTENT_LENGTH", id="cgi-content-length"),
]


@pytest.mark.parametrize(("name", "key"), HEADER_KEY_CASES)
def test_header_environ_key(name: str, key: str) -> None:
    assert header_environ_key(name) == key


ENVIRON_NAME_CASES = [
    pytest.param("HTTP_X_A", "x-a", id="dash"),
    pytest.param("HTTP_HOST", "host", id="host"),
    pytest.param("CONTENT_TYPE", "content-type", id="cgi-content-type"),
    pytest.param("CONTENT_LENGTH", "content-length", id="cgi-content-length"),
    pytest.param("HTTP_", None, id="prefix-only"),
    pytest.param("SERVER_NAME", None, id="not-a-header"),
    pytest.param("REMOTE_ADDR", None, id="remote-addr"),
    pytest.param("wsgi.input", None, id="wsgi-key"),
    pytest.param("http_x_a", None, id="lowercase-prefix"),
    pytest.param("", None, id="empty"),
]


@pytest.mark.parametrize(("key", "name"), ENVIRON_NAME_CASES)
def test_environ_header_name(key: str, name: str | None) -> None:
    assert environ_header_name(key) == name


# --- request_record: one rule per table ---


def test_full_request_stable() -> None:
    record = request_record(FULL, STABLE)
    assert record == RequestRecord(
        "GET",
        {
            "http.request.method": "GET",
            "url.scheme": "http",
            "url.path": "/app/users/42",
            "url.query": "a=1&sig=REDACTED",
            "server.address": "example.com",
            "server.port": 8080,
            "client.address": "10.0.0.1",
            "client.port": 51000,
            "network.peer.address": "10.0.0.1",
            "network.peer.port": 51000,
            "network.protocol.version": "1.1",
            "user_agent.original": "curl/8.5",
        },
        "GET",
    )


OLD_FULL: dict[str, AttributeValue] = {
    "http.method": "GET",
    "http.scheme": "http",
    "http.host": "example.com:8080",
    "net.host.name": "example.com",
    "net.host.port": 8000,  # SERVER_PORT: the port the server listens on, whatever Host says
    "http.url": "http://example.com:8080/app/users/42?a=1&sig=REDACTED",
    "http.flavor": "1.1",
    "http.user_agent": "curl/8.5",
    "net.peer.ip": "10.0.0.1",
    "net.peer.port": 51000,
    "http.server_name": "srv.local",
}


def test_full_request_old() -> None:
    record = request_record(FULL, OLD)
    assert (record.span_name, record.method) == ("GET", "GET")
    assert dict(record.attributes) == OLD_FULL


def test_full_request_dup_is_both() -> None:
    assert attributes_of(FULL, DUP) == attributes_of(FULL, STABLE) | attributes_of(FULL, OLD)


@pytest.mark.parametrize("config", [STABLE, OLD, DUP], ids=["stable", "old", "dup"])
def test_redacted_query_secret_never_reaches_an_attribute(config: Config) -> None:
    environ = FULL | {"RAW_URI": "http://user:pa55@example.com/app/users/42?a=1&sig=s3cr3t"}
    values = [str(value) for value in attributes_of(environ, config).values()]
    assert values
    assert not any("s3cr3t" in value or "pa55" in value for value in values)


def test_request_record_is_frozen() -> None:
    record = request_record(FULL, STABLE)
    for field in fields(record):
        with pytest.raises(FrozenInstanceError):
            setattr(record, field.name, None)


METHOD_RECORD_CASES = [
    pytest.param("GET", STABLE, "GET", "GET", None, id="get"),
    pytest.param("DELETE", STABLE, "DELETE", "DELETE", None, id="delete"),
    pytest.param("get", STABLE, "HTTP", "_OTHER", "get", id="lowercase-is-other"),
    pytest.param("PROPFIND", STABLE, "HTTP", "_OTHER", "PROPFIND", id="unknown"),
    pytest.param("", STABLE, "HTTP", "_OTHER", None, id="empty"),
    pytest.param(b"PATCH", STABLE, "PATCH", "PATCH", None, id="bytes"),
    pytest.param(None, STABLE, "HTTP", "_OTHER", None, id="missing"),
    pytest.param("get", Config(capture_all_methods=True), "get", "get", None, id="capture-all"),
    pytest.param("FOO", Config(known_methods=frozenset({"FOO"})), "FOO", "FOO", None, id="custom-known"),
]


@pytest.mark.parametrize(("method", "config", "name", "normalized", "original"), METHOD_RECORD_CASES)
def test_request_method_and_span_name(
    method: object, config: Config, name: str, normalized: str, original: str | None
) -> None:
    environ = BASE | {"REQUEST_METHOD": method, "PATH_INFO": "/users/42"}
    record = request_record(environ, config)
    assert (record.span_name, record.method) == (name, normalized)
    assert record.attributes["http.request.method"] == normalized
    assert record.attributes.get("http.request.method_original") == original
    assert "/users/42" not in record.span_name


SERVER_CASES = [
    pytest.param({"HTTP_HOST": "example.com:8080"}, "example.com", 8080, id="host-port"),
    pytest.param({"HTTP_HOST": "example.com"}, "example.com", 8000, id="host-without-port-uses-server-port"),
    pytest.param({"HTTP_HOST": "Example.COM"}, "example.com", 8000, id="uppercase-host"),
    # An invalid port makes the Host invalid: both halves from the server, never Host's name with its port.
    pytest.param({"HTTP_HOST": "example.com:abc"}, "srv.local", 8000, id="bad-port-uses-the-server-for-both"),
    pytest.param({"HTTP_HOST": "[::1]:9000"}, "::1", 9000, id="ipv6-port"),
    pytest.param({"HTTP_HOST": "[::1]"}, "::1", 8000, id="ipv6"),
    pytest.param({"HTTP_HOST": "user:pw@example.com:81"}, "example.com", 81, id="userinfo-dropped"),
    pytest.param({"HTTP_HOST": b"example.com:81"}, "example.com", 81, id="bytes-host"),
    pytest.param({}, "srv.local", 8000, id="no-host-uses-server-name"),
    pytest.param({"HTTP_HOST": ""}, "srv.local", 8000, id="empty-host"),
    pytest.param({"HTTP_HOST": "[::1"}, "srv.local", 8000, id="unclosed-bracket"),
    pytest.param({"HTTP_HOST": "/tmp/x.sock"}, "srv.local", 8000, id="unix-socket-host"),
    pytest.param({"HTTP_HOST": 42}, "srv.local", 8000, id="int-host"),
    pytest.param({"SERVER_PORT": "http"}, "srv.local", None, id="non-numeric-server-port"),
    pytest.param({"SERVER_PORT": "0"}, "srv.local", None, id="server-port-zero"),
    pytest.param({"SERVER_PORT": "70000"}, "srv.local", None, id="server-port-too-big"),
    pytest.param({"SERVER_PORT": 8443}, "srv.local", 8443, id="int-server-port"),
    pytest.param({"SERVER_PORT": None}, "srv.local", None, id="no-server-port"),
    pytest.param({"HTTP_HOST": "example.com", "SERVER_PORT": "x"}, "example.com", None, id="no-port-at-all"),
    pytest.param(
        {"SERVER_NAME": "/tmp/gunicorn.sock", "SERVER_PORT": ""},
        "/tmp/gunicorn.sock",
        None,
        id="unix-socket-server-name",
    ),
    pytest.param({"SERVER_NAME": "", "SERVER_PORT": "8000"}, None, None, id="nothing-no-port-either"),
    pytest.param({"SERVER_NAME": None}, None, None, id="server-name-missing"),
]


@pytest.mark.parametrize(("extra", "address", "port"), SERVER_CASES)
def test_server_address_and_port(extra: dict[str, object], address: str | None, port: int | None) -> None:
    attributes = attributes_of(BASE | extra)
    assert attributes.get("server.address") == address
    assert attributes.get("server.port") == port


CLIENT_CASES = [
    pytest.param({"REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "5555"}, "10.0.0.1", 5555, id="addr-port"),
    pytest.param({"REMOTE_ADDR": "::1", "REMOTE_PORT": 5555}, "::1", 5555, id="ipv6-int-port"),
    pytest.param({"REMOTE_ADDR": "10.0.0.1"}, "10.0.0.1", None, id="no-port"),
    pytest.param({"REMOTE_ADDR": "10.0.0.1", "REMOTE_PORT": "x"}, "10.0.0.1", None, id="bad-port"),
    pytest.param({"REMOTE_ADDR": b"10.0.0.2"}, "10.0.0.2", None, id="bytes"),
    pytest.param(
        {"REMOTE_ADDR": "10.0.0.1", "REMOTE_HOST": "evil.example"}, "10.0.0.1", None, id="remote-host-ignored"
    ),
    pytest.param({"REMOTE_HOST": "evil.example"}, None, None, id="remote-host-alone"),
    pytest.param({"REMOTE_ADDR": ""}, None, None, id="empty"),
    pytest.param({"REMOTE_ADDR": 3}, None, None, id="int"),
    pytest.param({"REMOTE_PORT": "5555"}, None, 5555, id="port-without-addr"),
]


@pytest.mark.parametrize(("extra", "address", "port"), CLIENT_CASES)
def test_client_and_peer(extra: dict[str, object], address: str | None, port: int | None) -> None:
    attributes = attributes_of(BASE | extra)
    assert (attributes.get("client.address"), attributes.get("client.port")) == (address, port)
    assert (attributes.get("network.peer.address"), attributes.get("network.peer.port")) == (address, port)


URL_CASES = [
    pytest.param({}, "http", "/", None, id="defaults"),
    pytest.param({"wsgi.url_scheme": "https"}, "https", "/", None, id="https"),
    pytest.param({"wsgi.url_scheme": "HTTPS"}, "https", "/", None, id="scheme-lowercased"),
    pytest.param({"wsgi.url_scheme": "1bad"}, "http", "/", None, id="invalid-scheme"),
    pytest.param({"wsgi.url_scheme": None}, "http", "/", None, id="missing-scheme"),
    pytest.param({"SCRIPT_NAME": "/app", "PATH_INFO": "/x"}, "http", "/app/x", None, id="script-name"),
    pytest.param({"PATH_INFO": "/caf\xc3\xa9"}, "http", "/caf%C3%A9", None, id="utf8-path"),
    pytest.param({"PATH_INFO": b"/caf\xc3\xa9"}, "http", "/caf%C3%A9", None, id="bytes-path"),
    pytest.param({"PATH_INFO": ""}, "http", "/", None, id="empty-path"),
    pytest.param({"PATH_INFO": None}, "http", "/", None, id="missing-path"),
    pytest.param({"QUERY_STRING": ""}, "http", "/", None, id="empty-query"),
    pytest.param({"QUERY_STRING": "b=2&a=1"}, "http", "/", "b=2&a=1", id="query"),
    pytest.param({"QUERY_STRING": "Signature=x&e=1"}, "http", "/", "Signature=REDACTED&e=1", id="redacted"),
    pytest.param({"QUERY_STRING": "q=\xc3\xa9"}, "http", "/", "q=%C3%A9", id="non-ascii-query"),
    pytest.param({"QUERY_STRING": 5}, "http", "/", None, id="int-query"),
]


@pytest.mark.parametrize(("extra", "scheme", "path", "query"), URL_CASES)
def test_url_attributes(extra: dict[str, object], scheme: str, path: str, query: str | None) -> None:
    attributes = attributes_of(BASE | extra)
    assert attributes["url.scheme"] == scheme
    assert attributes["url.path"] == path
    assert attributes.get("url.query") == query


AGENT_RECORD_CASES = [
    pytest.param("curl/8.5", "curl/8.5", None, id="plain"),
    pytest.param("Googlebot/2.1", "Googlebot/2.1", "bot", id="bot"),
    pytest.param("AlwaysOn", "AlwaysOn", "test", id="test"),
    pytest.param(b"\xff\xfeGooglebot\x00", "\xff\xfeGooglebot\x00", "bot", id="binary"),
    pytest.param("", None, None, id="empty"),
    pytest.param(None, None, None, id="missing"),
    pytest.param(12, None, None, id="int"),
]


@pytest.mark.parametrize(("agent", "original", "synthetic"), AGENT_RECORD_CASES)
def test_user_agent(agent: object, original: str | None, synthetic: str | None) -> None:
    attributes = attributes_of(BASE | {"HTTP_USER_AGENT": agent})
    assert attributes.get("user_agent.original") == original
    assert attributes.get("user_agent.synthetic.type") == synthetic


@pytest.mark.parametrize(
    ("server_protocol", "expected"),
    [
        pytest.param("HTTP/1.0", "1.0", id="1.0"),
        pytest.param("HTTP/2", "2", id="2"),
        pytest.param("junk", None, id="junk"),
        pytest.param(None, None, id="missing"),
    ],
)
def test_network_protocol_version(server_protocol: object, expected: str | None) -> None:
    attributes = attributes_of(BASE | {"SERVER_PROTOCOL": server_protocol})
    assert attributes.get("network.protocol.version") == expected


# --- forwarded headers (trusted proxies only) ---

FORWARDED = Config(forwarded_headers=True)
PROXIED: dict[str, object] = BASE | {
    "HTTP_HOST": "internal:8080",
    "REMOTE_ADDR": "10.0.0.9",
    "REMOTE_PORT": "4000",
}

FORWARDED_CASES = [
    pytest.param(
        {"HTTP_FORWARDED": 'for="[2001:db8::1]:4711";proto=https;host=pub.example'},
        ("https", "pub.example", 443, "2001:db8::1", 4711),
        id="forwarded",
    ),
    pytest.param(
        {"HTTP_FORWARDED": "for=1.2.3.4;proto=http, for=5.6.7.8;proto=https"},
        ("http", "internal", 8080, "1.2.3.4", None),
        id="forwarded-first-element",
    ),
    pytest.param(
        {
            "HTTP_X_FORWARDED_FOR": "1.2.3.4, 10.0.0.2",
            "HTTP_X_FORWARDED_PROTO": "https",
            "HTTP_X_FORWARDED_HOST": "pub.example:8443",
        },
        ("https", "pub.example", 8443, "1.2.3.4", None),
        id="x-forwarded",
    ),
    pytest.param(
        {"HTTP_X_FORWARDED_PROTO": "1bad", "HTTP_X_FORWARDED_HOST": "/tmp/x.sock"},
        ("http", "internal", 8080, "10.0.0.9", 4000),
        id="junk-ignored",
    ),
    pytest.param(
        {"HTTP_FORWARDED": "for=[::1", "HTTP_X_FORWARDED_FOR": "[bad"},
        ("http", "internal", 8080, "10.0.0.9", 4000),
        id="junk-client-keeps-socket-peer",
    ),
    pytest.param(
        {"HTTP_X_FORWARDED_HOST": "pub.example:99999"},
        ("http", "internal", 8080, "10.0.0.9", 4000),
        id="forwarded-host-with-bad-port-ignored",
    ),
    pytest.param({}, ("http", "internal", 8080, "10.0.0.9", 4000), id="no-proxy-headers"),
]


@pytest.mark.parametrize(("extra", "expected"), FORWARDED_CASES)
def test_forwarded_headers(
    extra: dict[str, object], expected: tuple[str, str, int | None, str, int | None]
) -> None:
    attributes = attributes_of(PROXIED | extra, FORWARDED)
    assert (
        attributes["url.scheme"],
        attributes.get("server.address"),
        attributes.get("server.port"),
        attributes.get("client.address"),
        attributes.get("client.port"),
    ) == expected
    assert (attributes["network.peer.address"], attributes["network.peer.port"]) == ("10.0.0.9", 4000)


def test_forged_forwarded_headers_ignored_by_default() -> None:
    forged = {
        "HTTP_FORWARDED": "for=6.6.6.6;proto=https;host=evil.example",
        "HTTP_X_FORWARDED_FOR": "6.6.6.6",
        "HTTP_X_FORWARDED_HOST": "evil.example",
        "HTTP_X_FORWARDED_PROTO": "https",
    }
    assert attributes_of(PROXIED | forged) == attributes_of(PROXIED)


# --- old-mode names ---

OLD_CASES = [
    pytest.param(
        {"RAW_URI": "/app/users/42?a=1&sig=s"}, "http.target", "/app/users/42?a=1&sig=REDACTED", id="raw-uri"
    ),
    pytest.param({"REQUEST_URI": "/p?Signature=s"}, "http.target", "/p?Signature=REDACTED", id="request-uri"),
    pytest.param({"RAW_URI": "/r", "REQUEST_URI": "/q"}, "http.target", "/r", id="raw-uri-wins"),
    pytest.param(
        {"RAW_URI": "http://u:pw@h.example/p?x=1"}, "http.target", "http://h.example/p?x=1", id="userinfo"
    ),
    pytest.param({"RAW_URI": "/caf\xc3\xa9"}, "http.target", "/caf%C3%A9", id="non-ascii-target"),
    pytest.param({"RAW_URI": "/p"}, "http.url", None, id="no-url-with-target"),
    pytest.param({}, "http.url", "http://example.com:8080/app/users/42?a=1&sig=REDACTED", id="url"),
    pytest.param(
        {"RAW_URI": ""},
        "http.url",
        "http://example.com:8080/app/users/42?a=1&sig=REDACTED",
        id="empty-target",
    ),
    pytest.param({}, "http.target", None, id="no-target-without-raw-uri"),
    pytest.param({"HTTP_HOST": "example.com:80"}, "http.host", "example.com", id="default-port-omitted"),
    pytest.param({"HTTP_HOST": "[::1]:8080"}, "http.host", "[::1]:8080", id="ipv6-host-bracketed"),
    pytest.param({"HTTP_HOST": "a:b@x.example"}, "http.host", "x.example:8000", id="userinfo-not-in-host"),
    pytest.param(
        {"HTTP_HOST": "a:b@x.example"},
        "http.url",
        "http://REDACTED:REDACTED@x.example:8000/app/users/42?a=1&sig=REDACTED",
        id="userinfo-redacted-in-url",
    ),
    pytest.param({"HTTP_HOST": "x.example:81"}, "net.host.port", 8000, id="host-port-is-not-the-local-port"),
    pytest.param({"SERVER_PORT": "x"}, "net.host.port", 8080, id="bad-server-port-falls-back-to-host"),
    pytest.param({"REQUEST_METHOD": "get"}, "http.method", "_OTHER", id="other-method"),
    pytest.param({"HTTP_USER_AGENT": "Googlebot"}, "http.user_agent", "Googlebot", id="user-agent"),
    pytest.param({"SERVER_PROTOCOL": "HTTP/1.0"}, "http.flavor", "1.0", id="flavor"),
    pytest.param({"REMOTE_PORT": None}, "net.peer.port", None, id="no-peer-port"),
    pytest.param({"SERVER_NAME": ""}, "http.server_name", None, id="no-server-name"),
]


@pytest.mark.parametrize(("extra", "key", "expected"), OLD_CASES)
def test_old_mode_names(extra: dict[str, object], key: str, expected: AttributeValue | None) -> None:
    old = attributes_of(FULL | extra, OLD)
    assert old.get(key) == expected
    assert not any(name.startswith(("url.", "server.", "client.", "network.")) for name in old)
    assert attributes_of(FULL | extra, DUP).get(key) == expected


# (extra environ, the old-mode http.url) with forwarded headers trusted: the userinfo shown is the one of
# the Host value the address came from.
FORWARDED_URL_CASES = [
    pytest.param(
        {"HTTP_X_FORWARDED_HOST": "u:p@proxy.example"},
        "http://REDACTED:REDACTED@proxy.example/app/users/42?a=1&sig=REDACTED",
        id="proxy-userinfo",
    ),
    pytest.param(
        {"HTTP_X_FORWARDED_HOST": "proxy.example", "HTTP_HOST": "u:p@example.com"},
        "http://proxy.example/app/users/42?a=1&sig=REDACTED",
        id="host-userinfo-unused",
    ),
    pytest.param(
        {"HTTP_X_FORWARDED_HOST": "[bad", "HTTP_HOST": "u:p@example.com"},
        "http://REDACTED:REDACTED@example.com:8000/app/users/42?a=1&sig=REDACTED",
        id="invalid-proxy-host",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), FORWARDED_URL_CASES)
def test_old_mode_url_userinfo_behind_a_proxy(extra: dict[str, object], expected: str) -> None:
    config = Config(semconv="old", forwarded_headers=True)
    assert attributes_of(FULL | extra, config)["http.url"] == expected


@pytest.mark.parametrize("config", [STABLE, OLD, DUP], ids=["stable", "old", "dup"])
def test_span_name_never_the_path_in_any_mode(config: Config) -> None:
    record = request_record(BASE | {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders/123"}, config)
    assert (record.span_name, record.method) == ("POST", "POST")


# --- request header capture and sanitising ---

HEADERS_ENVIRON: dict[str, object] = BASE | {
    "HTTP_X_CUSTOM": "v1,v2",
    "HTTP_X_OTHER": b"b\xe9",
    "HTTP_X_NUMBER": 7,
    "HTTP_AUTHORIZATION": "Bearer t0ken",
    "HTTP_X_API_KEY": "k3y",
    "HTTP_COOKIE": "c=1",
    "CONTENT_TYPE": "text/plain",
    "CONTENT_LENGTH": "12",
}

REQUEST_HEADER_CASES = [
    pytest.param(("x-custom",), "stable", {"x-custom": ("v1,v2",)}, id="literal"),
    pytest.param(("X-Custom",), "stable", {"x-custom": ("v1,v2",)}, id="literal-any-case"),
    pytest.param(
        ("x-.*",),
        "stable",
        {"x-custom": ("v1,v2",), "x-other": ("b\xe9",), "x-api-key": ("[REDACTED]",)},
        id="regex",
    ),
    pytest.param(("X-CUS.*",), "stable", {"x-custom": ("v1,v2",)}, id="regex-case-insensitive"),
    pytest.param(("x-cust",), "stable", {}, id="literal-full-match"),
    pytest.param(("x-cu.",), "stable", {}, id="regex-full-match"),
    pytest.param(("x-number",), "stable", {}, id="non-text-value-skipped"),
    pytest.param(("x-missing",), "stable", {}, id="absent"),
    pytest.param(
        ("content-type", "content-length"),
        "stable",
        {"content-type": ("text/plain",), "content-length": ("12",)},
        id="cgi-headers",
    ),
    pytest.param(
        ("content-.*",),
        "stable",
        {"content-type": ("text/plain",), "content-length": ("12",)},
        id="cgi-headers-regex",
    ),
    pytest.param(
        ("authorization", "cookie"),
        "stable",
        {"authorization": ("[REDACTED]",), "cookie": ("[REDACTED]",)},
        id="sanitized",
    ),
    pytest.param(("x-api-key",), "stable", {"x-api-key": ("[REDACTED]",)}, id="sanitized-x-api-key"),
    pytest.param(("X-API-KEY",), "stable", {"x-api-key": ("[REDACTED]",)}, id="sanitized-any-case"),
    pytest.param(
        ("x_api_key",), "stable", {"x-api-key": ("[REDACTED]",)}, id="sanitized-underscore-spelling"
    ),
    pytest.param(
        ("Content_Type",), "stable", {"content-type": ("text/plain",)}, id="cgi-underscore-spelling"
    ),
    pytest.param(("x-custom",), "old", {"x_custom": ("v1,v2",)}, id="old-underscores"),
    pytest.param(
        ("x-.*",),
        "old",
        {"x_custom": ("v1,v2",), "x_other": ("b\xe9",), "x_api_key": ("[REDACTED]",)},
        id="old-regex",
    ),
    pytest.param(("x-custom",), "dup", {"x-custom": ("v1,v2",)}, id="dup-stable-form"),
]


@pytest.mark.parametrize(("capture", "mode", "expected"), REQUEST_HEADER_CASES)
def test_request_header_capture(
    capture: tuple[str, ...], mode: SemconvMode, expected: dict[str, tuple[str, ...]]
) -> None:
    config = Config(semconv=mode, capture_request_headers=capture)
    found = {
        key.removeprefix("http.request.header."): value
        for key, value in attributes_of(HEADERS_ENVIRON, config).items()
        if key.startswith("http.request.header.")
    }
    assert found == expected


def test_custom_sanitize_patterns_are_searched() -> None:
    config = Config(capture_request_headers=("x-.*",), sanitize_headers=("SECRET",))
    environ = BASE | {"HTTP_X_MY_SECRET_TOKEN": "t", "HTTP_X_API_KEY": "k", "HTTP_X_PLAIN": "p"}
    assert {key: value for key, value in attributes_of(environ, config).items() if "header" in key} == {
        "http.request.header.x-my-secret-token": ("[REDACTED]",),
        "http.request.header.x-api-key": ("k",),
        "http.request.header.x-plain": ("p",),
    }


# --- response_record ---

RESPONSE_CASES = [
    pytest.param("200 OK", 200, {"http.response.status_code": 200}, False, id="200"),
    pytest.param("204", 204, {"http.response.status_code": 204}, False, id="code-only"),
    pytest.param("404 Not Found", 404, {"http.response.status_code": 404}, False, id="4xx-no-error"),
    pytest.param("500 Boom", 500, {"http.response.status_code": 500, "error.type": "500"}, True, id="500"),
    pytest.param("503", 503, {"http.response.status_code": 503, "error.type": "503"}, True, id="503"),
    pytest.param("599 X", 599, {"http.response.status_code": 599, "error.type": "599"}, True, id="599"),
    pytest.param("", None, {"error.type": "_OTHER"}, True, id="empty"),
    pytest.param("600 X", None, {"error.type": "_OTHER"}, True, id="600"),
    pytest.param("OK", None, {"error.type": "_OTHER"}, True, id="no-code"),
    pytest.param("200OK", None, {"error.type": "_OTHER"}, True, id="no-space"),
]


@pytest.mark.parametrize(("status", "code", "attributes", "error"), RESPONSE_CASES)
def test_response_record(
    status: str, code: int | None, attributes: dict[str, AttributeValue], error: bool
) -> None:
    assert response_record(status, [("Content-Type", "text/plain")], STABLE) == ResponseRecord(
        code, attributes, error
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param("200 OK", {"http.status_code": 200}, id="200"),
        pytest.param("503 Busy", {"http.status_code": 503}, id="503"),
        pytest.param("junk", {}, id="invalid"),
    ],
)
def test_response_record_old(status: str, expected: dict[str, AttributeValue]) -> None:
    assert dict(response_record(status, [], OLD).attributes) == expected
    assert dict(response_record(status, [], DUP).attributes) == (
        dict(response_record(status, [], STABLE).attributes) | expected
    )


# The app hands start_response whatever it likes: WSGI apps are untyped, so junk arrives as Any.
JUNK_HEADERS: list[Any] = [
    ("X-A", "1"),
    ("x-a", "2"),
    ("Set-Cookie", "s=1"),
    ("Content-Length", " 12 "),
    None,
    ("x-b",),
    ("x-b", 1),
    (1, "x"),
    "xy",
    ("x-c", "3", "4"),
    b"x-d: 5",
]

RESPONSE_HEADER_CASES = [
    pytest.param(("x-a",), STABLE, {"x-a": ("1", "2")}, id="per-occurrence"),
    pytest.param(("X-A",), STABLE, {"x-a": ("1", "2")}, id="case-insensitive"),
    pytest.param(("x-.*",), STABLE, {"x-a": ("1", "2")}, id="regex-junk-skipped"),
    pytest.param(("set-cookie",), STABLE, {"set-cookie": ("[REDACTED]",)}, id="sanitized"),
    pytest.param(("content-length",), STABLE, {"content-length": (" 12 ",)}, id="value-kept"),
    pytest.param(("x",), STABLE, {}, id="full-match"),
    pytest.param(("x-a",), OLD, {"x_a": ("1,2",)}, id="old-joined"),
    pytest.param(("set-cookie",), OLD, {"set_cookie": ("[REDACTED]",)}, id="old-sanitized"),
    pytest.param(("x-a",), DUP, {"x-a": ("1", "2")}, id="dup-stable-form"),
]


@pytest.mark.parametrize(("capture", "base", "expected"), RESPONSE_HEADER_CASES)
def test_response_header_capture(
    capture: tuple[str, ...], base: Config, expected: dict[str, tuple[str, ...]]
) -> None:
    config = Config(semconv=base.semconv, capture_response_headers=capture)
    attributes = response_record("200 OK", JUNK_HEADERS, config).attributes
    found = {
        key.removeprefix("http.response.header."): value
        for key, value in attributes.items()
        if key.startswith("http.response.header.")
    }
    assert found == expected


@pytest.mark.parametrize("config", [STABLE, OLD, DUP], ids=["stable", "old", "dup"])
def test_response_header_attributes_capture_nothing_unless_asked(config: Config) -> None:
    # Called on its own (it is public), not only through response_record, which skips it.
    assert response_header_attributes(JUNK_HEADERS, config) == {}
    asked = Config(semconv=config.semconv, capture_response_headers=("x-a",))
    assert response_header_attributes(JUNK_HEADERS, asked) != {}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param([("Content-Length", "12")], 12, id="present"),
        pytest.param([("content-length", " 0 ")], 0, id="zero-stripped"),
        pytest.param([("Content-Length", "-1")], None, id="negative"),
        pytest.param([("Content-Length", "1e3")], None, id="not-decimal"),
        pytest.param([("Content-Length", "")], None, id="empty"),
        pytest.param([], None, id="absent"),
        pytest.param(JUNK_HEADERS, 12, id="junk-around"),
    ],
)
def test_content_length(headers: list[Any], expected: int | None) -> None:
    on = Config(body_size_metrics=True)
    assert response_record("200 OK", headers, on).content_length == expected
    assert response_record("200 OK", headers, STABLE).content_length is None


def test_response_record_is_frozen() -> None:
    record = response_record("200 OK", [], STABLE)
    for field in fields(record):
        with pytest.raises(FrozenInstanceError):
            setattr(record, field.name, None)


# --- max_attribute_length and excluded URLs ---


@pytest.mark.parametrize("mode", MODES)
def test_max_attribute_length_cuts_every_string(mode: SemconvMode) -> None:
    config = Config(
        semconv=mode,
        max_attribute_length=12,
        capture_request_headers=("x-big",),
        capture_response_headers=("x-big",),
        capture_all_methods=True,
    )
    long = "x" * 100
    environ = BASE | {
        "REQUEST_METHOD": "M" * 100,
        "wsgi.url_scheme": "s" * 100,
        "HTTP_HOST": "h" * 100,
        "PATH_INFO": "/" + long,
        "QUERY_STRING": long,
        "REMOTE_ADDR": long,
        "HTTP_USER_AGENT": long,
        "SERVER_PROTOCOL": "HTTP/" + "1" * 100,
        "SERVER_NAME": long,
        "RAW_URI": "/" + long,
        "HTTP_X_BIG": long,
    }
    request = request_record(environ, config).attributes
    response = response_record("200 OK", [("x-big", long), ("x-big", long)], config).attributes
    strings = [value for value in {**request, **response}.values() if isinstance(value, str)] + [
        item for value in {**request, **response}.values() if isinstance(value, tuple) for item in value
    ]
    assert len(strings) > 10
    assert max(len(value) for value in strings) == 12


EXCLUSION_CASES = [
    pytest.param(("/health",), {"PATH_INFO": "/health"}, True, id="path"),
    pytest.param(("/health$",), {"PATH_INFO": "/healthz"}, False, id="anchored"),
    pytest.param(("^https://example.com:8080/",), {"wsgi.url_scheme": "https"}, True, id="scheme-host-port"),
    pytest.param(("^http://example.com/",), {"HTTP_HOST": "example.com:80"}, True, id="default-port-omitted"),
    pytest.param(
        (r"^http://example\.com:8080/",), {"HTTP_HOST": "user@example.com:8080"}, True, id="userinfo-dropped"
    ),
    pytest.param(("token=",), {"QUERY_STRING": "token=1"}, False, id="query-not-searched"),
    pytest.param(("/caf%C3%A9",), {"PATH_INFO": "/caf\xc3\xa9"}, True, id="encoded-path"),
    pytest.param(("/app/x",), {"SCRIPT_NAME": "/app", "PATH_INFO": "/x"}, True, id="script-name"),
    pytest.param(("/other", "/ping"), {"PATH_INFO": "/ping"}, True, id="any-of-several"),
    pytest.param(("/health",), {"PATH_INFO": "/users"}, False, id="no-match"),
]


@pytest.mark.parametrize(("excluded", "extra", "is_excluded"), EXCLUSION_CASES)
def test_excluded_urls(excluded: tuple[str, ...], extra: dict[str, object], is_excluded: bool) -> None:
    environ = BASE | {"HTTP_HOST": "example.com:8080"} | extra
    for mode in MODES:
        record = request_record(environ, Config(semconv=mode, excluded_urls=excluded))
        assert (record == EXCLUDED) is is_excluded
        assert record.traced is not is_excluded
        if is_excluded:
            assert dict(record.attributes) == {}


# --- Hypothesis properties ---

ENVIRON_KEYS = [
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "HTTP_HOST", "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_HOST", "HTTP_USER_AGENT",
    "wsgi.url_scheme", "RAW_URI", "REQUEST_URI", "HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST", "CONTENT_TYPE", "CONTENT_LENGTH",
    "HTTP_X_CUSTOM", "HTTP_AUTHORIZATION", "HTTP_COOKIE", "HTTP_", "HTTP_X_A",
]  # fmt: skip
JUNK_TEXT = [
    "", " ", "[::1", "[::1]:0", "host:abc", "/tmp/x.sock", "user:pw@h:80", "GET", "get", "HTTP/1.", "HTTP/2",
    'for="[::1";proto=1x;host=[', "for=_h:99999, for=1.2.3.4", "sig=1&a", "%", "%73ig=x&&=", "caf\xc3\xa9",
    "0", "65536", "-1", "\ud800", "\x00", "https", "AlwaysOn Googlebot", "unknown", "[v1.x]:8",
]  # fmt: skip

TEXT = st.text(max_size=40) | st.sampled_from(JUNK_TEXT)


def unchanged(value: object, before: object) -> bool:
    """Equal to its deep copy taken before the call; repr() also equates NaN with NaN."""
    return value == before or repr(value) == repr(before)


VALUES: st.SearchStrategy[object] = st.one_of(
    TEXT,
    st.binary(max_size=20),
    st.builds(bytearray, st.binary(max_size=8)),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=4), max_size=3),
)
ENVIRONS = st.dictionaries(st.sampled_from(ENVIRON_KEYS) | st.text(max_size=12), VALUES, max_size=14)

LIMIT = 12  # small enough to bite, long enough for "[REDACTED]"
CONFIGS = [
    Config(),
    Config(semconv="old", max_attribute_length=LIMIT),
    Config(semconv="dup", forwarded_headers=True, max_attribute_length=LIMIT),
    Config(capture_request_headers=("x-custom", "authorization", "content-type"), max_attribute_length=LIMIT),
    Config(
        semconv="dup",
        capture_request_headers=(".*",),
        capture_response_headers=(".*",),
        capture_all_methods=True,
        body_size_metrics=True,
        max_attribute_length=LIMIT,
    ),
    Config(
        semconv="old",
        capture_request_headers=("x-.*",),
        capture_response_headers=("x-.*", "set-cookie"),
        forwarded_headers=True,
        max_attribute_length=LIMIT,
    ),
    Config(excluded_urls=("/health", "^https://"), capture_all_methods=True, max_attribute_length=LIMIT),
]
CONFIG_STRATEGY = st.sampled_from(CONFIGS)
PORT_KEYS = frozenset({"server.port", "client.port", "network.peer.port", "net.host.port", "net.peer.port"})


def assert_valid_attributes(attributes: Mapping[str, object], limit: int) -> None:
    for key, value in attributes.items():
        assert key
        if isinstance(value, tuple):
            assert all(isinstance(item, str) and len(item) <= limit for item in value), key
        else:
            assert isinstance(value, str | bool | int | float), key
            assert not isinstance(value, str) or len(value) <= limit, key
        if key in PORT_KEYS:
            assert isinstance(value, int) and 0 < value < 65536


def assert_frozen(record: RequestRecord | ResponseRecord) -> None:
    for field in fields(record):
        with pytest.raises(FrozenInstanceError):
            setattr(record, field.name, None)


@given(environ=ENVIRONS, config=CONFIG_STRATEGY)
def test_request_record_is_total_valid_frozen_and_pure(environ: dict[str, object], config: Config) -> None:
    before = copy.deepcopy(environ)
    record = request_record(environ, config)
    assert unchanged(environ, before)
    assert request_record(environ, config) == record
    assert_valid_attributes(record.attributes, config.max_attribute_length)
    assert record.span_name == (span_name(record.method) if record.traced else "")
    assert_frozen(record)


@given(environ=ENVIRONS, config=CONFIG_STRATEGY)
def test_request_record_on_a_realistic_base(environ: dict[str, object], config: Config) -> None:
    merged = FULL | environ
    before = copy.deepcopy(merged)
    record = request_record(merged, config)
    assert unchanged(merged, before)
    assert_valid_attributes(record.attributes, config.max_attribute_length)
    if not {"QUERY_STRING", "RAW_URI", "REQUEST_URI"} & environ.keys():
        assert not any("s3cr3t" in str(value) for value in record.attributes.values())


STATUS_TEXT = st.text(max_size=12) | st.from_regex(r"[0-9]{3}( [ -~]{0,8})?", fullmatch=True)
HEADER_ITEMS: st.SearchStrategy[object] = st.one_of(
    st.tuples(st.sampled_from(["X-A", "x-a", "Content-Length", "Set-Cookie"]) | st.text(max_size=8), TEXT),
    st.tuples(VALUES, VALUES),
    st.tuples(st.text(max_size=4), st.text(max_size=4), st.text(max_size=4)),
    VALUES,
)
HEADER_LISTS: st.SearchStrategy[object] = (
    st.lists(HEADER_ITEMS, max_size=8) | st.lists(HEADER_ITEMS, max_size=4).map(tuple) | VALUES
)


@given(status=STATUS_TEXT, headers=HEADER_LISTS, config=CONFIG_STRATEGY)
@example(status="", headers=float("nan"), config=Config())  # NaN is not equal to its own copy
def test_response_record_is_total_valid_frozen_and_pure(status: str, headers: Any, config: Config) -> None:
    before = copy.deepcopy(headers)
    record = response_record(status, headers, config)
    assert unchanged(headers, before)
    assert response_record(status, headers, config) == record
    assert record.status_code == parse_status(status)
    assert record.error is (record.status_code is None or record.status_code >= 500)
    assert_valid_attributes(record.attributes, config.max_attribute_length)
    assert_frozen(record)


@given(status=VALUES, config=CONFIG_STRATEGY)
def test_response_record_survives_a_non_text_status(status: Any, config: Config) -> None:
    record = response_record(status, [], config)
    assert record.error is (record.status_code is None or record.status_code >= 500)


# An independent statement of the rule: 3 ASCII digits 100-599, then the end or a space.
VALID_STATUS = re.compile(r"([1-5][0-9]{2})(?: .*)?", re.ASCII | re.DOTALL)


@given(status=STATUS_TEXT)
def test_parse_status_is_total_and_follows_the_rule(status: str) -> None:
    match = VALID_STATUS.fullmatch(status)
    assert parse_status(status) == (int(match.group(1)) if match else None)


@given(raw=VALUES)
def test_parse_port_is_total(raw: object) -> None:
    port = parse_port(raw)
    assert port is None or (type(port) is int and 0 < port < 65536)


@given(
    host=TEXT
    | st.from_regex(r"(\w+@)?(\[[0-9a-f:]{2,10}\]|[a-zA-Z0-9.-]{1,10})(:[0-9]{0,6})?", fullmatch=True)
)
def test_split_host_round_trips(host: str) -> None:
    address, port = split_host(host)
    assert port is None or 0 < port < 65536
    if address is not None:
        netloc = f"[{address}]" if ":" in address else address
        again = f"{netloc}:{port}" if port is not None else netloc
        assert split_host(again) == (address, port)


@given(method=TEXT | st.sampled_from(sorted(KNOWN_METHODS)), capture_all=st.booleans())
def test_normalize_method_is_idempotent(method: str, capture_all: bool) -> None:
    once = normalize_method(method, capture_all=capture_all)
    assert once in (method, "_OTHER")
    assert normalize_method(once, capture_all=capture_all) == once


PCHARS = string.ascii_letters + string.digits + "-._~" + "/:@!$&'()*+,;="


def raw_bytes(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


@given(script_name=TEXT, path_info=TEXT)
def test_url_path_encodes_the_raw_bytes_losslessly(script_name: str, path_info: str) -> None:
    path = url_path(script_name, path_info)
    assert path.isascii()
    assert re.fullmatch(r"(?:[A-Za-z0-9\-._~/:@!$&'()*+,;=]|%[0-9A-F]{2})+", path)
    assert unquote_to_bytes(path) == (raw_bytes(script_name + path_info) or b"/")


@given(path=st.text(alphabet=PCHARS, max_size=30))
def test_url_path_keeps_an_already_encoded_path(path: str) -> None:
    assert url_path("", "/" + path) == "/" + path


@given(query=TEXT, redact=st.sampled_from([DEFAULT_REDACT, frozenset(), frozenset({"a", "q", "é", "clé"})]))
def test_url_query_is_idempotent(query: str, redact: frozenset[str]) -> None:
    once = url_query(query, redact)
    assert once.isascii()
    assert url_query(once, redact) == once


@given(query=st.text(alphabet=st.characters(codec="ascii"), max_size=40))
def test_url_query_keeps_ascii_byte_for_byte_without_redaction(query: str) -> None:
    assert url_query(query, frozenset()) == query


QUERY_KEY = st.sampled_from(["sig", "Sig", "Signature", "a", "", "X-Goog-Signature"]) | st.text(
    alphabet=string.ascii_letters + "-_.", max_size=6
)
QUERY_VALUE = st.text(alphabet=string.ascii_letters + string.digits + "=%+-", max_size=6)


@given(pairs=st.lists(st.tuples(QUERY_KEY, st.booleans(), QUERY_VALUE), max_size=6))
def test_url_query_redacts_exactly_the_listed_keys(pairs: list[tuple[str, bool, str]]) -> None:
    query = "&".join(f"{key}={value}" if equals else key for key, equals, value in pairs)
    expected = "&".join(
        (f"{key}=REDACTED" if key in DEFAULT_REDACT else f"{key}={value}") if equals else key
        for key, equals, value in pairs
    )
    assert url_query(query) == expected


@given(server_protocol=TEXT | st.from_regex(r"HTTP/[0-9.]{0,4}", fullmatch=True))
def test_protocol_version_is_a_version_or_none(server_protocol: str) -> None:
    version = protocol_version(server_protocol)
    if version is not None:
        assert re.fullmatch(r"[0-9]+(\.[0-9]+)?", version, re.ASCII)
        assert protocol_version("HTTP/" + version) == version


@given(user_agent=TEXT)
def test_synthetic_type_is_total(user_agent: str) -> None:
    assert synthetic_type(user_agent) in (None, "bot", "test")


# RFC 9110 token characters, without "_": CGI turns both "-" and "_" into "_".
HEADER_NAMES = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^`|~-]+", fullmatch=True)


@given(name=HEADER_NAMES)
def test_header_name_round_trips_through_the_environ_key(name: str) -> None:
    assert environ_header_name(header_environ_key(name)) == name.lower()


@given(key=st.from_regex(r"HTTP_[A-Z0-9_]+", fullmatch=True))
def test_environ_key_round_trips_through_the_header_name(key: str) -> None:
    name = environ_header_name(key)
    assert name is not None
    if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"):  # CGI moves those two out of HTTP_
        assert header_environ_key(name) == key
