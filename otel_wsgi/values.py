"""Value parsers for WSGI and HTTP: status lines, ports, hosts, methods, paths, queries, proxy headers.

Total functions on plain values (they never raise and never see the environ: `otel_wsgi.pure` narrows
it and hands them strings); the public ones are re-exported from `otel_wsgi.pure`, where users import them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, TypeGuard
from urllib.parse import quote_from_bytes, unquote_plus

from otel_wsgi.types import (
    KNOWN_METHODS,
    OTHER,
    REDACT_QUERY_PARAMS,
    REDACTED,
    AttributeValue,
    ResponseHeaders,
)

# RFC 3986 pchar without "%": a literal "%" in PATH_INFO was "%25" on the request line.
_PATH_SAFE: Final = "/:@!$&'()*+,;="
_PATH_UNSAFE: Final = re.compile(r"[^A-Za-z0-9\-._~/:@!$&'()*+,;=]")
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# RFC 3986 reg-name and IPv4 characters; anything else in a Host header makes it invalid.
_REG_NAME: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")
_IP_LITERAL: Final = re.compile(
    r"\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9\-._~%]+)?\]"  # IPv6, optional zone (RFC 6874)
    r"|\[[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"  # IPvFuture (RFC 3986 section 3.2.2)
)
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.\-]*")
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#]*@")
#: RFC 9110 section 5.6.2: a method is a token.
METHOD_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# RFC 9110 section 2.5: HTTP-version is DIGIT "." DIGIT; HTTP/2 and HTTP/3 servers say "HTTP/2".
_COMMON_VERSIONS: Final = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0", "HTTP/2": "2", "HTTP/2.0": "2.0"}
_VERSION: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
# PEP 3333 (CGI): these two request headers arrive without the HTTP_ prefix.
_CGI_KEYS: Final = ("CONTENT_TYPE", "CONTENT_LENGTH")
_TEST_AGENTS: Final = ("alwayson", "datadogsynthetics", "pingdom", "uptimerobot", "statuscake")
_BOT_AGENTS: Final = (
    "googlebot", "bingbot", "yandexbot", "baiduspider", "duckduckbot", "applebot",
    "slurp", "ahrefsbot", "semrushbot", "gptbot", "petalbot",
)  # fmt: skip


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
    if type(raw) is str:  # the common case first
        text: str | None = raw
    elif isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 < raw < 65536 else None
    else:
        text = as_text(raw)
    if text is None or not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        return None
    port = int(text)
    return port if 0 < port < 65536 else None


def parse_length(raw: object) -> int | None:
    """Return a byte count from a decimal string (a Content-Length), or None for anything else."""
    if isinstance(raw, str) and 0 < len(raw) <= 18 and raw.isascii() and raw.isdigit():
        return int(raw)
    return None


def parse_scheme(raw: str) -> str | None:
    """Return a URL scheme lowercased (RFC 3986 section 3.1), or None if it is not one."""
    scheme = raw.lower()
    return scheme if _SCHEME.fullmatch(scheme) else None


def split_host(host: str) -> tuple[str | None, int | None]:
    """Split a Host header into (address, port); address None if invalid, port None if absent or bad.

    Userinfo before "@" is dropped, IPv6 brackets are stripped, the split is at the last ":" outside
    "[...]".
    """
    address, port = _host_parts(host)
    return address, parse_port(port) if port else None


def parse_host(host: str) -> tuple[str, int | None] | None:
    """Return a Host header's (address, port), the port None when absent (or empty, as RFC 3986
    allows); None when the name or a given port is invalid, so that neither half is paired with
    another source's (`example.com:99999` must not become `example.com` with SERVER_PORT's port)."""
    address, port_text = _host_parts(host)
    if address is None:
        return None
    port = parse_port(port_text) if port_text else None
    return None if port_text and port is None else (address, port)


def _host_parts(host: str) -> tuple[str | None, str]:
    """Split a Host header into its address (None if invalid) and the port text after ":" ("" if none)."""
    text = host.strip().rpartition("@")[2]
    if text.startswith("["):
        end = text.find("]")
        literal, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or _IP_LITERAL.fullmatch(literal) is None or rest[:1] not in ("", ":"):
            return None, ""
        return literal[1:-1], rest[1:]
    name, colon, port = text.rpartition(":")
    if not colon:
        name, port = text, ""
    # A plain DNS name or IPv4 address needs no regex (the common case); anything else is checked.
    plain = name.replace(".", "").replace("-", "")
    if not (plain.isalnum() and plain.isascii()) and _REG_NAME.fullmatch(name) is None:
        return None, ""
    return name.lower(), port


def normalize_method(
    method: str, known_methods: frozenset[str] = KNOWN_METHODS, *, capture_all: bool = False
) -> str:
    """Return the method if it is known (case-sensitive) or all are captured, else `_OTHER`."""
    if method in known_methods or (capture_all and METHOD_TOKEN.fullmatch(method) is not None):
        return method
    return OTHER


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
    return upper if upper in _CGI_KEYS else "HTTP_" + upper


def environ_header_name(key: str) -> str | None:
    """Return the lowercase header name for an environ key (`HTTP_X_A` -> `x-a`), or None."""
    if key in _CGI_KEYS:
        return key.lower().replace("_", "-")
    if key.startswith("HTTP_") and len(key) > 5:
        return key[5:].lower().replace("_", "-")
    return None


def content_length(headers: ResponseHeaders) -> int | None:
    """Return the Content-Length of a response header list, or None if absent or not a number."""
    for name, value in header_pairs(headers):
        if name.lower() == "content-length":
            return parse_length(value.strip())
    return None


def header_pairs(headers: ResponseHeaders) -> list[tuple[str, str]]:
    """Return the well-formed (name, value) pairs of a header list; junk from a buggy app is skipped."""
    if not _is_sequence(headers):
        return []
    return [item for item in headers if _is_pair(item)]


def forwarded_value(forwarded: str, legacy: str, parameter: str) -> str:
    """Return a `Forwarded` parameter (RFC 7239, first element), else the first entry of the legacy
    `X-Forwarded-*` header; "" when neither has one."""
    return _forwarded_pairs(forwarded).get(parameter) or legacy.split(",", 1)[0].strip()


def forwarded_node(origin: str) -> tuple[str | None, int | None]:
    """Split a forwarded client node (`1.2.3.4`, `[2001:db8::1]:4711`, `unknown`) into address and port."""
    if origin.startswith("["):
        return split_host(origin)
    if origin.count(":") == 1:
        name, _, port_text = origin.partition(":")
        return name or None, parse_port(port_text)
    return origin, None


def netloc(address: AttributeValue | None, port: AttributeValue | None, scheme: AttributeValue) -> str | None:
    """Return `host[:port]`, the port only when it is not the scheme's default; IPv6 bracketed."""
    if not isinstance(address, str):
        return None
    host = f"[{address}]" if ":" in address else address
    if port is None or DEFAULT_PORTS.get(str(scheme)) == port:
        return host
    return f"{host}:{port}"


