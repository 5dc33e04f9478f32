"""Our `Final` attribute and metric names equal those of the `opentelemetry.semconv` package.

The package is a development dependency only (a 0.x beta tied to the SDK release), so this is where
a renamed or mistyped convention name shows up.
"""

from __future__ import annotations

import pytest
from opentelemetry.semconv._incubating.attributes import http_attributes as old_http
from opentelemetry.semconv._incubating.attributes import net_attributes as old_net
from opentelemetry.semconv._incubating.attributes import user_agent_attributes as incubating_user_agent
from opentelemetry.semconv._incubating.metrics import http_metrics as incubating_http_metrics
from opentelemetry.semconv.attributes import (
    client_attributes,
    error_attributes,
    exception_attributes,
    http_attributes,
    network_attributes,
    server_attributes,
    url_attributes,
    user_agent_attributes,
)
from opentelemetry.semconv.metrics import MetricInstruments, http_metrics
from opentelemetry.semconv.schemas import Schemas

from otel_wsgi import semconv
from otel_wsgi.types import SCHEMA_URL

# (our constant's name, our value, the semantic-conventions package's value)
NAME_CASES = [
    # Stable HTTP attributes.
    ("HTTP_REQUEST_METHOD", semconv.HTTP_REQUEST_METHOD, http_attributes.HTTP_REQUEST_METHOD),
    (
        "HTTP_REQUEST_METHOD_ORIGINAL",
        semconv.HTTP_REQUEST_METHOD_ORIGINAL,
        http_attributes.HTTP_REQUEST_METHOD_ORIGINAL,
    ),
    (
        "HTTP_RESPONSE_STATUS_CODE",
        semconv.HTTP_RESPONSE_STATUS_CODE,
        http_attributes.HTTP_RESPONSE_STATUS_CODE,
    ),
    ("HTTP_ROUTE", semconv.HTTP_ROUTE, http_attributes.HTTP_ROUTE),
    ("URL_SCHEME", semconv.URL_SCHEME, url_attributes.URL_SCHEME),
    ("URL_PATH", semconv.URL_PATH, url_attributes.URL_PATH),
    ("URL_QUERY", semconv.URL_QUERY, url_attributes.URL_QUERY),
    ("SERVER_ADDRESS", semconv.SERVER_ADDRESS, server_attributes.SERVER_ADDRESS),
    ("SERVER_PORT", semconv.SERVER_PORT, server_attributes.SERVER_PORT),
    ("EXCEPTION_TYPE", semconv.EXCEPTION_TYPE, exception_attributes.EXCEPTION_TYPE),
    ("EXCEPTION_MESSAGE", semconv.EXCEPTION_MESSAGE, exception_attributes.EXCEPTION_MESSAGE),
    ("EXCEPTION_STACKTRACE", semconv.EXCEPTION_STACKTRACE, exception_attributes.EXCEPTION_STACKTRACE),
    ("EXCEPTION_ESCAPED", semconv.EXCEPTION_ESCAPED, exception_attributes.EXCEPTION_ESCAPED),
    ("CLIENT_ADDRESS", semconv.CLIENT_ADDRESS, client_attributes.CLIENT_ADDRESS),
    ("CLIENT_PORT", semconv.CLIENT_PORT, client_attributes.CLIENT_PORT),
    ("NETWORK_PEER_ADDRESS", semconv.NETWORK_PEER_ADDRESS, network_attributes.NETWORK_PEER_ADDRESS),
    ("NETWORK_PEER_PORT", semconv.NETWORK_PEER_PORT, network_attributes.NETWORK_PEER_PORT),
    (
        "NETWORK_PROTOCOL_VERSION",
        semconv.NETWORK_PROTOCOL_VERSION,
        network_attributes.NETWORK_PROTOCOL_VERSION,
    ),
    ("USER_AGENT_ORIGINAL", semconv.USER_AGENT_ORIGINAL, user_agent_attributes.USER_AGENT_ORIGINAL),
    # Still incubating in the conventions, so only in the `_incubating` module.
    (
        "USER_AGENT_SYNTHETIC_TYPE",
        semconv.USER_AGENT_SYNTHETIC_TYPE,
        incubating_user_agent.USER_AGENT_SYNTHETIC_TYPE,
    ),
    ("ERROR_TYPE", semconv.ERROR_TYPE, error_attributes.ERROR_TYPE),
    # Ours are prefixes (`http.request.header.<name>`); the package gives the template without the dot.
    ("HTTP_REQUEST_HEADER", semconv.HTTP_REQUEST_HEADER, http_attributes.HTTP_REQUEST_HEADER_TEMPLATE + "."),
    (
        "HTTP_RESPONSE_HEADER",
        semconv.HTTP_RESPONSE_HEADER,
        http_attributes.HTTP_RESPONSE_HEADER_TEMPLATE + ".",
    ),
    # The pre-1.21 names ("old" mode): deprecated, still defined in the `_incubating` modules.
    ("OLD_HTTP_METHOD", semconv.OLD_HTTP_METHOD, old_http.HTTP_METHOD),
    ("OLD_HTTP_SCHEME", semconv.OLD_HTTP_SCHEME, old_http.HTTP_SCHEME),
    ("OLD_HTTP_HOST", semconv.OLD_HTTP_HOST, old_http.HTTP_HOST),
    ("OLD_NET_HOST_NAME", semconv.OLD_NET_HOST_NAME, old_net.NET_HOST_NAME),
    ("OLD_NET_HOST_PORT", semconv.OLD_NET_HOST_PORT, old_net.NET_HOST_PORT),
    ("OLD_HTTP_TARGET", semconv.OLD_HTTP_TARGET, old_http.HTTP_TARGET),
    ("OLD_HTTP_URL", semconv.OLD_HTTP_URL, old_http.HTTP_URL),
    ("OLD_HTTP_STATUS_CODE", semconv.OLD_HTTP_STATUS_CODE, old_http.HTTP_STATUS_CODE),
    ("OLD_HTTP_FLAVOR", semconv.OLD_HTTP_FLAVOR, old_http.HTTP_FLAVOR),
    ("OLD_HTTP_USER_AGENT", semconv.OLD_HTTP_USER_AGENT, old_http.HTTP_USER_AGENT),
    ("OLD_NET_PEER_IP", semconv.OLD_NET_PEER_IP, old_net.NET_PEER_IP),
    ("OLD_NET_PEER_PORT", semconv.OLD_NET_PEER_PORT, old_net.NET_PEER_PORT),
    ("OLD_HTTP_SERVER_NAME", semconv.OLD_HTTP_SERVER_NAME, old_http.HTTP_SERVER_NAME),
    # Metric instruments.
    (
        "HTTP_SERVER_REQUEST_DURATION",
        semconv.HTTP_SERVER_REQUEST_DURATION,
        http_metrics.HTTP_SERVER_REQUEST_DURATION,
    ),
    (
        "HTTP_SERVER_ACTIVE_REQUESTS",
        semconv.HTTP_SERVER_ACTIVE_REQUESTS,
        incubating_http_metrics.HTTP_SERVER_ACTIVE_REQUESTS,
    ),
    (
        "HTTP_SERVER_REQUEST_BODY_SIZE",
        semconv.HTTP_SERVER_REQUEST_BODY_SIZE,
        incubating_http_metrics.HTTP_SERVER_REQUEST_BODY_SIZE,
    ),
    (
        "HTTP_SERVER_RESPONSE_BODY_SIZE",
        semconv.HTTP_SERVER_RESPONSE_BODY_SIZE,
        incubating_http_metrics.HTTP_SERVER_RESPONSE_BODY_SIZE,
    ),
    # The old duration histogram lives only on the deprecated 1.21 `MetricInstruments` class.
    ("OLD_HTTP_SERVER_DURATION", semconv.OLD_HTTP_SERVER_DURATION, MetricInstruments.HTTP_SERVER_DURATION),
]


@pytest.mark.parametrize(
    ("ours", "theirs"), [pytest.param(ours, theirs, id=name) for name, ours, theirs in NAME_CASES]
)
def test_name_matches_the_semconv_package(ours: str, theirs: str) -> None:
    assert ours == theirs


def test_table_lists_the_right_constant() -> None:
    # Each row's value is the module attribute its label names (no copy-paste slip in the table).
    assert [getattr(semconv, name) for name, _, _ in NAME_CASES] == [ours for _, ours, _ in NAME_CASES]


def test_every_constant_is_checked() -> None:
    constants = {name for name, value in vars(semconv).items() if name.isupper() and isinstance(value, str)}
    assert constants == {name for name, _, _ in NAME_CASES}


def test_schema_url_is_a_published_schema() -> None:
    assert SCHEMA_URL in {schema.value for schema in Schemas}
