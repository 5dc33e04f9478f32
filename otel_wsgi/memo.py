"""Bounded memo tables for the pure functions: one set per `Config`, so a cached value needs no config key.

A pure function of a few request values (the Host header, the method, the user agent...) gives the same
result for the same values, so its result can be kept and handed out again. Those values are chosen by
the client, so every table is bounded: when one is full it is emptied and starts again, which costs a
flood of distinct values one `clear()` per `MEMO_LIMIT` new values (no per-request eviction) and lets
hot values come back after a flood. Only short, exact `str` inputs are kept (see `keepable`), so memory
stays bounded too. This is the only mutable state of the pure layer; what it holds never changes a
result, only how fast it comes.
"""

from __future__ import annotations

from typing import Final, TypeVar

from otel_wsgi.types import RequestHead

#: Entries a table keeps before it is emptied.
MEMO_LIMIT: Final = 512
#: Longest input value kept (a DNS name is at most 253 characters; most user agents are under 300).
MEMO_VALUE_LIMIT: Final = 512

#: The key of a request head: the raw environ values it is computed from (see `otel_wsgi.pure`).
HeadKey = tuple[object, ...]
_K = TypeVar("_K")
_V = TypeVar("_V")


class Memo:
    """The memo tables of one `Config`: request heads by their inputs, user agents by value."""

    __slots__ = ("heads", "agents")

    def __init__(self) -> None:
        self.heads: dict[HeadKey, RequestHead] = {}
        #: user agent -> (`user_agent.original`, `user_agent.synthetic.type`)
        self.agents: dict[str, tuple[str, str | None]] = {}


def keepable(values: tuple[object, ...]) -> bool:
    """True if every value is None or an exact, short `str`: a key whose equality means equal inputs.

    Exact types only: `1`, `1.0` and `True` are equal keys but not equal inputs; a `str` subclass may
    redefine equality.
    """
    for value in values:
        if value is not None and (type(value) is not str or len(value) > MEMO_VALUE_LIMIT):
            return False
    return True


def remember(table: dict[_K, _V], key: _K, value: _V) -> _V:
    """Keep `value` under `key` and return it; a full table is emptied first (bounded, no eviction order)."""
    if len(table) >= MEMO_LIMIT:
        table.clear()
    table[key] = value
    return value
