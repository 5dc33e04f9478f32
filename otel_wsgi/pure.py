"""Pure functions: a WSGI environ, a status line and headers in, frozen records out.

The one module that reads the environ: each value is narrowed here (`_text`) and handed to the value
parsers of `otel_wsgi.values` as a plain string. Every function is total (it never raises, whatever the
environ holds), deterministic and leaves its input untouched. Other servers and frameworks may call them
directly; the public value parsers are re-exported from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeGuard

from otel_wsgi import semconv as sc
from otel_wsgi.finish import status_error_type
from otel_wsgi.memo import MEMO_LIMIT, MEMO_VALUE_LIMIT, HeadKey, keepable, remember
from otel_wsgi.naming import span_name
from otel_wsgi.types import (
    OTHER,
    REDACTED_HEADER,
    Attributes,
    AttributeValue,
    Environ,
    RequestHead,
    RequestRecord,
    ResponseHeaders,
    ResponseRecord,
)
from otel_wsgi.values import (
    DEFAULT_PORTS,
    as_text,
    content_length,
    environ_header_name,
    forwarded_node,
    forwarded_value,
    header_environ_key,
    header_pairs,
    netloc,
    normalize_method,
    parse_host,
    parse_length,
    parse_port,
    parse_scheme,
    parse_status,
    protocol_version,
    request_target,
    split_host,
    synthetic_type,
    url_path,
    url_query,
)

if TYPE_CHECKING:
    from otel_wsgi.config import Config

__all__ = [
    "EXCLUDED",
    "content_length",
    "environ_header_name",
    "header_environ_key",
    "header_pairs",
    "normalize_method",
    "parse_host",
    "parse_length",
    "parse_port",
    "parse_status",
    "protocol_version",
    "request_attributes",
    "request_head",
    "request_header_attributes",
    "request_record",
    "response_header_attributes",
    "response_record",
    "span_name",
    "split_host",
    "synthetic_type",
    "url_path",
    "url_query",
]

#: The record of a request that must not be traced (it matched `excluded_urls`).
EXCLUDED: Final = RequestRecord("", {}, OTHER, traced=False)
# Semconv (url.full): credentials in a URL are replaced, not dropped, so readers see there were some.
_REDACTED_USERINFO: Final = "REDACTED:REDACTED@"


# --- the composites ---


def request_head(environ: Environ, config: Config, *, path: bool = False) -> RequestHead:
    """Return what the span name and the metrics need: method, scheme, protocol version, whether the
    request is traced at all (`excluded_urls`), and what the configured metrics (or, with `path`, the
    naming policy) read at the start. Cheap: memoised on its inputs (`otel_wsgi.memo`)."""
    head = _memo_head(environ, config)
    if config.excluded_re is None and not config.body_size_metrics and not path:
        return head  # the common case: everything in it follows from the memo key
    traced = config.excluded_re is None or not _excluded(environ, config, head.scheme)
    length = parse_length(environ.get("CONTENT_LENGTH")) if config.body_size_metrics else None
    raw_path = _text(environ, "PATH_INFO").strip()[: config.max_attribute_length] if path else None
    method, scheme, version, _, server, _, _, fixed = head
    return RequestHead(method, scheme, version, traced, server, length, raw_path, fixed)


def request_record(environ: Environ, config: Config) -> RequestRecord:
    """Return the span name and start attributes for a request (EXCLUDED if it must not be traced)."""
    head = request_head(environ, config)
    if not head.traced:
        return EXCLUDED
    return RequestRecord(span_name(head.method), request_attributes(environ, config, head), head.method)


def request_attributes(environ: Environ, config: Config, head: RequestHead) -> dict[str, AttributeValue]:
    """Return the span start attributes of a request in `config.semconv`'s names, given its head
    (from `request_head`, so nothing is computed twice); exclusion is not checked here."""
    stable = _stable_attributes(environ, config, head)
    mode = config.semconv
    attributes = stable if mode == "stable" else _old_attributes(stable, environ, config)
    if mode == "dup":
        attributes = stable | attributes
    if config.request_header_re is not None:
        attributes.update(request_header_attributes(environ, config))
    return attributes


def response_record(status: str, headers: ResponseHeaders, config: Config) -> ResponseRecord:
    """Return the status code and attributes of one `start_response` call; never raises."""
    code = parse_status(as_text(status) or "")
    attributes: dict[str, AttributeValue] = {}
    kind = status_error_type(code)  # None unless the span status must be ERROR: a 5xx or a malformed line
    if config.semconv != "old":
        if code is not None:
            attributes[sc.HTTP_RESPONSE_STATUS_CODE] = code
        if kind is not None:
            attributes[sc.ERROR_TYPE] = kind
    if config.semconv != "stable" and code is not None:
        attributes[sc.OLD_HTTP_STATUS_CODE] = code
    if config.response_header_re is not None:
        attributes.update(response_header_attributes(headers, config))
    length = content_length(headers) if config.body_size_metrics else None
    return ResponseRecord(code, attributes, kind is not None, length)


def request_header_attributes(environ: Environ, config: Config) -> dict[str, AttributeValue]:
    """Return the captured request headers (`http.request.header.<name>`: one joined value)."""
    old = config.semconv == "old"
    limit = config.max_attribute_length
    found: dict[str, AttributeValue] = {}
    keys = config.request_header_keys
    if keys is not None:
        for key, name, redacted in keys:
            value = as_text(environ.get(key))
            if value is not None:
                found[_header_key(sc.HTTP_REQUEST_HEADER, name, old)] = (
                    REDACTED_HEADER if redacted else (value[:limit],)
                )
        return found
    pattern = config.request_header_re
    for key in environ:
        header = environ_header_name(key)
        text = as_text(environ.get(key))
        if header is None or text is None or pattern is None or not pattern.fullmatch(header):
            continue
        found[_header_key(sc.HTTP_REQUEST_HEADER, header, old)] = _sanitized(header, (text[:limit],), config)
    return found


def response_header_attributes(headers: ResponseHeaders, config: Config) -> dict[str, AttributeValue]:
    """Return the captured response headers: one value per occurrence (joined with "," in old mode)."""
    pattern = config.response_header_re
    if pattern is None:
        return {}
    limit = config.max_attribute_length
    values: dict[str, list[str]] = {}
    for item in header_pairs(headers):
        name = item[0].lower()
        if pattern.fullmatch(name):
            values.setdefault(name, []).append(item[1][:limit])
    old = config.semconv == "old"
    return {
        _header_key(sc.HTTP_RESPONSE_HEADER, name, old): _sanitized(
            name, (",".join(found)[:limit],) if old else tuple(found), config
        )
        for name, found in values.items()
    }


# --- private helpers ---


def _memo_head(environ: Environ, config: Config) -> RequestHead:
    """Return `_new_head`, kept per config under the raw environ values it reads (`otel_wsgi.memo`)."""
    get = environ.get
    key: HeadKey = (
        get("HTTP_HOST"), get("SERVER_NAME"), get("SERVER_PORT"), get("wsgi.url_scheme"),
        get("SERVER_PROTOCOL"), get("REQUEST_METHOD"),
    )  # fmt: skip
    if config.forwarded_headers:
        key += (get("HTTP_FORWARDED"), get("HTTP_X_FORWARDED_HOST"), get("HTTP_X_FORWARDED_PROTO"))
    heads = config.memo.heads
    try:
        head = heads.get(key)
    except Exception:  # an unhashable (or hostile) value: computed every time, never kept
        return _new_head(environ, config)
    if head is None:
        head = _new_head(environ, config)
        if len(heads) >= MEMO_LIMIT or keepable(key):  # a full table keeps nothing: no need to check
            remember(heads, key, head)
    return head


def _new_head(environ: Environ, config: Config) -> RequestHead:
    """Return the head of a request from the values `_memo_head` keys it on (none else is read)."""
    limit = config.max_attribute_length
    method = raw_method = _text(environ, "REQUEST_METHOD")
    if method not in config.known_methods:
        method = normalize_method(method, config.known_methods, capture_all=config.capture_all_methods)
        method = method[:limit]  # any token with capture_all_methods: span names and metrics stay bounded
    scheme = _scheme(environ, config)[:limit]  # X-Forwarded-Proto can be any length
    version = protocol_version(_text(environ, "SERVER_PROTOCOL"))
    version = version and version[:limit]
    server = None
    if config.semconv != "stable":  # the old duration metric carries SERVER_NAME and SERVER_PORT
        name = environ.get("SERVER_NAME")
        server = (name[:limit] if isinstance(name, str) else None, parse_port(environ.get("SERVER_PORT")))
    fixed = _fixed_attributes(environ, config, method, scheme, version, raw_method)
    return RequestHead(method, scheme, version, True, server, None, None, fixed)


def _fixed_attributes(
    environ: Environ, config: Config, method: str, scheme: str, version: str | None, raw_method: str
) -> dict[str, AttributeValue]:
    """Return the stable start attributes that follow from the head's inputs: method (and the original
    one, `raw_method` as sent), scheme, server address and port (Host, the proxy's host, else
    SERVER_NAME), protocol version."""
    limit = config.max_attribute_length
    fixed: dict[str, AttributeValue] = {sc.HTTP_REQUEST_METHOD: method, sc.URL_SCHEME: scheme}
    if raw_method and raw_method != method:  # no method sent: nothing original to report
        fixed[sc.HTTP_REQUEST_METHOD_ORIGINAL] = raw_method[:limit]
    address, port = _server(environ, config, scheme)
    if address is not None:
        fixed[sc.SERVER_ADDRESS] = address[:limit]
    if port is not None:
        fixed[sc.SERVER_PORT] = port
    if version is not None:
        fixed[sc.NETWORK_PROTOCOL_VERSION] = version
    return fixed


def _stable_attributes(environ: Environ, config: Config, head: RequestHead) -> dict[str, AttributeValue]:
    """Return the stable-convention attributes of a request (the old names derive from these).

    The hot path: the head brings the attributes of its memoised inputs; per request, the path, query,
    client and user agent are read once each.
    """
    limit = config.max_attribute_length
    fixed = head.fixed_attributes
    if fixed is None:  # a head built by hand
        raw_method = _text(environ, "REQUEST_METHOD")
        fixed = _fixed_attributes(environ, config, head.method, head.scheme, head.version, raw_method)
    get = environ.get
    read = (
        get("SCRIPT_NAME"), get("PATH_INFO"), get("QUERY_STRING"), get("REMOTE_ADDR"), get("HTTP_USER_AGENT"),
    )  # fmt: skip
    texts = read if _all_text(read) else tuple(as_text(value) or "" for value in read)
    script, path, query, peer, agent = texts
    attributes: dict[str, AttributeValue] = {**fixed, sc.URL_PATH: url_path(script, path)[:limit]}
    if query:
        attributes[sc.URL_QUERY] = url_query(query, config.redact_query_params)[:limit]
    peer_address, peer_port = peer[:limit] or None, parse_port(get("REMOTE_PORT"))
    client, client_port = _forwarded_client(environ) if config.forwarded_headers else (None, None)
    if client is None:
        client, client_port = peer_address, peer_port
    if client is not None:
        attributes[sc.CLIENT_ADDRESS] = client[:limit]
    if client_port is not None:
        attributes[sc.CLIENT_PORT] = client_port
    if peer_address is not None:
        attributes[sc.NETWORK_PEER_ADDRESS] = peer_address
    if peer_port is not None:
        attributes[sc.NETWORK_PEER_PORT] = peer_port
    if agent:
        original, synthetic = _user_agent(agent, config)
        attributes[sc.USER_AGENT_ORIGINAL] = original
        if synthetic is not None:
            attributes[sc.USER_AGENT_SYNTHETIC_TYPE] = synthetic
    return attributes


def _user_agent(agent: str, config: Config) -> tuple[str, str | None]:
    """Return `user_agent.original` and `user_agent.synthetic.type`, memoised per config."""
    agents = config.memo.agents
    found = agents.get(agent) if type(agent) is str else None
    if found is None:
        found = (agent[: config.max_attribute_length], synthetic_type(agent))
        if type(agent) is str and len(agent) <= MEMO_VALUE_LIMIT:
            remember(agents, agent, found)
    return found


def _scheme(environ: Environ, config: Config) -> str:
    """Return the URL scheme: `wsgi.url_scheme`, or the proxy's when forwarded headers are trusted."""
    scheme = _text(environ, "wsgi.url_scheme")
    if scheme not in DEFAULT_PORTS:
        scheme = parse_scheme(scheme) or "http"
    if config.forwarded_headers:
        proto = parse_scheme(_proxied(environ, "proto", "HTTP_X_FORWARDED_PROTO"))
        if proto is not None:
            scheme = proto
    return scheme


