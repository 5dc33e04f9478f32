"""The keyword arguments `instrument_app` passes on to `wrap`, typed once for every framework."""

from __future__ import annotations

from typing import TypedDict

from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import TracerProvider

from otel_wsgi.config import Config
from otel_wsgi.effects import RequestHook, ResponseHook


class WrapOptions(TypedDict, total=False):
    """`wrap`'s keyword-only parameters (a test keeps the two in step)."""

    config: Config | None
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    propagator: TextMapPropagator | None
    request_hook: RequestHook | None
    response_hook: ResponseHook | None
