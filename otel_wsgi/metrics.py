"""HTTP server metrics that agree with the spans: measured from the same instants, cheap per request.

Active requests are an observable up-down counter fed by an in-process count (the SDK's synchronous
`add` pair costs as much as a span); attribute sets are prepared once per distinct combination.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from opentelemetry import metrics
from opentelemetry.metrics import (
    CallbackOptions,
    Histogram,
    Meter,
    MeterProvider,
    NoOpMeterProvider,
    Observation,
)

from otel_wsgi import semconv as sc
from otel_wsgi._version import __version__
from otel_wsgi.config import Config
from otel_wsgi.pure import parse_length, parse_port
from otel_wsgi.types import SCHEMA_URL, AttributeValue, RequestHead

if TYPE_CHECKING:
    from otel_wsgi.effects import TracedRequest

#: Bucket advice for `http.server.request.duration` (seconds), from the HTTP semantic conventions.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Distinct attribute sets kept per wrap(), all series together; beyond this (a flood of routes or junk
# protocol versions) sets are built per request, and memory stays bounded.
_CACHE_LIMIT: Final = 2048
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


_REGISTRIES: Final[weakref.WeakKeyDictionary[MeterProvider, _Registry]] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK: Final = threading.Lock()


def metrics_for(provider: MeterProvider | None, config: Config) -> Metrics | None:
    """Return the metrics of one `wrap()`, or None when the provider is explicitly a no-op."""
    if isinstance(provider, NoOpMeterProvider):
        return None
    source = metrics.get_meter_provider() if provider is None else provider
    with _REGISTRIES_LOCK:
        registry = _REGISTRIES.get(source)
        if registry is None:
            meter = source.get_meter("otel_wsgi", __version__, schema_url=SCHEMA_URL)
            registry = _REGISTRIES[source] = _Registry(meter)
    return Metrics(registry, config)


class Metrics:
    """The instruments one `wrap()` records into, and its cache of prepared attribute sets."""

    __slots__ = ("registry", "stable", "old", "duration", "old_duration", "sizes", "series", "cached")

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
        self.series: dict[tuple[str, str, str | None], _Series] = {}
        self.cached = 0  # attribute sets cached across all series (a benign race may overshoot by a few)

    def series_for(self, head: RequestHead) -> _Series:
        """Return the series of a request's method, scheme and version, prepared once per combination."""
        found = self.series.get((head.method, head.scheme, head.version))
        if found is not None:
            return found
        pairs: list[tuple[str, AttributeValue]] = []
        if self.stable:
            pairs += [(sc.HTTP_REQUEST_METHOD, head.method), (sc.URL_SCHEME, head.scheme)]
        if self.old:
            pairs += [(sc.OLD_HTTP_METHOD, head.method), (sc.OLD_HTTP_SCHEME, head.scheme)]
        found = _Series(tuple(pairs))
        if len(self.series) < _CACHE_LIMIT:
            self.series[head.method, head.scheme, head.version] = found
        return found

    def begin(self, series: _Series) -> None:
        self.registry.add(series.active, 1)

    def record(self, request: TracedRequest, end: int) -> None:
        """Record one finished request: duration from the span's own start and end instants."""
        self.registry.add(request.series.active, -1)
        stable, old = self.attributes(request)
        seconds = max(end - request.start, 0) / 1e9
        if self.duration is not None:
            self.duration.record(seconds, stable, context=request.context)
        if self.old_duration is not None:
            self.old_duration.record(seconds * 1000, old, context=request.context)
        if self.sizes is not None:
            self.record_sizes(self.sizes, request, stable)

    @staticmethod
    def record_sizes(
        sizes: tuple[Histogram, Histogram], request: TracedRequest, attributes: Mapping[str, AttributeValue]
    ) -> None:
        """Record body sizes: the request's valid Content-Length; the bytes the response carried."""
        request_size = parse_length(request.environ.get("CONTENT_LENGTH"))
        if request_size is not None:
            sizes[0].record(request_size, attributes, context=request.context)
        response = request.response
        sent = request.sent
        if request.file_response and response is not None and response.content_length is not None:
            sent = response.content_length  # the server sends the file itself (sendfile)
        sizes[1].record(sent, attributes, context=request.context)

    def attributes(
        self, request: TracedRequest
    ) -> tuple[Mapping[str, AttributeValue], Mapping[str, AttributeValue]]:
        """Return the (stable, old) duration attribute sets, prepared once per distinct combination."""
        head, response, route = request.head, request.response, request.route
        code = None if response is None else response.status_code
        error = request.error
        error_type = type(error).__qualname__ if error is not None else None
        if error_type is None and response is not None:
            value = response.attributes.get(sc.ERROR_TYPE)
            error_type = value if isinstance(value, str) else None
        server = None
        if self.old:
            name = request.environ.get("SERVER_NAME")  # narrowed here: the key must be hashable
            limit = request.config.max_attribute_length
            server = (
                name[:limit] if isinstance(name, str) else None,
                parse_port(request.environ.get("SERVER_PORT")),
            )
        sets = request.series.sets
        key = (code, route, error_type, server)
        found = sets.get(key)
        if found is None:
            found = (_stable_set(head, code, route, error_type), _old_set(head, code, server))
            if self.cached < _CACHE_LIMIT:  # one budget for every series: bounded memory
                self.cached += 1
                sets[key] = found
        return found


class _Series:
    """One method, scheme and protocol version: the key it counts under while active, and its duration
    attribute sets by status, route and error (so a request builds no tuple or dict of its own)."""

    __slots__ = ("active", "sets")

    def __init__(self, active: _Key) -> None:
        self.active = active
        self.sets: dict[
            tuple[object, ...], tuple[Mapping[str, AttributeValue], Mapping[str, AttributeValue]]
        ] = {}


def _stable_set(
    head: RequestHead, code: int | None, route: str | None, error_type: str | None
) -> dict[str, AttributeValue]:
    pairs = (
        (sc.HTTP_REQUEST_METHOD, head.method),
        (sc.URL_SCHEME, head.scheme),
        (sc.NETWORK_PROTOCOL_VERSION, head.version),
        (sc.HTTP_RESPONSE_STATUS_CODE, code),
        (sc.HTTP_ROUTE, route),
        (sc.ERROR_TYPE, error_type),
    )
    return {key: value for key, value in pairs if value is not None}


def _old_set(
    head: RequestHead, code: int | None, server: tuple[str | None, int | None] | None
) -> dict[str, AttributeValue]:
    name, port = (None, None) if server is None else server
    pairs = (
        (sc.OLD_HTTP_METHOD, head.method),
        (sc.OLD_HTTP_SCHEME, head.scheme),
        (sc.OLD_HTTP_FLAVOR, head.version),
        (sc.OLD_HTTP_STATUS_CODE, code),
        (sc.OLD_HTTP_SERVER_NAME, name or None),
        (sc.OLD_NET_HOST_PORT, port),
    )
    return {key: value for key, value in pairs if value is not None}