def _server(environ: Environ, config: Config, scheme: str) -> tuple[str | None, int | None]:
    """Return the server address and port: Host (or the proxy's host), else SERVER_NAME / SERVER_PORT.

    A host whose name or port is invalid is not used at all: its name is never paired with another
    source's port. A valid Host without a port gets SERVER_PORT (the port the request reached).
    """
    host = _text(environ, "HTTP_HOST")
    found = parse_host(host) if host else None
    if config.forwarded_headers:
        proxied = parse_host(_proxied(environ, "host", "HTTP_X_FORWARDED_HOST"))
        if proxied is not None:  # the proxy's host without a port means the scheme's default port
            found = proxied[0], proxied[1] or DEFAULT_PORTS.get(scheme)
    address, port = found if found is not None else (_text(environ, "SERVER_NAME") or None, None)
    if port is None and address is not None:
        port = parse_port(environ.get("SERVER_PORT"))
    return address, port


def _path(environ: Environ) -> str:
    return url_path(_text(environ, "SCRIPT_NAME"), _text(environ, "PATH_INFO"))


def _excluded(environ: Environ, config: Config, scheme: str) -> bool:
    """True if `{scheme}://{host}{path}` matches `excluded_urls` (the port only when not the default)."""
    address, port = _server(environ, config, scheme)
    pattern = config.excluded_re
    url = f"{scheme}://{netloc(address, port, scheme) or ''}{_path(environ)}"
    return pattern is not None and pattern.search(url) is not None


