"""Span names: where every span's name is decided, at its start and again when a route is reported.

A policy is a pure function of the request head and the route (`Naming`). The default keeps names low
in cardinality (`GET`, `GET /users/{id}`); the path policy names a span after the raw PATH_INFO, as the
reference instrumentation does, for drop-in compatibility only.
"""

from __future__ import annotations

from typing import Final

from otel_wsgi.types import KNOWN_METHODS, OTHER, Naming, RequestHead
from otel_wsgi.values import normalize_method


def span_name(method: str, route: str | None = None) -> str:
    """Return `{METHOD}` or `{METHOD} {route}`, with `HTTP` for `_OTHER`; never the raw path."""
    name = "HTTP" if method == OTHER else method
    return f"{name} {route}" if route else name


def route_span_name(head: RequestHead, route: str | None) -> str:
    """The default policy: `{METHOD}` until a route is reported, then `{METHOD} {route}`."""
    return span_name(head.method, route)


def path_span_name(head: RequestHead, route: str | None) -> str:
    """The reference's policy: `{METHOD} {PATH_INFO}` (the raw path, stripped), `{METHOD}` without a
    path, `HTTP` for `_OTHER`; a reported route still wins, as `{METHOD} {route}`."""
    if route or head.method == OTHER:
        return span_name(head.method, route)
    return f"{head.method} {head.path}" if head.path else head.method


def reference_method(
    raw: str, known_methods: frozenset[str] = KNOWN_METHODS, *, capture_all: bool = False
) -> str:
    """Return the method as the reference instrumentation names spans after it: stripped and
    upper-cased first (`" get "` is `GET`), then kept if known or all are captured, else `_OTHER`.

    Only `otel_wsgi.compat.get_default_span_name` uses it: our spans keep methods case-sensitive.
    """
    return normalize_method(raw.strip().upper(), known_methods, capture_all=capture_all)


#: Low-cardinality names from the method and the route (what `wrap()` uses).
ROUTE_NAMING: Final = Naming(route_span_name)
#: Names from the raw PATH_INFO, as the reference instrumentation builds them.
PATH_NAMING: Final = Naming(path_span_name, reads_path=True)
