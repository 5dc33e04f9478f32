"""The command's decisions, table-tested: exporter precedence, MODULE:APP, quantiles, console lines."""

from __future__ import annotations

import pytest

from otel_wsgi.cli.decide import (
    ExporterKind,
    Histogram,
    RouteSample,
    Signal,
    SpanView,
    app_target,
    exporter_kinds,
    merged,
    quantile,
    span_line,
    summary_lines,
)

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}

EXPORTER_CASES = [
    pytest.param(None, {}, "traces", ("console",), id="default-console"),
    pytest.param(None, ENDPOINT, "traces", ("otlp",), id="endpoint-means-otlp"),
    pytest.param(
        None,
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"},
        "metrics",
        ("otlp",),
        id="per-signal-endpoint",
    ),
    pytest.param(
        None,
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318/v1/metrics"},
        "traces",
        ("console",),
        id="other-signal-endpoint",
    ),
    pytest.param(
        None,
        {**ENDPOINT, "OTEL_TRACES_EXPORTER": "console"},
        "traces",
        ("console",),
        id="variable-beats-endpoint",
    ),
    pytest.param("none", {**ENDPOINT, "OTEL_TRACES_EXPORTER": "console"}, "traces", (), id="flag-beats-all"),
    pytest.param(None, {"OTEL_METRICS_EXPORTER": "none"}, "metrics", (), id="variable-none"),
    pytest.param(
        None,
        {"OTEL_TRACES_EXPORTER": " otlp_proto_http , Console,otlp"},
        "traces",
        ("otlp", "console"),
        id="list-normalised",
    ),
    pytest.param(None, {"OTEL_TRACES_EXPORTER": "  "}, "traces", ("console",), id="blank-variable-ignored"),
    pytest.param(
        "otlp", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "traces", ("otlp",), id="protocol-ok"
    ),
]


@pytest.mark.parametrize(("flag", "env", "signal", "expected"), EXPORTER_CASES)
def test_exporters_come_from_the_flag_else_the_environment(
    flag: str | None, env: dict[str, str], signal: Signal, expected: tuple[ExporterKind, ...]
) -> None:
    assert exporter_kinds(flag, env, signal) == expected


EXPORTER_ERRORS = [
    pytest.param("zipkin", {}, "traces", "--exporter: unknown exporter 'zipkin'", id="flag"),
    pytest.param(
        None,
        {"OTEL_METRICS_EXPORTER": "prometheus"},
        "metrics",
        "OTEL_METRICS_EXPORTER: unknown",
        id="variable",
    ),
    pytest.param(
        "otlp",
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
        "traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL: only",
        id="grpc",
    ),
    pytest.param(
        None,
        {**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
        "traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: only",
        id="per-signal-protocol",
    ),
]


@pytest.mark.parametrize(("flag", "env", "signal", "message"), EXPORTER_ERRORS)
def test_unknown_exporters_and_protocols_are_refused_naming_the_source(
    flag: str | None, env: dict[str, str], signal: Signal, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        exporter_kinds(flag, env, signal)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("app:application", ("app", "application")), ("pkg.mod:obj.wsgi", ("pkg.mod", "obj.wsgi"))],
)
def test_app_target_splits_module_and_attribute_path(raw: str, expected: tuple[str, str]) -> None:
    assert app_target(raw) == expected


@pytest.mark.parametrize("raw", ["app", ":app", "app:", "a b:c", "app:1x", "app:x:y", "app.:x", "app:x()"])
def test_malformed_app_targets_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="expected MODULE:APP"):
        app_target(raw)


