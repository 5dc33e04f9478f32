"""Request attributes built on first use, so a span the sampler drops never pays for them.

The attributes still go to `start_span`, so a sampler that reads them sees every one; the SDK's own
samplers (always on/off, ratio, parent-based) do not read them when they drop a span, and a dropped span
keeps none. With 1-10% sampling that is most requests: building the attributes is about a fifth of our
cost per request.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping

from typing_extensions import override

from otel_wsgi.config import Config
from otel_wsgi.pure import request_attributes
from otel_wsgi.types import Attributes, AttributeValue, Environ, RequestHead


class LazyAttributes(Mapping[str, AttributeValue]):
    """`request_attributes(environ, config, head)`, computed the first time anything reads it.

    The SDK reads a recorded span's attributes inside `start_span`; for any other tracer the middleware
    builds them right after `start_span` when the span records, so they never see the app's edits.
    """

    __slots__ = ("_environ", "_config", "_head", "_built")

    def __init__(self, environ: Environ, config: Config, head: RequestHead) -> None:
        self._environ: Environ | None = environ
        self._config = config
        self._head = head
        self._built: Attributes | None = None

    def build(self) -> None:
        """Build the attributes now, if nothing has read them yet."""
        if self._built is None:
            self._build()

    def _build(self) -> Attributes:
        environ: Environ = self._environ if self._environ is not None else {}
        built = self._built = request_attributes(environ, self._config, self._head)
        self._environ = None  # keep no reference to the request once built
        return built

    # Each method reads `_built` itself (else `_build()`): the SDK calls them on every recorded span,
    # and one more call each would cost what the mapping saves.
    @override
    def __getitem__(self, key: str) -> AttributeValue:
        return (self._built if self._built is not None else self._build())[key]

    @override
    def __iter__(self) -> Iterator[str]:
        return iter(self._built if self._built is not None else self._build())

    @override
    def __len__(self) -> int:
        return len(self._built if self._built is not None else self._build())

    # The views and lookups go straight to the built dict: the Mapping mixins would call back into
    # __iter__ and __getitem__ once per attribute, which costs more than building them.
    @override
    def items(self) -> ItemsView[str, AttributeValue]:
        return (self._built if self._built is not None else self._build()).items()

    @override
    def keys(self) -> KeysView[str]:
        return (self._built if self._built is not None else self._build()).keys()

    @override
    def __contains__(self, key: object) -> bool:
        return key in (self._built if self._built is not None else self._build())

    def copy(self) -> dict[str, AttributeValue]:
        """A plain dict of the attributes (`MappingProxyType.copy()`, as the SDK calls it, needs this)."""
        return dict(self._built if self._built is not None else self._build())