# The old names of stable attributes that carry over unchanged (the reference's default mode).
_OLD_NAMES: Final = (
    (sc.HTTP_REQUEST_METHOD, sc.OLD_HTTP_METHOD),
    (sc.URL_SCHEME, sc.OLD_HTTP_SCHEME),
    (sc.SERVER_ADDRESS, sc.OLD_NET_HOST_NAME),
    (sc.SERVER_PORT, sc.OLD_NET_HOST_PORT),
    (sc.NETWORK_PROTOCOL_VERSION, sc.OLD_HTTP_FLAVOR),
    (sc.USER_AGENT_ORIGINAL, sc.OLD_HTTP_USER_AGENT),
    (sc.USER_AGENT_SYNTHETIC_TYPE, sc.USER_AGENT_SYNTHETIC_TYPE),
    (sc.NETWORK_PEER_ADDRESS, sc.OLD_NET_PEER_IP),
    (sc.NETWORK_PEER_PORT, sc.OLD_NET_PEER_PORT),
)


def _old_attributes(stable: Attributes, environ: Environ, config: Config) -> dict[str, AttributeValue]:
    """Rename the stable attributes as the reference's default mode does (`http.method`, `http.target`)."""
    limit = config.max_attribute_length
    old = {new: stable[name] for name, new in _OLD_NAMES if name in stable}
    # The pre-1.21 `net.host.port` is the port the server listens on (as in the old metric), not Host's.
    local_port = parse_port(environ.get("SERVER_PORT"))
    if local_port is not None:
        old[sc.OLD_NET_HOST_PORT] = local_port
    host = netloc(stable.get(sc.SERVER_ADDRESS), stable.get(sc.SERVER_PORT), stable[sc.URL_SCHEME])
    if host is not None:
        old[sc.OLD_HTTP_HOST] = host[:limit]
    target = as_text(environ.get("RAW_URI"))
    if target is None:
        target = as_text(environ.get("REQUEST_URI"))
    if target:
        old[sc.OLD_HTTP_TARGET] = request_target(target, config.redact_query_params)[:limit]
    else:
        query = stable.get(sc.URL_QUERY)
        suffix = f"?{query}" if query else ""
        userinfo = _REDACTED_USERINFO if "@" in _host_header(environ, config) else ""
        old[sc.OLD_HTTP_URL] = (
            f"{stable[sc.URL_SCHEME]}://{userinfo}{host or ''}{stable[sc.URL_PATH]}{suffix}"[:limit]
        )
    server_name = _text(environ, "SERVER_NAME")
    if server_name:
        old[sc.OLD_HTTP_SERVER_NAME] = server_name[:limit]
    return old