BOUNDS = (1.0, 2.0, 4.0)
QUANTILE_CASES = [
    pytest.param(Histogram(BOUNDS, (0, 4, 0, 0), 1.0, 2.0), 0.5, 1.5, id="middle-of-one-bucket"),
    pytest.param(Histogram(BOUNDS, (0, 4, 0, 0), 1.0, 2.0), 0.0, 1.0, id="q0-is-min"),
    pytest.param(Histogram(BOUNDS, (0, 4, 0, 0), 1.0, 2.0), 1.0, 2.0, id="q1-is-upper-edge"),
    pytest.param(Histogram(BOUNDS, (2, 2, 0, 0), 0.5, 1.5), 0.5, 1.0, id="rank-at-bucket-edge"),
    pytest.param(Histogram(BOUNDS, (2, 2, 0, 0), 0.5, 1.5), 0.75, 1.25, id="second-bucket-clamped-to-max"),
    pytest.param(Histogram(BOUNDS, (1, 0, 0, 3), 0.2, 10.0), 0.5, 6.0, id="overflow-ends-at-max"),
    pytest.param(Histogram(BOUNDS, (4, 0, 0, 0), 0.6, 0.6), 0.95, 0.6, id="lone-value-exact"),
    pytest.param(Histogram(BOUNDS, (0, 0, 10, 0), 2.0, 4.0), 0.95, 3.9, id="p95-interpolated"),
    pytest.param(Histogram(BOUNDS, (0, 0, 0, 0), 0.0, 0.0), 0.5, None, id="empty"),
    pytest.param(Histogram(BOUNDS, (1, 1), 0.0, 1.0), 0.5, None, id="malformed-counts"),
    pytest.param(Histogram(BOUNDS, (1, 0, 0, 0), 0.0, 1.0), 1.5, None, id="q-out-of-range"),
]


@pytest.mark.parametrize(("histogram", "q", "expected"), QUANTILE_CASES)
def test_quantile_interpolates_in_its_bucket_within_min_and_max_or_is_none(
    histogram: Histogram, q: float, expected: float | None
) -> None:
    assert quantile(histogram, q) == (None if expected is None else pytest.approx(expected))


def test_merged_adds_buckets_and_keeps_extremes() -> None:
    a = Histogram(BOUNDS, (1, 2, 0, 0), 0.5, 1.5)
    b = Histogram(BOUNDS, (0, 1, 3, 1), 1.2, 7.0)
    assert merged([a, b]) == Histogram(BOUNDS, (1, 3, 3, 1), 0.5, 7.0)
    assert merged([]) is None
    assert merged([a, Histogram((1.0,), (1, 0), 0.5, 0.5)]) is None


def test_span_line_shows_name_status_duration_route_trace_and_error() -> None:
    line = span_line(SpanView("GET /users/{id}", 200, None, 0.00123), "/users/{id}", 0xAB)
    assert line.split() == [
        "GET",
        "/users/{id}",
        "200",
        "1.23",
        "ms",
        "route=/users/{id}",
        f"trace={0xAB:032x}",
    ]
    failed = span_line(SpanView("GET", None, "RuntimeError", 12.5), None, 1, remote_parent=True)
    assert failed.split()[1:] == [
        "-",
        "12.50",
        "s",
        "route=-",
        f"trace={1:032x}",
        "error=RuntimeError",
        "(continued",
        "from",
        "traceparent)",
    ]


def test_summary_lines_group_by_route_and_count_errors() -> None:
    fine = (0.001, 0.002, 0.004)
    samples = [
        RouteSample("/a", False, Histogram(fine, (0, 3, 0, 0), 0.0012, 0.0018)),
        RouteSample("/a", True, Histogram(fine, (0, 1, 0, 0), 0.0015, 0.0015)),
        RouteSample("/b", False, Histogram(fine, (0, 0, 0, 1), 0.5, 0.5)),
    ]
    header, a, b = summary_lines(samples)
    assert header.split() == ["route", "count", "p50", "p95", "errors"]
    assert a.split() == ["/a", "4", "1.50", "ms", "1.77", "ms", "1"]
    assert b.split() == ["/b", "1", "500.0", "ms", "500.0", "ms", "0"]
    assert summary_lines([]) == []
