"""Pure functions: a WSGI environ, a status line and headers in, frozen records out.

Every function here is total (it never raises, whatever the environ holds), deterministic and leaves
its input untouched. Other servers and frameworks may call them directly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, TypeGuard
from urllib.parse import quote_from_bytes, unquote_plus

from otel_wsgi import semconv as sc
from otel_wsgi.types import (
    KNOWN_METHODS,
    OTHER,
    REDACT_QUERY_PARAMS,
    REDACTED,
    REDACTED_HEADER,
    Attributes,
    AttributeValue,
    Environ,
    RequestRecord,
    ResponseHeaders,
    ResponseRecord,
)

if TYPE_CHECKING:
    from otel_wsgi.config import Config

# RFC 3986 pchar without "%": a literal "%" in PATH_INFO was "%25" on the request line.
_PATH_SAFE: Final = "/:@!$&'()*+,;="
_PATH_UNSAFE: Final = re.compile(r"[^A-Za-z0-9\-._~/:@!$&'()*+,;=]")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# RFC 3986 reg-name and IPv4 characters; anything else in a Host header makes it invalid.
_REG_NAME: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")
_IP_LITERAL: Final = re.compile(
    r"\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9\-._~%]+)?\]"  # IPv6, optional zone (RFC 6874)
    r"|\[[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"  # IPvFuture (RFC 3986 section 3.2.2)
)
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.\-]*")
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#]*@")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 9110 section 2.5: HTTP-version is DIGIT "." DIGIT; HTTP/2 and HTTP/3 servers say "HTTP/2".
_COMMON_VERSIONS: Final = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0", "HTTP/2": "2", "HTTP/2.0": "2.0"}
_VERSION: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_TEST_AGENTS: Final = ("alwayson", "datadogsynthetics", "pingdom", "uptimerobot", "statuscake")
_BOT_AGENTS: Final = (
    "googlebot", "bingbot", "yandexbot", "baiduspider", "duckduckbot", "applebot",
    "slurp", "ahrefsbot", "semrushbot", "gptbot", "petalbot",
)  # fmt: skip
EXCLUDED: Final = RequestRecord("", {}, OTHER, traced=False)


# --- small public helpers ---


def parse_status(status: str) -> int | None:
    """Return the code of a PEP 3333 status line, or None unless it is 3 digits 100-599 then end or space."""
    if len(status) < 3 or status[3:4] not in ("", " "):
        return None
    head = status[:3]
    if not (head.isascii() and head.isdigit()):
        return None
    code = int(head)
    return code if 100 <= code <= 599 else None


def parse_port(raw: object) -> int | None:
    """Return a TCP port (1-65535) from a decimal string or int, or None for anything else."""
    if type(raw) is str and 0 < len(raw) <= 5 and raw.isdigit() and raw.isascii():
        port = int(raw)  # the common case, first
        return port if 0 < port < 65536 else None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 < raw < 65536 else None
    text = _as_text(raw)
    if text is None or not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def split_host(host: str) -> tuple[str | None, int | None]:
    """Split a Host header into (address, port); address None if invalid, port None if absent or bad.

    Userinfo before "@" is dropped, IPv6 brackets are stripped, the split is at the last ":" outside
    "[...]".
    """
    text = host.strip().rpartition("@")[2]
    if text.startswith("["):
        end = text.find("]")
        literal, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or _IP_LITERAL.fullmatch(literal) is None or rest[:1] not in ("", ":"):
            return None, None
        return literal[1:-1], parse_port(rest[1:])
    name, colon, port = text.rpartition(":")
    if not colon:
        name, port = text, ""
    # A plain DNS name or IPv4 address needs no regex (the common case); anything else is checked.
    plain = name.replace(".", "").replace("-", "")
    if not (plain.isalnum() and plain.isascii()) and _REG_NAME.fullmatch(name) is None:
        return None, None
    return name.lower(), parse_port(port) if port else None


def normalize_method(
    method: str, known_methods: frozenset[str] = KNOWN_METHODS, *, capture_all: bool = False
) -> str:
    """Return the method if it is known (case-sensitive) or all are captured, else `_OTHER`."""
    if method in known_methods or (capture_all and _TOKEN.fullmatch(method) is not None):
        return method
    return OTHER


def span_name(method: str, route: str | None = None) -> str:
    """Return `{METHOD}` or `{METHOD} {route}`, with `HTTP` for `_OTHER`; never the raw path."""
    name = "HTTP" if method == OTHER else method
    return f"{name} {route}" if route else name


def url_path(script_name: str, path_info: str) -> str:
    """Return SCRIPT_NAME + PATH_INFO percent-encoded as on the request line ("/" if both are empty).

    PEP 3333 gives both as latin-1 "bytes as str"; we re-encode those bytes, so UTF-8 `/café`
    becomes `/caf%C3%A9`. A malformed environ holding wider characters is encoded as UTF-8.
    """
    path = script_name + path_info
    if not path:
        return "/"
    if _PATH_UNSAFE.search(path) is None:
        return path  # the common case: nothing to encode
    return quote_from_bytes(_raw_bytes(path), safe=_PATH_SAFE)


def url_query(query: str, redact: frozenset[str] = REDACT_QUERY_PARAMS) -> str:
    """Return the query with each `redact` key's value replaced by `REDACTED`, non-ASCII bytes
    percent-encoded, and everything else byte for byte (order, blanks and encoding kept)."""
    if not query.isascii():
        # Encode first, so a key sent as raw UTF-8 bytes is matched like its %-encoded spelling.
        query = "".join(chr(b) if b < 0x80 else f"%{b:02X}" for b in _raw_bytes(query))
    if redact and query and _mentions(query, redact):
        parts = query.split("&")
        for index, part in enumerate(parts):
            key, equals, _ = part.partition("=")
            if equals and (key in redact or unquote_plus(key) in redact):
                parts[index] = f"{key}={REDACTED}"
        query = "&".join(parts)
    return query


def protocol_version(server_protocol: str) -> str | None:
    """Return `1.1` for `HTTP/1.1` (any case), or None if SERVER_PROTOCOL is not HTTP/<digits>[.<digits>]."""
    known = _COMMON_VERSIONS.get(server_protocol)
    if known is not None:
        return known
    if server_protocol[:5].upper() != "HTTP/":
        return None
    version = server_protocol[5:]
    return version if _VERSION.fullmatch(version) else None


def synthetic_type(user_agent: str) -> str | None:
    """Return `test` for synthetic monitors, `bot` for known crawlers, else None."""
    lowered = user_agent.lower()
    for name in _TEST_AGENTS:  # plain loops: 10x faster than a case-insensitive regex alternation
        if name in lowered:
            return "test"
    for name in _BOT_AGENTS:
        if name in lowered:
            return "bot"
    return None


def header_environ_key(name: str) -> str:
    """Return the environ key a request header arrives under (`x-a` -> `HTTP_X_A`, CGI exceptions)."""
    upper = name.upper().replace("-", "_")
    return upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper


def environ_header_name(key: str) -> str | None:
    """Return the lowercase header name for an environ key (`HTTP_X_A` -> `x-a`), or None."""
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return key.lower().replace("_", "-")
    if key.startswith("HTTP_") and len(key) > 5:
        return key[5:].lower().replace("_", "-")
    return None


# --- the composites ---


def request_record(environ: Environ, config: Config) -> RequestRecord:
    """Return the span name and start attributes for a request (EXCLUDED if it must not be traced)."""
    method, stable = _request_attributes(environ, config)
    if config.excluded_re is not None and config.excluded_re.search(_exclusion_url(stable)):
        return EXCLUDED
    mode = config.semconv
    attributes = stable if mode == "stable" else _old_attributes(stable, environ, config)
    if mode == "dup":
        attributes = stable | attributes
    if config.request_header_re is not None:
        attributes.update(request_header_attributes(environ, config))
    return RequestRecord(span_name(method), attributes, method)


def response_record(status: str, headers: ResponseHeaders, config: Config) -> ResponseRecord:
    """Return the status code and attributes of one `start_response` call; never raises."""
    code = parse_status(_as_text(status) or "")
    attributes: dict[str, AttributeValue] = {}
    error = code is None or code >= 500
    if config.semconv != "old":
        if code is not None:
            attributes[sc.HTTP_RESPONSE_STATUS_CODE] = code
        if error:
            attributes[sc.ERROR_TYPE] = OTHER if code is None else str(code)
    if config.semconv != "stable" and code is not None:
        attributes[sc.OLD_HTTP_STATUS_CODE] = code
    if config.response_header_re is not None:
        attributes.update(response_header_attributes(headers, config))
    length = content_length(headers) if config.body_size_metrics else None
    return ResponseRecord(code, attributes, error, length)


def content_length(headers: ResponseHeaders) -> int | None:
    """Return the Content-Length of a response header list, or None if absent or not a number."""
    for name, value in header_pairs(headers):
        if name.lower() == "content-length":
            value = value.strip()
            return int(value) if 0 < len(value) <= 18 and value.isascii() and value.isdigit() else None
    return None


def request_header_attributes(environ: Environ, config: Config) -> dict[str, AttributeValue]:
    """Return the captured request headers (`http.request.header.<name>`: one joined value)."""
    old = config.semconv == "old"
    limit = config.max_attribute_length
    found: dict[str, AttributeValue] = {}
    keys = config.request_header_keys
    if keys is not None:
        for key, name, redacted in keys:
            value = _as_text(environ.get(key))
            if value is not None:
                found[_header_key(sc.HTTP_REQUEST_HEADER, name, old)] = (
                    REDACTED_HEADER if redacted else (value[:limit],)
                )
        return found
    pattern = config.request_header_re
    for key in environ:
        header = environ_header_name(key)
        text = _as_text(environ.get(key))
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


def _request_attributes(environ: Environ, config: Config) -> tuple[str, dict[str, AttributeValue]]:
    """Return the normalised method and the stable attributes of a request (old names derive from these).

    The hot path: plain environ reads, and the common hosts, ports, paths and protocols skip regexes.
    """
    limit = config.max_attribute_length
    raw_method = _text(environ, "REQUEST_METHOD")
    method = raw_method
    if raw_method not in config.known_methods:  # cut, so span names and metrics are bounded too
        method = normalize_method(raw_method, config.known_methods, capture_all=config.capture_all_methods)
        method = method[:limit]
    scheme = _text(environ, "wsgi.url_scheme")
    if scheme not in _DEFAULT_PORTS:
        scheme = scheme.lower() if _SCHEME.fullmatch(scheme.lower()) else "http"
    host = _text(environ, "HTTP_HOST")
    address, port = split_host(host) if host else (None, None)
    peer, peer_port = _text(environ, "REMOTE_ADDR") or None, parse_port(environ.get("REMOTE_PORT"))
    client, client_port = peer, peer_port
    if config.forwarded_headers:
        scheme, address, port, client, client_port = _forwarded(
            environ, scheme, address, port, client, client_port
        )
    if address is None:
        address = _text(environ, "SERVER_NAME") or None
    if port is None and address is not None:
        port = parse_port(environ.get("SERVER_PORT"))
    attributes: dict[str, AttributeValue] = {
        sc.HTTP_REQUEST_METHOD: method,
        sc.URL_SCHEME: scheme[:limit],  # X-Forwarded-Proto can be any length
        sc.URL_PATH: url_path(_text(environ, "SCRIPT_NAME"), _text(environ, "PATH_INFO"))[:limit],
    }
    if method != raw_method:
        attributes[sc.HTTP_REQUEST_METHOD_ORIGINAL] = raw_method[:limit]
    query = _text(environ, "QUERY_STRING")
    if query:
        attributes[sc.URL_QUERY] = url_query(query, config.redact_query_params)[:limit]
    if address is not None:
        attributes[sc.SERVER_ADDRESS] = address[:limit]
    if port is not None:
        attributes[sc.SERVER_PORT] = port
    if client is not None:
        attributes[sc.CLIENT_ADDRESS] = client[:limit]
    if client_port is not None:
        attributes[sc.CLIENT_PORT] = client_port
    if peer is not None:
        attributes[sc.NETWORK_PEER_ADDRESS] = peer[:limit]
    if peer_port is not None:
        attributes[sc.NETWORK_PEER_PORT] = peer_port
    version = protocol_version(_text(environ, "SERVER_PROTOCOL"))
    if version is not None:
        attributes[sc.NETWORK_PROTOCOL_VERSION] = version[:limit]
    agent = _text(environ, "HTTP_USER_AGENT")
    if agent:
        attributes[sc.USER_AGENT_ORIGINAL] = agent[:limit]
        synthetic = synthetic_type(agent)
        if synthetic is not None:
            attributes[sc.USER_AGENT_SYNTHETIC_TYPE] = synthetic
    return method, attributes


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
    netloc = _netloc(stable)
    if netloc is not None:
        old[sc.OLD_HTTP_HOST] = netloc[:limit]
    target = _as_text(environ.get("RAW_URI"))
    if target is None:
        target = _as_text(environ.get("REQUEST_URI"))
    if target:
        old[sc.OLD_HTTP_TARGET] = _target(target, config)[:limit]
    else:
        query = stable.get(sc.URL_QUERY)
        suffix = f"?{query}" if query else ""
        old[sc.OLD_HTTP_URL] = f"{stable[sc.URL_SCHEME]}://{netloc or ''}{stable[sc.URL_PATH]}{suffix}"[
            :limit
        ]
    server_name = _text(environ, "SERVER_NAME")
    if server_name:
        old[sc.OLD_HTTP_SERVER_NAME] = server_name[:limit]
    return old


def _forwarded(
    environ: Environ, scheme: str, address: str | None, port: int | None,
    client: str | None, client_port: int | None,
) -> tuple[str, str | None, int | None, str | None, int | None]:  # fmt: skip
    """Apply `Forwarded` (RFC 7239, first element) and `X-Forwarded-*` (first entry) over the socket."""
    forwarded = _forwarded_pairs(_text(environ, "HTTP_FORWARDED"))
    proto = forwarded.get("proto") or _first(_text(environ, "HTTP_X_FORWARDED_PROTO"))
    if proto and _SCHEME.fullmatch(proto.lower()):
        scheme = proto.lower()
    forwarded_address, forwarded_port = split_host(
        forwarded.get("host") or _first(_text(environ, "HTTP_X_FORWARDED_HOST"))
    )
    if forwarded_address is not None:
        address, port = forwarded_address, forwarded_port or _DEFAULT_PORTS.get(scheme)
    origin = forwarded.get("for") or _first(_text(environ, "HTTP_X_FORWARDED_FOR"))
    origin_address, origin_port = _node(origin) if origin else (None, None)
    if origin_address is not None:  # a junk node keeps the socket peer rather than nothing
        client, client_port = origin_address, origin_port
    return scheme, address, port, client, client_port


def _forwarded_pairs(header: str) -> dict[str, str]:
    """Return the parameters of the first element of a `Forwarded` header, keys lowercased."""
    pairs: dict[str, str] = {}
    for part in header.split(",", 1)[0].split(";"):
        key, equals, value = part.partition("=")
        if equals:
            pairs.setdefault(key.strip().lower(), value.strip().strip('"'))
    return pairs


def _node(origin: str) -> tuple[str | None, int | None]:
    """Split a forwarded client node (`1.2.3.4`, `[2001:db8::1]:4711`, `unknown`) into address and port."""
    if origin.startswith("["):
        address, port = split_host(origin)
        return address, port
    if origin.count(":") == 1:
        name, _, port_text = origin.partition(":")
        return name or None, parse_port(port_text)
    return origin, None


def _exclusion_url(stable: Attributes) -> str:
    return f"{stable[sc.URL_SCHEME]}://{_netloc(stable) or ''}{stable[sc.URL_PATH]}"


def _netloc(stable: Attributes) -> str | None:
    """Return `host[:port]`, the port only when it is not the scheme's default; IPv6 bracketed."""
    address = stable.get(sc.SERVER_ADDRESS)
    if not isinstance(address, str):
        return None
    host = f"[{address}]" if ":" in address else address
    port = stable.get(sc.SERVER_PORT)
    if port is None or _DEFAULT_PORTS.get(str(stable[sc.URL_SCHEME])) == port:
        return host
    return f"{host}:{port}"


