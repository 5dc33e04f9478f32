"""Properties: any app behaviour x any server behaviour x any telemetry fault, and tracing stays invisible.

Each example plays one scripted app under one scripted server twice, bare and wrapped (with a real SDK
pipeline, one part of which may be broken), and checks: the server sees the same statuses, headers,
bytes and exception objects; the app's `close()` runs as often; exactly one span ends when the tracer
works; no context stays attached; active requests return to 0; nothing keeps the request's environ,
not even until the cyclic GC runs. Two faults also have a property of their own, with more examples:
a processor whose `on_end` raises, and app exceptions on every error path.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from apps import metric_counts
from faults import (
    EndedSpans,
    Fault,
    HistogramFaultMeterProvider,
    RaisingExporter,
    RaisingProcessor,
    RaisingPropagator,
    RaisingSampler,
    TelemetryError,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from scripted import (
    AppScript,
    BodyKind,
    ErrorKind,
    RaisePlace,
    ScriptedApp,
    ServerScript,
    Transcript,
    transcript,
)
from typing_extensions import override

from otel_wsgi import Config, wrap

#: Every way the telemetry pipeline can fail under a request.
FAULTS: tuple[Fault, ...] = (
    "none", "processor_on_start", "processor_on_end", "exporter", "histogram", "sampler", "propagator",
    "request_hook", "response_hook",
)  # fmt: skip
STATUSES = st.one_of(
    st.sampled_from(["200 OK", "204 No Content", "404 Not Found", "500 Internal Server Error", "200"]),
    st.sampled_from(["", "2OO OK", "999 Nope", "600 x", "20 OK", "200OK", "\u0660\u0660\u0660 OK"]),
    st.text(max_size=12),
)


BODIES: tuple[BodyKind, ...] = ("list", "generator", "closing")


@st.composite
def app_scripts(draw: st.DrawFn, errors: tuple[ErrorKind, ...] = ("plain", "base")) -> AppScript:
    body = draw(st.sampled_from(BODIES))
    chunks = tuple(draw(st.lists(st.binary(max_size=6), max_size=4)))
    places: list[RaisePlace] = ["none", "call_before_start", "call_after_start"]
    places += [] if body == "list" else ["chunk"]
    places += ["close"] if body == "closing" else []
    return AppScript(
        body=body,
        chunks=chunks,
        status=draw(STATUSES),
        late_start=body != "list" and draw(st.booleans()),
        raise_at=draw(st.sampled_from(places)),
        raise_index=draw(st.integers(0, len(chunks))),
        error=draw(st.sampled_from(errors)),
    )


SERVERS = st.builds(ServerScript, iterate=st.none() | st.integers(0, 5), thread=st.booleans())


def tracer_works(fault: Fault) -> bool:
    return fault not in ("sampler", "processor_on_start")


@dataclass
class Outcome:
    bare: Transcript
    bare_closes: int
    traced: Transcript
    traced_closes: int
    ended: int
    context_restored: bool
    active: float
    durations: int
    freed_without_gc: bool


class TextOnly(logging.Handler):
    """Format each record (tracebacks of hostile exceptions included) and keep only the text, so no
    log record keeps a request's frames alive the way pytest's capturing handler would."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    @override
    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@contextmanager
def logs_as_text() -> Iterator[TextOnly]:
    handler = TextOnly()
    loggers = [logging.getLogger(name) for name in ("otel_wsgi", "opentelemetry")]
    saved = [(logger.propagate, logger.level) for logger in loggers]
    for logger in loggers:
        logger.propagate, logger.level = False, logging.DEBUG
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, (propagate, level) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.propagate, logger.level = propagate, level


def raising_hook(*args: object) -> None:
    raise TelemetryError("hook failed")


def wrap_options(fault: Fault, tracer_provider: TracerProvider, meters: MeterProvider) -> dict[str, Any]:
    options: dict[str, Any] = {"config": Config(), "tracer_provider": tracer_provider}
    options["meter_provider"] = HistogramFaultMeterProvider(meters) if fault == "histogram" else meters
    if fault == "propagator":
        options["propagator"] = RaisingPropagator()
    if fault in ("request_hook", "response_hook"):
        options[fault] = raising_hook
    return options


def play(script: AppScript, server: ServerScript, fault: Fault) -> Outcome:
    """Serve the script bare, then wrapped with `fault` in the telemetry pipeline."""
    bare_app = ScriptedApp(script)
    bare = transcript(bare_app, bare_app, server)
    ended = EndedSpans()
    tracer_provider = TracerProvider(sampler=RaisingSampler() if fault == "sampler" else ALWAYS_ON)
    tracer_provider.add_span_processor(ended)
    if fault == "exporter":
        tracer_provider.add_span_processor(SimpleSpanProcessor(RaisingExporter()))
    if fault in ("processor_on_start", "processor_on_end"):
        tracer_provider.add_span_processor(RaisingProcessor("on_start" if "start" in fault else "on_end"))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    scripted = ScriptedApp(script)
    before = context.get_current()
    gc.disable()
    try:
        with logs_as_text():
            traced = transcript(
                wrap(scripted, **wrap_options(fault, tracer_provider, meters)), scripted, server
            )
        freed_without_gc = traced.environ() is None
    finally:
        gc.enable()
    active, durations = metric_counts(reader)
    tracer_provider.shutdown()
    meters.shutdown()
    return Outcome(
        bare, bare_app.close_calls, traced, scripted.close_calls, len(ended.ended),
        context.get_current() == before, active, durations, freed_without_gc,
    )  # fmt: skip


def check_invisible_and_balanced(outcome: Outcome, fault: Fault) -> None:
    assert outcome.traced.events == outcome.bare.events
    assert outcome.traced_closes == outcome.bare_closes
    assert outcome.ended == (1 if tracer_works(fault) else 0)
    assert outcome.context_restored
    assert outcome.active == 0
    measured = tracer_works(fault) and fault != "histogram"
    assert outcome.durations == 1 if measured else outcome.durations <= 1
    gc.collect(1)  # what the cyclic GC frees is not a leak; anything still alive after it is
    assert outcome.traced.environ() is None


@given(script=app_scripts(), server=SERVERS, fault=st.sampled_from(FAULTS))
def test_tracing_is_invisible_to_the_server_and_balanced_under_any_fault(
    script: AppScript, server: ServerScript, fault: Fault
) -> None:
    outcome = play(script, server, fault)
    check_invisible_and_balanced(outcome, fault)
    assert outcome.freed_without_gc  # on error paths too: freed by reference counting, at once


@settings(max_examples=50)
@given(script=app_scripts(errors=("hostile",)), server=SERVERS, fault=st.sampled_from(FAULTS))
def test_exceptions_whose_str_raises_are_absorbed_too(
    script: AppScript, server: ServerScript, fault: Fault
) -> None:
    check_invisible_and_balanced(play(script, server, fault), fault)


@settings(max_examples=50)
@given(script=app_scripts(), server=SERVERS)
def test_processor_raising_on_end_is_absorbed_too(script: AppScript, server: ServerScript) -> None:
    check_invisible_and_balanced(play(script, server, "processor_on_end"), "processor_on_end")


@settings(max_examples=50)
@given(script=app_scripts(errors=("plain",)), server=SERVERS)
def test_error_paths_free_the_request_without_the_cyclic_gc(script: AppScript, server: ServerScript) -> None:
    outcome = play(script, server, "none")
    assert outcome.freed_without_gc
