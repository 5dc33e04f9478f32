"""Value parsers on plain strings: the proxy-header, scheme, host and request-target pieces the pure
layer hands them after narrowing the environ. Expected values come from RFC 7239, RFC 3986 and
RFC 9110, never from running the code under test."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_wsgi.values import forwarded_node, forwarded_value, netloc, parse_scheme, request_target

SCHEME_CASES = [
    pytest.param("https", "https", id="plain"),
    pytest.param("HTTPS", "https", id="lowercased"),
    pytest.param("coap+tcp", "coap+tcp", id="plus"),
    pytest.param("", None, id="empty"),
    pytest.param("1http", None, id="leading-digit"),
    pytest.param("ht tp", None, id="space"),
]


@pytest.mark.parametrize(("raw", "expected"), SCHEME_CASES)
def test_parse_scheme(raw: str, expected: str | None) -> None:
    assert parse_scheme(raw) == expected


FORWARDED_CASES = [
    pytest.param('for="[2001:db8::1]:4711";proto=https', "", "proto", "https", id="forwarded-param"),
    pytest.param("For=1.2.3.4, for=5.6.7.8", "", "for", "1.2.3.4", id="first-element-any-case"),
    pytest.param("proto=https", "9.9.9.9, 8.8.8.8", "for", "9.9.9.9", id="legacy-first-entry"),
    pytest.param("for=1.2.3.4", "9.9.9.9", "for", "1.2.3.4", id="forwarded-wins"),
    pytest.param("", "", "host", "", id="neither"),
]


@pytest.mark.parametrize(("forwarded", "legacy", "parameter", "expected"), FORWARDED_CASES)
def test_forwarded_value(forwarded: str, legacy: str, parameter: str, expected: str) -> None:
    assert forwarded_value(forwarded, legacy, parameter) == expected


NODE_CASES = [
    pytest.param("1.2.3.4", ("1.2.3.4", None), id="ipv4"),
    pytest.param("1.2.3.4:8080", ("1.2.3.4", 8080), id="ipv4-port"),
    pytest.param("[2001:db8::1]:4711", ("2001:db8::1", 4711), id="ipv6-port"),
    pytest.param("unknown", ("unknown", None), id="obfuscated"),
    pytest.param(":80", (None, 80), id="no-address"),
    pytest.param("2001:db8::1", ("2001:db8::1", None), id="bare-ipv6"),
]


@pytest.mark.parametrize(("origin", "expected"), NODE_CASES)
def test_forwarded_node(origin: str, expected: tuple[str | None, int | None]) -> None:
    assert forwarded_node(origin) == expected


NETLOC_CASES = [
    pytest.param("example.com", 443, "https", "example.com", id="default-port-dropped"),
    pytest.param("example.com", 8443, "https", "example.com:8443", id="other-port"),
    pytest.param("::1", 8080, "http", "[::1]:8080", id="ipv6-bracketed"),
    pytest.param("example.com", None, "http", "example.com", id="no-port"),
    pytest.param(None, 80, "http", None, id="no-address"),
]


@pytest.mark.parametrize(("address", "port", "scheme", "expected"), NETLOC_CASES)
def test_netloc(address: str | None, port: int | None, scheme: str, expected: str | None) -> None:
    assert netloc(address, port, scheme) == expected


TARGET_CASES = [
    pytest.param("/a?b=1", "/a?b=1", id="kept"),
    pytest.param("/a?sig=secret&b=1", "/a?sig=REDACTED&b=1", id="redacted"),
    pytest.param("http://user:pw@host/a", "http://host/a", id="userinfo-dropped"),
    pytest.param("/caf\xc3\xa9", "/caf%C3%A9", id="non-ascii-encoded"),
    pytest.param("/a?", "/a?", id="empty-query"),
]


@pytest.mark.parametrize(("target", "expected"), TARGET_CASES)
def test_request_target(target: str, expected: str) -> None:
    assert request_target(target, frozenset({"sig"})) == expected


@given(st.text(max_size=40), st.text(max_size=40), st.sampled_from(["for", "proto", "host"]))
def test_forwarded_value_is_total_and_bounded_by_its_input(
    forwarded: str, legacy: str, parameter: str
) -> None:
    value = forwarded_value(forwarded, legacy, parameter)
    assert len(value) <= max(len(forwarded), len(legacy))
