"""HTTP server metrics that agree with the spans: measured from the same instants, cheap per request.

Active requests are an observable up-down counter fed by an in-process count (the SDK's synchronous
`add` pair costs as much as a span). The attribute sets come ready-made in a `MetricRecord`
(`otel_wsgi.finish`); this module only records them.
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
from otel_wsgi.types import AttributeValue, MetricRecord, RequestHead, Scope

#: Bucket advice for `http.server.request.duration` (seconds), from the HTTP semantic conventions.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Distinct active-request keys kept per wrap(); beyond this (junk methods with capture_all_methods) keys are
# built per request, and memory stays bounded.
_KEY_LIMIT: Final = 2048
_Key = tuple[tuple[str, AttributeValue], ...]


class _Registry:
    """The instruments of one meter provider, shared by every `wrap()` on it.

    The SDK keeps the first instrument of a name and drops a second callback, so one observable
    counter must serve every wrapped app on the provider.
    """

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.lock = threading.Lock()
        self.active: dict[_Key, int] = {}
        self.histograms: dict[str, Histogram] = {}
        meter.create_observable_up_down_counter(
            sc.HTTP_SERVER_ACTIVE_REQUESTS,
            callbacks=[self.observe],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            items = list(self.active.items())
        return [Observation(count, dict(key)) for key, count in items]

    def add(self, key: _Key, amount: int) -> None:
        with self.lock:
            self.active[key] = self.active.get(key, 0) + amount

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

    __slots__ = ("registry", "stable", "old", "duration", "old_duration", "sizes", "keys")

    def __init__(self, registry: _Registry, config: Config) -> None:
        self.registry = registry
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
        self.keys: dict[tuple[str, str], _Key] = {}

    def begin(self, head: RequestHead) -> _Key:
        """Count a request as active; return the key to pass to `end` (prepared once per method, scheme)."""
        key = self.keys.get((head.method, head.scheme))
        if key is None:
            pairs: list[tuple[str, AttributeValue]] = []
            if self.stable:
                pairs += [(sc.HTTP_REQUEST_METHOD, head.method), (sc.URL_SCHEME, head.scheme)]
            if self.old:
                pairs += [(sc.OLD_HTTP_METHOD, head.method), (sc.OLD_HTTP_SCHEME, head.scheme)]
            key = tuple(pairs)
            if len(self.keys) < _KEY_LIMIT:
                self.keys[head.method, head.scheme] = key
        self.registry.add(key, 1)
        return key

    def end(
        self,
        active: _Key,
        record: MetricRecord,
        start: int,
        end: int,
        ctx: Context,
        sizes: tuple[int | None, int] | None,
    ) -> None:
        """Record a finished request: its duration between the span's own start and end instants, and
        (with body-size metrics) the request's Content-Length and the response's bytes."""
        self.registry.add(active, -1)
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
