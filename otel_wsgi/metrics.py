"""HTTP server metrics that agree with the spans: measured from the same instants, cheap per request.

Active requests are an observable up-down counter fed by an in-process count (the SDK's synchronous
`add` pair costs as much as a span), `ActiveCounts`: one lock acquisition per request start and end,
bounded however many methods and schemes clients send. The attribute sets come ready-made
(`MetricRecord`, `ActiveKey` from `otel_wsgi.finish`); this module only records them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Final

from opentelemetry import metrics
from opentelemetry.context import Context
from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    Meter,
    MeterProvider,
    NoOpMeterProvider,
    Observation,
)

from otel_wsgi import semconv as sc
from otel_wsgi.config import Config
from otel_wsgi.finish import active_key, active_overflow_key
from otel_wsgi.types import ActiveKey, AttributeValue, MetricRecord, RequestHead, Scope

#: Bucket advice for `http.server.request.duration` (seconds), from the HTTP semantic conventions.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Distinct active-request keys prepared per wrap(); beyond this (junk methods with capture_all_methods) keys
# are built per request, and memory stays bounded.
_KEY_LIMIT: Final = 2048
#: Attribute sets counted at once in `http.server.active_requests`; past it, a new client-chosen set counts
#: under the overflow set (method and scheme `_OTHER`). Lasting sets are always admitted.
ACTIVE_SETS_LIMIT: Final = 128
_Key = tuple[tuple[str, AttributeValue], ...]
# The state of a counted set (the second item of its entry): forgotten at zero, reported at zero once more
# (a collection saw it non-zero), or lasting (kept at zero forever).
_FORGET, _REPORT_ZERO, _LASTING = 0, 1, 2


class ActiveCounts:
    """Requests in flight per attribute set, observed by the active-requests callback.

    A client-chosen set lives only while it counts something: once it drains it is dropped, unless a
    collection saw it non-zero, in which case the next collection reports its zero (so a dashboard sees
    the series fall to 0 rather than freeze at its last value) and then drops it. A set that is new while
    `limit` sets are counted already counts under `overflow` instead (lasting sets are always admitted).
    Each entry is a two-item list [count, state], so `begin` and `end` hash the key once.
    """

    __slots__ = ("lock", "counts", "limit")

    def __init__(self, limit: int = ACTIVE_SETS_LIMIT) -> None:
        self.lock = threading.Lock()
        self.counts: dict[_Key, list[int]] = {}
        self.limit = limit

    def begin(self, key: ActiveKey, overflow: _Key) -> _Key:
        """Count one request under `key` (or `overflow`, past the limit); return the set to `end`."""
        attributes = key.attributes
        with self.lock:
            entry = self.counts.get(attributes)
            if entry is None:
                if not key.lasting and len(self.counts) >= self.limit:
                    attributes = overflow
                entry = self.counts.setdefault(attributes, [0, _LASTING if key.lasting else _FORGET])
            entry[0] += 1
        return attributes

    def end(self, attributes: _Key) -> None:
        """Count one request under `attributes` as finished; a drained client-chosen set may go."""
        with self.lock:
            entry = self.counts[attributes]
            entry[0] -= 1
            if not entry[0] and entry[1] == _FORGET:
                del self.counts[attributes]

    def observe(self) -> list[tuple[_Key, int]]:
        """Return every set's count for a collection; drained sets report this zero and are dropped."""
        with self.lock:
            items = [(attributes, entry[0]) for attributes, entry in self.counts.items()]
            for attributes, count in items:
                entry = self.counts[attributes]
                if entry[1] != _LASTING:
                    if count:
                        entry[1] = _REPORT_ZERO
                    else:
                        del self.counts[attributes]
        return items