def request_target(target: str, redact: frozenset[str]) -> str:
    """Return a raw request target with userinfo dropped and the query redacted."""
    path, question, query = _USERINFO.sub(r"\1", target).partition("?")
    path = url_query(path, frozenset())
    return f"{path}?{url_query(query, redact)}" if question else path


def _forwarded_pairs(header: str) -> dict[str, str]:
    """Return the parameters of the first element of a `Forwarded` header, keys lowercased."""
    pairs: dict[str, str] = {}
    for part in header.split(",", 1)[0].split(";"):
        key, equals, value = part.partition("=")
        if equals:
            pairs.setdefault(key.strip().lower(), value.strip().strip('"'))
    return pairs


def _is_sequence(value: object) -> TypeGuard[Sequence[object]]:
    return isinstance(value, list | tuple)


def _is_pair(value: object) -> TypeGuard[tuple[str, str]]:
    match value:
        case (str(), str()):
            return True
        case _:
            return False


def _mentions(query: str, keys: frozenset[str]) -> bool:
    """True if any key may occur in the query (also percent- or plus-encoded): worth splitting it."""
    if "%" in query or "+" in query:
        return True
    for key in keys:
        if key in query:
            return True
    return False


def as_text(value: object) -> str | None:
    """Return a WSGI value as text: str as is, bytes as latin-1 (PEP 3333), anything else as None."""
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
