"""Shared fixtures: a real SDK tracer and meter provider per test, never the globals.

`provider` samples with the `sampler` fixture: a `RecordingSampler` that decides as the SDK's default
does. A test that needs another sampler parametrizes `sampler` directly, which overrides the fixture:
`@pytest.mark.parametrize("sampler", [ALWAYS_OFF])`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial

import pytest
from apps import RecordingSampler, Traced
from hypothesis import HealthCheck, settings
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from otel_wsgi import Config, wrap

settings.register_profile(
    "ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile(
    "dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# HYPOTHESIS_PROFILE=stress: a long hunt, by hand, for the inputs a CI run is too short to meet.
settings.register_profile(
    "stress", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def sampler() -> Sampler:
    """The sampler of `provider`; a `RecordingSampler` unless the test parametrizes `sampler`."""
    return RecordingSampler()


@pytest.fixture
def provider(sampler: Sampler, exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield tracer_provider
    tracer_provider.shutdown()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def meter_provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


@pytest.fixture
def traced(provider: TracerProvider, meter_provider: MeterProvider) -> Traced:
    """`wrap` bound to the test's providers and a default Config (never the process environment)."""
    return partial(wrap, config=Config(), tracer_provider=provider, meter_provider=meter_provider)