class _Registry:
    """The instruments of one meter provider, shared by every `wrap()` on it.

    The SDK keeps the first instrument of a name and drops a second callback, so one observable
    counter must serve every wrapped app on the provider.
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.lock = threading.Lock()
        self.active = ActiveCounts()
        self.histograms: dict[str, Histogram] = {}
        meter.create_observable_up_down_counter(
            sc.HTTP_SERVER_ACTIVE_REQUESTS,
            callbacks=[self.observe],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, dict(key)) for key, count in self.active.observe()]

    def histogram(self, name: str, unit: str, description: str, buckets: Iterable[float] | None) -> Histogram:
        with self.lock:
            if name not in self.histograms:
                self.histograms[name] = self.meter.create_histogram(
                    name, unit=unit, description=description,
                    explicit_bucket_boundaries_advisory=None if buckets is None else list(buckets),
                )  # fmt: skip
            return self.histograms[name]


_REGISTRIES: Final[weakref.WeakKeyDictionary[MeterProvider, dict[Scope, _Registry]]] = (
    weakref.WeakKeyDictionary()
)
_REGISTRIES_LOCK: Final = threading.Lock()


def metrics_for(provider: MeterProvider | None, config: Config, scope: Scope) -> Metrics | None:
    """Return the metrics of one `wrap()`, or None when the provider is explicitly a no-op."""
    if isinstance(provider, NoOpMeterProvider):
        return None
    source = metrics.get_meter_provider() if provider is None else provider
    with _REGISTRIES_LOCK:
        registries = _REGISTRIES.setdefault(source, {})
        registry = registries.get(scope)
        if registry is None:
            meter = source.get_meter(scope.name, scope.version, schema_url=scope.schema_url)
            registry = registries[scope] = _Registry(meter)
    return Metrics(registry, config)


class Metrics:
    """The instruments one `wrap()` records into, and its active-request keys."""

    __slots__ = (
        "registry",
        "config",
        "stable",
        "old",
        "duration",
        "old_duration",
        "sizes",
        "keys",
        "overflow",
    )

    def __init__(self, registry: _Registry, config: Config) -> None:
        self.registry, self.config = registry, config
        self.stable, self.old = config.semconv != "old", config.semconv != "stable"
        self.duration = self.old_duration = None
        if self.stable:
            self.duration = registry.histogram(
                sc.HTTP_SERVER_REQUEST_DURATION, "s", "Duration of HTTP server requests.", DURATION_BUCKETS
            )
        if self.old:
            self.old_duration = registry.histogram(
                sc.OLD_HTTP_SERVER_DURATION, "ms", "Measures the duration of inbound HTTP requests.", None
            )
        self.sizes = (
            (
                registry.histogram(
                    sc.HTTP_SERVER_REQUEST_BODY_SIZE, "By", "Size of HTTP server request bodies.", None
                ),
                registry.histogram(
                    sc.HTTP_SERVER_RESPONSE_BODY_SIZE, "By", "Size of HTTP server response bodies.", None
                ),
            )
            if config.body_size_metrics and self.stable
            else None
        )
        self.keys: dict[tuple[str, str], ActiveKey] = {}
        self.overflow = active_overflow_key(config).attributes

    def begin(self, head: RequestHead) -> _Key:
        """Count a request as active; return the key to pass to `end` (prepared once per method, scheme)."""
        key = self.keys.get((head.method, head.scheme))
        if key is None:
            key = active_key(head, self.config)
            if len(self.keys) < _KEY_LIMIT:
                self.keys[head.method, head.scheme] = key
        return self.registry.active.begin(key, self.overflow)

    def end(
        self,
        active: _Key,
        record: MetricRecord | None,
        start: int,
        end: int,
        ctx: Context,
        sizes: tuple[int | None, int] | None,
    ) -> None:
        """Record a finished request: no longer active (first, whatever follows), its duration between
        the span's own start and end instants, and (with body-size metrics) the request's Content-Length
        and the response's bytes; without a record (building it failed) only the first."""
        self.registry.active.end(active)
        if record is None:
            return
        seconds = max(end - start, 0) / 1e9
        if self.duration is not None:
            self.duration.record(seconds, record.stable, context=ctx)
        if self.old_duration is not None:
            self.old_duration.record(seconds * 1000, record.old, context=ctx)
        if self.sizes is not None and sizes is not None:
            request_size, response_size = sizes
            if request_size is not None:
                self.sizes[0].record(request_size, record.stable, context=ctx)
            self.sizes[1].record(response_size, record.stable, context=ctx)
