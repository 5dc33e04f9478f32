"""Memory: nothing grows with client-chosen values, and nothing of a request outlives it.

The growth tests serve three batches of requests through a real SDK pipeline whose exporter discards
spans, and compare tracemalloc's count of live bytes after the second and the third: once the
middleware's bounded caches are full, a further batch of new paths, ports, agents, methods and schemes
must not leave anything behind. `benchmarks/memory.py` is the 100,000-request version of this.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pytest
from apps import (
    Failures,
    Server,
    WeakEnviron,
    close_body,
    list_app,
    make_environ,
)
from faults import DiscardingExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from otel_wsgi import Config, wrap

BATCH = 2200  # more than the 2048 attribute sets the middleware caches, so the caches fill first
# Well under what one retained request costs (about 460 bytes each, so 1 MB per batch), well over
# the noise of a batch that leaves nothing behind.
GROWTH_LIMIT = 150_000
Variation = Callable[[int], dict[str, object]]


def ordinary(n: int) -> dict[str, object]:
    """Values clients choose freely but that the middleware never keeps: paths, ports, agents."""
    return {
        "PATH_INFO": f"/items/{n}",
        "QUERY_STRING": f"page={n}",
        "REMOTE_PORT": str(1024 + n % 60000),
        "HTTP_USER_AGENT": f"agent/{n}",
    }


def client_chosen(n: int) -> dict[str, object]:
    """Plus a new method and forwarded scheme per request (capture_all_methods, forwarded_headers)."""
    return {**ordinary(n), "REQUEST_METHOD": f"M{n}", "HTTP_X_FORWARDED_PROTO": f"s{n}"}


@pytest.fixture
def pipeline() -> Iterator[tuple[WSGIApplication, InMemoryMetricReader]]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(DiscardingExporter()))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    config = Config(capture_all_methods=True, forwarded_headers=True)
    yield (
        wrap(
            list_app([b"hello"]),
            config=config,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        ),
        reader,
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()


def serve_batch(app: WSGIApplication, variation: Variation, first: int) -> None:
    for n in range(first, first + BATCH):
        body = app(make_environ(variation(n)), Server().start_response)
        for _ in body:
            pass
        close_body(body)


def growth_of_third_batch(app: WSGIApplication, reader: InMemoryMetricReader, variation: Variation) -> int:
    """Live bytes a third batch of new values adds, once a first batch filled every cache.

    Measured between the ends of the second and third batches, both traced: the SDK replaces some of its
    per-series state at each collection (a histogram's previous point), and an object allocated in the
    second batch and replaced in the third is churn, not growth. Only these two batches pay tracemalloc's
    overhead.
    """
    serve_batch(app, variation, 0)
    reader.get_metrics_data()
    gc.collect()
    tracemalloc.start()
    try:
        serve_batch(app, variation, BATCH)
        reader.get_metrics_data()  # a collection walks every active-requests series
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        serve_batch(app, variation, 2 * BATCH)
        reader.get_metrics_data()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_with_new_paths_ports_and_agents(
    pipeline: tuple[WSGIApplication, InMemoryMetricReader],
) -> None:
    assert growth_of_third_batch(*pipeline, ordinary) < GROWTH_LIMIT


def test_memory_stays_flat_with_client_chosen_methods_and_schemes(
    pipeline: tuple[WSGIApplication, InMemoryMetricReader],
) -> None:
    assert growth_of_third_batch(*pipeline, client_chosen) < GROWTH_LIMIT


# --- nothing of a request outlives it ---


class FailingBody:
    """A body with `close` that raises its error once, from the first `next()` or from `close()`.

    It lets go of the error as it raises it: an error kept on the object whose frame raised it would
    make a cycle of its own (error -> traceback -> frame -> self -> error), with or without the
    middleware, and this test would measure that instead.
    """

    def __init__(self, where: str, error: BaseException) -> None:
        self.errors = {where: error}

    def __iter__(self) -> FailingBody:
        return self

    def __next__(self) -> bytes:
        if "iteration" in self.errors:
            raise self.errors.pop("iteration")
        raise StopIteration

    def close(self) -> None:
        if "close" in self.errors:
            raise self.errors.pop("close")


def request_leftovers(
    where: str, tracer_provider: TracerProvider, meter_provider: MeterProvider, *, traced: bool = True
) -> list[str]:
    """Serve one request that fails at `where` (or nowhere), drop every reference the server holds,
    and return what is still alive without help from the cyclic GC: environ, body, exception."""
    error = Failures.AppError("boom")
    result = FailingBody(where, error)
    environ = WeakEnviron(make_environ())
    alive: dict[str, Callable[[], object]] = {
        "environ": weakref.ref(environ),
        "body": weakref.ref(result),
        "exception": weakref.ref(error),
    }
    app = app_failing_at_call(error) if where == "call" else app_returning(result)
    if traced:
        app = wrap(app, config=Config(), tracer_provider=tracer_provider, meter_provider=meter_provider)
    del error, result
    gc.disable()
    try:
        serve_and_drop(app, environ)
        del app, environ
        return [name for name, ref in alive.items() if ref() is not None]
    finally:
        gc.enable()


def app_failing_at_call(error: BaseException) -> WSGIApplication:
    # Popped, not closed over: a closure cell holding the error would tie it in a cycle of its own
    # (error -> traceback -> this frame -> cell -> error), with or without the middleware.
    pending = [error]

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        raise pending.pop()

    return app


def app_returning(result: FailingBody) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> FailingBody:
        start_response("200 OK", [])
        return result

    return app


def serve_and_drop(app: WSGIApplication, environ: WSGIEnvironment) -> None:
    """Call, iterate and close like a server, swallowing the app's errors as a server logs them."""
    try:
        body = app(environ, Server().start_response)
    except Failures.AppError:
        return
    try:
        for _ in body:
            pass
    except Failures.AppError:
        pass
    try:
        close_body(body)
    except Failures.AppError:
        pass


def test_a_successful_request_leaves_nothing_alive(
    provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    assert request_leftovers("nowhere", provider, meter_provider) == []


@pytest.mark.parametrize("where", ["call", "iteration", "close"])
def test_the_bare_app_leaves_nothing_alive_either(
    where: str, provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    # The control: this harness makes no cycle of its own, so what the traced test finds is ours.
    assert request_leftovers(where, provider, meter_provider, traced=False) == []


@pytest.mark.parametrize("where", ["call", "iteration", "close"])
def test_a_failed_request_leaves_nothing_alive(
    where: str, provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    assert request_leftovers(where, provider, meter_provider) == []
