"""Semantic-convention attribute and metric names, as `Final` strings.

They mirror `opentelemetry.semconv` (a 0.x beta tied to the SDK release, so a development dependency
only); `tests/test_semconv.py` checks each stable name against that package.
"""

from typing import Final

# Stable HTTP semantic conventions.
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_ROUTE: Final = "http.route"
URL_SCHEME: Final = "url.scheme"
URL_PATH: Final = "url.path"
URL_QUERY: Final = "url.query"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
# The exception event (the names the SDK's `record_exception` uses).
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
EXCEPTION_ESCAPED: Final = "exception.escaped"
CLIENT_ADDRESS: Final = "client.address"
CLIENT_PORT: Final = "client.port"
NETWORK_PEER_ADDRESS: Final = "network.peer.address"
NETWORK_PEER_PORT: Final = "network.peer.port"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"
USER_AGENT_ORIGINAL: Final = "user_agent.original"
USER_AGENT_SYNTHETIC_TYPE: Final = "user_agent.synthetic.type"
ERROR_TYPE: Final = "error.type"
HTTP_REQUEST_HEADER: Final = "http.request.header."
HTTP_RESPONSE_HEADER: Final = "http.response.header."

# The pre-1.21 names the reference instrumentation emits by default ("old" mode).
OLD_HTTP_METHOD: Final = "http.method"
OLD_HTTP_SCHEME: Final = "http.scheme"
OLD_HTTP_HOST: Final = "http.host"
OLD_NET_HOST_NAME: Final = "net.host.name"
OLD_NET_HOST_PORT: Final = "net.host.port"
OLD_HTTP_TARGET: Final = "http.target"
OLD_HTTP_URL: Final = "http.url"
OLD_HTTP_STATUS_CODE: Final = "http.status_code"
OLD_HTTP_FLAVOR: Final = "http.flavor"
OLD_HTTP_USER_AGENT: Final = "http.user_agent"
OLD_NET_PEER_IP: Final = "net.peer.ip"
OLD_NET_PEER_PORT: Final = "net.peer.port"
OLD_HTTP_SERVER_NAME: Final = "http.server_name"

# Metric instruments.
HTTP_SERVER_REQUEST_DURATION: Final = "http.server.request.duration"
HTTP_SERVER_ACTIVE_REQUESTS: Final = "http.server.active_requests"
HTTP_SERVER_REQUEST_BODY_SIZE: Final = "http.server.request.body.size"
HTTP_SERVER_RESPONSE_BODY_SIZE: Final = "http.server.response.body.size"
OLD_HTTP_SERVER_DURATION: Final = "http.server.duration"
