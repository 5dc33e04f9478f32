"""The response body the server sees: the server's own file wrapper with its `close` hooked, or a small
slotted iterator, never a generator (PEP 3333); and the `write` that counts the bytes it sends.

A generator wrapper cannot run its cleanup when the server closes it before the first `next()`; this
class can. The span's context is current around each step that may run app code, and only then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Final, Protocol

from opentelemetry import context
from opentelemetry.context import Context
from typing_extensions import override

# Exact types only: a subclass may override __iter__ and run code while iterating.
_SEQUENCES: Final = (list, tuple)


class Counts(Protocol):
    """The facts a body updates: the bytes sent, and whether the server sends a file itself."""

    sent: int
    file_response: bool


class Owner(Protocol):
    """What a body needs from its request: the context to attach, its facts, and where to report."""

    context: Context

    @property
    def facts(self) -> Counts: ...

    def fail(self, exc: BaseException) -> None: ...

    def close(self, inner_close: Callable[[], object] | None) -> None: ...


def response_body(result: Iterable[bytes], file_wrapper: object, owner: Owner) -> Iterable[bytes]:
    """Return what the server gets: its own `wsgi.file_wrapper` object with `close` hooked (so sendfile
    stays on), else our wrapper (`__len__` only when the app's result has one)."""
    if type(result) in _SEQUENCES:  # the common case; a list or tuple is never the server's file wrapper
        return SequenceBody(result, owner)
    if file_wrapper is not None and is_file_response(result, file_wrapper) and _hook_close(result, owner):
        return result
    # len() looks on the type; an instance probe could run a proxy's raising __getattr__.
    return (SizedBody if hasattr(type(result), "__len__") else Body)(result, owner)


def _hook_close(result: object, owner: Owner) -> bool:
    """Make the file wrapper's `close` end the request; False where `close` cannot be set (bjoern,
    meinheld), so the normal wrapper is used."""
    inner_close = close_of(result)

    def close_file() -> None:
        owner.close(inner_close)

    try:
        result.close = close_file  # type: ignore[attr-defined]  # checked by the try
    except (AttributeError, TypeError):
        return False
    owner.facts.file_response = True
    return True


def counting_write(write: Callable[[bytes], object], counts: Counts) -> Callable[[bytes], object]:
    """Return the server's `write`, adding the bytes it sends to the count (body-size metrics)."""

    def counted_write(data: bytes) -> object:
        counts.sent += len(data)
        return write(data)

    return counted_write


class Body:
    """The response iterable the server sees: the span's context is current around each step."""

    __slots__ = ("_result", "_iterator", "_request")

    def __init__(self, result: Iterable[bytes], request: Owner) -> None:
        self._result = result
        self._iterator: Iterator[bytes] | None = None
        self._request = request

    def __iter__(self) -> Body:
        return self

    def __next__(self) -> bytes:
        request = self._request
        token = context.attach(request.context)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            chunk = next(self._iterator)
        except StopIteration:
            raise
        except BaseException as exc:
            request.fail(exc)
            raise
        finally:
            context.detach(token)
        return _counted(request, chunk)

    def close(self) -> None:
        self._request.close(close_of(self._result))


class SizedBody(Body):
    """A body whose iterable has a length, which servers use for Content-Length (PEP 3333)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]  # only chosen when the result has __len__


class SequenceBody(SizedBody):
    """A list or tuple body: iterating it runs no app code, so no context is attached per chunk."""

    __slots__ = ()

    def __init__(self, result: Iterable[bytes], request: Owner) -> None:
        # Body.__init__'s fields set here: the commonest body pays one call, not two.
        self._result = result
        self._iterator = iter(result)
        self._request = request

    @override
    def __next__(self) -> bytes:
        chunk: bytes = next(self._iterator)  # type: ignore[arg-type]  # set in __init__
        try:  # _counted, inlined: this runs for every chunk of the commonest body
            self._request.facts.sent += len(chunk)
        except TypeError:
            pass  # not bytes: the server will say so, not us
        return chunk


def _counted(owner: Owner, chunk: bytes) -> bytes:
    """Add a chunk's size to the bytes sent (body-size metrics) and return it."""
    try:
        owner.facts.sent += len(chunk)
    except TypeError:
        pass  # not bytes: the server will say so, not us
    return chunk


def close_of(result: object) -> Callable[[], object] | None:
    """Return the `close` of what the app returned, or None (also for a proxy whose lookup raises)."""
    try:
        close: Callable[[], object] | None = getattr(result, "close", None)
    except Exception:
        return None
    return close


def is_file_response(result: object, file_wrapper: object) -> bool:
    """True when the app returned the server's `wsgi.file_wrapper` (class or uWSGI-style builtin)."""
    if isinstance(file_wrapper, type):
        return isinstance(result, file_wrapper)
    try:
        return hasattr(result, "fileno") and hasattr(result, "read")
    except Exception:
        return False  # a proxy whose __getattr__ raises something else than AttributeError
