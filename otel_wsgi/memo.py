"""Bounded memo tables for the pure functions: one set per `Config`, so a cached value needs no config key.

A pure function of a few request values (the Host header, the method, the user agent...) gives the same
result for the same values, so its result can be kept and handed out again. Those values are chosen by
the client, so every table is bounded: once full it keeps what it has and stops inserting, so a flood of
distinct values costs each request only a failed lookup (no eviction, no growth). After `MEMO_RESET`
such misses it starts over, so traffic that changes (a new Host, new browser versions) is kept again
after a while. Only short, exact `str` inputs are kept (see `keepable`), so memory stays bounded too.
This is the only mutable state of the pure layer; what it holds never changes a result, only how fast
it comes.
"""

from __future__ import annotations

from typing import Final, TypeVar

from otel_wsgi.types import RequestHead

#: Entries a table keeps before it is emptied.
MEMO_LIMIT: Final = 512
#: Misses a full table takes before it is emptied and filled again.
MEMO_RESET: Final = 16 * MEMO_LIMIT
#: Longest input value kept (a DNS name is at most 253 characters; most user agents are under 300).
MEMO_VALUE_LIMIT: Final = 512

#: The key of a request head: the raw environ values it is computed from (see `otel_wsgi.pure`).
HeadKey = tuple[object, ...]
_K = TypeVar("_K")
_V = TypeVar("_V")


class Table(dict[_K, _V]):
    """A memo table: a dict (its `get` is the lookup) that counts the misses it takes once full."""

    __slots__ = ("misses",)

    def __init__(self) -> None:
        super().__init__()
        self.misses = 0


class Memo:
    """The memo tables of one `Config`: request heads by their inputs, user agents by value."""

    __slots__ = ("heads", "agents")

    def __init__(self) -> None:
        self.heads: Table[HeadKey, RequestHead] = Table()
        #: user agent -> (`user_agent.original`, `user_agent.synthetic.type`)
        self.agents: Table[str, tuple[str, str | None]] = Table()


def keepable(values: tuple[object, ...]) -> bool:
    """True if every value is None or an exact, short `str`: a key whose equality means equal inputs.

    Exact types only: `1`, `1.0` and `True` are equal keys but not equal inputs; a `str` subclass may
    redefine equality.
    """
    for value in values:
        if value is not None and (type(value) is not str or len(value) > MEMO_VALUE_LIMIT):
            return False
    return True


def remember(table: Table[_K, _V], key: _K, value: _V) -> _V:
    """Keep `value` under `key` unless the table is full, and return it; a full table is emptied after
    `MEMO_RESET` values it could not keep."""
    if len(table) < MEMO_LIMIT:
        table[key] = value
    else:
        table.misses += 1
        if table.misses >= MEMO_RESET:
            table.clear()
            table.misses = 0
    return value