def _host_header(environ: Environ, config: Config) -> str:
    """Return the Host value the server address came from: the proxy's when trusted and valid, else Host."""
    if config.forwarded_headers:
        proxied = _proxied(environ, "host", "HTTP_X_FORWARDED_HOST")
        if split_host(proxied)[0] is not None:
            return proxied
    return _text(environ, "HTTP_HOST")


def _forwarded_client(environ: Environ) -> tuple[str | None, int | None]:
    """Return the original client from `Forwarded` (RFC 7239, first element) or `X-Forwarded-For`
    (first entry); (None, None) when absent or junk, so the socket peer stays the client."""
    origin = _proxied(environ, "for", "HTTP_X_FORWARDED_FOR")
    return forwarded_node(origin) if origin else (None, None)


def _proxied(environ: Environ, parameter: str, legacy_key: str) -> str:
    """Return a `Forwarded` parameter (RFC 7239, first element), else the first `X-Forwarded-*` entry."""
    return forwarded_value(_text(environ, "HTTP_FORWARDED"), _text(environ, legacy_key), parameter)


def _text(environ: Environ, key: str) -> str:
    """Return an environ value as text: str as is, bytes as latin-1, anything else as ""."""
    value = environ.get(key)
    if isinstance(value, str):
        return value
    return as_text(value) or ""


def _all_text(values: tuple[object, ...]) -> TypeGuard[tuple[str, ...]]:
    """True if every value is a `str` (the common case: nothing to narrow one by one)."""
    for value in values:
        if type(value) is not str:
            return False
    return True


def _sanitized(name: str, value: tuple[str, ...], config: Config) -> tuple[str, ...]:
    sanitize = config.sanitize_re
    return REDACTED_HEADER if sanitize is not None and sanitize.search(name) else value


def _header_key(prefix: str, name: str, old: bool) -> str:
    return prefix + (name.replace("-", "_") if old else name)