def _target(target: str, config: Config) -> str:
    """Return a raw request target with userinfo dropped and the query redacted."""
    path, question, query = _USERINFO.sub(r"\1", target).partition("?")
    path = url_query(path, frozenset())
    return f"{path}?{url_query(query, config.redact_query_params)}" if question else path


def _sanitized(name: str, value: tuple[str, ...], config: Config) -> tuple[str, ...]:
    sanitize = config.sanitize_re
    return REDACTED_HEADER if sanitize is not None and sanitize.search(name) else value


def _header_key(prefix: str, name: str, old: bool) -> str:
    return prefix + (name.replace("-", "_") if old else name)


def _first(header: str) -> str:
    return header.split(",", 1)[0].strip()


def header_pairs(headers: ResponseHeaders) -> list[tuple[str, str]]:
    """Return the well-formed (name, value) pairs of a header list; junk from a buggy app is skipped."""
    if not _is_sequence(headers):
        return []
    return [item for item in headers if _is_pair(item)]


def _is_sequence(value: object) -> TypeGuard[Sequence[object]]:
    return isinstance(value, list | tuple)


def _is_pair(value: object) -> TypeGuard[tuple[str, str]]:
    match value:
        case (str(), str()):
            return True
    return False


def _mentions(query: str, keys: frozenset[str]) -> bool:
    """True if any key may occur in the query (also percent- or plus-encoded): worth splitting it."""
    if "%" in query or "+" in query:
        return True
    for key in keys:
        if key in query:
            return True
    return False


def _text(environ: Environ, key: str) -> str:
    """Return an environ value as text: str as is, bytes as latin-1, anything else as ""."""
    value = environ.get(key)
    if isinstance(value, str):
        return value
    return _as_text(value) or ""


def _as_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return value.decode("latin-1")
    return None


def _raw_bytes(text: str) -> bytes:
    """Return the bytes a PEP 3333 string stands for (UTF-8 for characters latin-1 cannot hold)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")
