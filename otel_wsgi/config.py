"""`Config`: everything a user can tune, validated once, plus the one reader of environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from otel_wsgi.memo import Memo
from otel_wsgi.types import (
    KNOWN_METHODS,
    OTHER,
    REDACT_QUERY_PARAMS,
    REDACTED,
    REDACTED_HEADER,
    SANITIZE_HEADERS,
    SemconvMode,
)
from otel_wsgi.values import METHOD_TOKEN, header_environ_key

_MODES: Final = ("stable", "old", "dup")
#: The smallest `max_attribute_length`: the longest value we write ourselves (`[REDACTED]`) must fit it.
MIN_ATTRIBUTE_LENGTH: Final = max(len(value) for value in (*REDACTED_HEADER, REDACTED, OTHER))
# A capture entry made only of these characters is a plain header name, looked up directly.
_LITERAL_NAME: Final = re.compile(r"[0-9A-Za-z_-]+")

#: A request header we look up directly: (environ key, lowercase name, sanitised?).
HeaderKey = tuple[str, str, bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Everything a user can tune; frozen, validated on construction, cheap to read per request.

    Args:
        semconv: "stable" (current HTTP semantic conventions), "old" (the reference's default
            names) or "dup" (both on one span).
        excluded_urls: regexes searched in `{scheme}://{host}{path}`; a match is not traced.
        capture_request_headers: regexes matched in full, case-insensitively, against lowercase
            request header names to record as `http.request.header.<name>`.
        capture_response_headers: the same for response headers.
        sanitize_headers: regexes searched in header names; a match records `[REDACTED]`.
        known_methods: methods kept as they are; any other becomes `_OTHER`.
        capture_all_methods: keep every method as sent (cardinality risk: off by default).
        redact_query_params: query keys (case-sensitive) whose values become `REDACTED`.
        max_attribute_length: every string attribute, span name, status description and exception
            event attribute is cut to this many characters; at least 10 (`MIN_ATTRIBUTE_LENGTH`), so
            the values we write ourselves (`[REDACTED]`, `_OTHER`) fit.
        body_size_metrics: also record request and response body sizes.
        trust_remote_context: False starts a new trace linked to the incoming one.
        forwarded_headers: take client, scheme and host from proxy headers (trusted proxies only).
        traceresponse: add a W3C `traceresponse` header to every traced response.

    Raises:
        ValueError: a field has the wrong type or an invalid value; the message names the field.
    """

    semconv: SemconvMode = "stable"
    excluded_urls: tuple[str, ...] = ()
    capture_request_headers: tuple[str, ...] = ()
    capture_response_headers: tuple[str, ...] = ()
    sanitize_headers: tuple[str, ...] = SANITIZE_HEADERS
    known_methods: frozenset[str] = KNOWN_METHODS
    capture_all_methods: bool = False
    redact_query_params: frozenset[str] = REDACT_QUERY_PARAMS
    max_attribute_length: int = 4096
    body_size_metrics: bool = False
    trust_remote_context: bool = True
    forwarded_headers: bool = False
    traceresponse: bool = False
    # Derived once in __post_init__, read per request.
    excluded_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    request_header_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    request_header_keys: tuple[HeaderKey, ...] | None = field(init=False, repr=False, compare=False)
    response_header_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    sanitize_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    # The pure functions' bounded memo tables for this configuration (`otel_wsgi.memo`).
    memo: Memo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            object.__setattr__(self, name, check(name, getattr(self, name)))
        sanitize = _compile(self.sanitize_headers, re.IGNORECASE)
        derived = {
            "excluded_re": _compile(self.excluded_urls, 0),
            "request_header_re": _compile(self.capture_request_headers, re.IGNORECASE),
            "request_header_keys": _header_keys(self.capture_request_headers, sanitize),
            "response_header_re": _compile(self.capture_response_headers, re.IGNORECASE),
            "sanitize_re": sanitize,
            "memo": Memo(),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build a Config from environment variables (default: the process environment).

        Raises:
            ValueError: a variable holds junk; the message names the field and the variable.
        """
        source = os.environ if env is None else env
        kwargs: dict[str, Any] = {}  # each value is checked by its field's validator below
        for name, (variables, parse) in _ENV_FIELDS.items():
            present = [var for var in variables if var in source]
            if not present:
                continue
            var = present[0]
            try:
                value = parse(source[var])
                if value is not None:
                    kwargs[name] = _CHECKS[name](name, value)
            except ValueError as exc:
                raise ValueError(f"{exc} (from environment variable {var})") from None
        return cls(**kwargs)


def _check_mode(name: str, value: object) -> object:
    if value not in _MODES:
        raise ValueError(f"{name}: expected one of {', '.join(_MODES)}, got {value!r}")
    return value


def _check_strings(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{name}: expected a tuple of strings, got {value!r}")
    items: list[str] = []
    for item in value:  # pyright: ignore[reportUnknownVariableType]  (narrowed just below)
        if not isinstance(item, str) or not item:
            raise ValueError(f"{name}: expected non-empty strings, got {item!r}")
        items.append(item)
    return tuple(items)


def _check_patterns(name: str, value: object) -> tuple[str, ...]:
    """Check a tuple of regexes here, so a bad one from the environment names its variable too."""
    items = _check_strings(name, value)
    for item in items:
        try:
            re.compile(item)
        except re.error as exc:
            raise ValueError(f"{name}: invalid regular expression {item!r}: {exc}") from None
    try:
        _compile(items, 0)  # valid alone, but one alternation must hold them all (flags, group names)
    except re.error as exc:
        raise ValueError(f"{name}: these regular expressions cannot be combined: {exc}") from None
    return items


def _check_set(name: str, value: object) -> frozenset[str]:
    return frozenset(_check_strings(name, value))


def _check_methods(name: str, value: object) -> frozenset[str]:
    items = _check_set(name, value)
    for item in items:
        if METHOD_TOKEN.fullmatch(item) is None:
            raise ValueError(f"{name}: {item!r} is not an HTTP method token")
    return items


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def _check_length(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_ATTRIBUTE_LENGTH:
        raise ValueError(f"{name}: expected an integer of at least {MIN_ATTRIBUTE_LENGTH}, got {value!r}")
    return value


_CHECKS: Final[dict[str, Callable[[str, object], object]]] = {
    "semconv": _check_mode,
    "excluded_urls": _check_patterns,
    "capture_request_headers": _check_patterns,
    "capture_response_headers": _check_patterns,
    "sanitize_headers": _check_patterns,
    "known_methods": _check_methods,
    "capture_all_methods": _check_bool,
    "redact_query_params": _check_set,
    "max_attribute_length": _check_length,
    "body_size_metrics": _check_bool,
    "trust_remote_context": _check_bool,
    "forwarded_headers": _check_bool,
    "traceresponse": _check_bool,
}


def _compile(patterns: tuple[str, ...], flags: int) -> re.Pattern[str] | None:
    """Join regexes into one alternation, or None when there are none (the feature is off)."""
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), flags)  # each was checked alone


def _header_keys(patterns: tuple[str, ...], sanitize: re.Pattern[str] | None) -> tuple[HeaderKey, ...] | None:
    """Map plain header names to environ keys, so capture needs no scan; None if any is a regex."""
    if not all(_LITERAL_NAME.fullmatch(p) for p in patterns):
        return None
    keys: dict[str, HeaderKey] = {}
    for pattern in patterns:
        # Sanitise on the dashed name the attribute carries: `x_api_key` captures `x-api-key`.
        name = pattern.lower().replace("_", "-")
        key = header_environ_key(name)
        keys[key] = (key, name, bool(sanitize and sanitize.search(name)))
    return tuple(keys.values())


# --- environment variables (the names users already set for the reference instrumentation) ---


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_mode(raw: str) -> str:
    tokens = {part.strip() for part in raw.split(",")}
    return "dup" if "http/dup" in tokens else "stable"


def _parse_sanitize(raw: str) -> tuple[str, ...]:
    return SANITIZE_HEADERS + _parse_list(raw)


def _parse_methods(raw: str) -> frozenset[str] | None:
    return frozenset(_parse_list(raw)) or None


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0", ""):
        return False
    raise ValueError(f"capture_all_methods: expected true, 1, false or 0, got {raw!r}")


_ENV_FIELDS: Final[dict[str, tuple[tuple[str, ...], Callable[[str], object]]]] = {
    "semconv": (("OTEL_SEMCONV_STABILITY_OPT_IN",), _parse_mode),
    "excluded_urls": (("OTEL_PYTHON_WSGI_EXCLUDED_URLS", "OTEL_PYTHON_EXCLUDED_URLS"), _parse_list),
    "capture_request_headers": (
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",),
        _parse_list,
    ),
    "capture_response_headers": (
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",),
        _parse_list,
    ),
    "sanitize_headers": (
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",),
        _parse_sanitize,
    ),
    "known_methods": (("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS",), _parse_methods),
    "capture_all_methods": (
        ("OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS",),
        _parse_bool,
    ),
}
