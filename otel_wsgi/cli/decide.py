"""The command's decisions as total functions on plain values: exporters, targets, display lines, quantiles.

Standard library only (no SDK, no I/O), so each decision is table-tested on its own; the modules around it
read the environment and the SDK's data and hand the values in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

#: Where one signal goes: the readable console output, or the official OTLP/HTTP exporter.
ExporterKind: TypeAlias = Literal["console", "otlp"]
#: The two signals the command exports.
Signal: TypeAlias = Literal["traces", "metrics"]
#: The servers `serve --server` accepts.
ServerName: TypeAlias = Literal["waitress", "gunicorn", "wsgiref"]
SERVERS: Final[tuple[ServerName, ...]] = ("waitress", "gunicorn", "wsgiref")

#: The names `--exporter` and `OTEL_{TRACES,METRICS}_EXPORTER` accept (the SDK's names for the same).
EXPORTER_NAMES: Final[Mapping[str, ExporterKind | None]] = {
    "console": "console",
    "otlp": "otlp",
    "otlp_proto_http": "otlp",
    "none": None,
}
# The only OTLP protocol the bundled exporter speaks.
_OTLP_PROTOCOL: Final = "http/protobuf"
_DOTTED: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class CommandError(Exception):
    """Bad input for the command: its message is the one line printed before exiting with code 2."""


def exporter_kinds(flag: str | None, env: Mapping[str, str], signal: Signal) -> tuple[ExporterKind, ...]:
    """Return where `signal` goes: `--exporter`, else OTEL_<SIGNAL>_EXPORTER, else OTLP if an endpoint
    is set, else the console. An empty tuple means nowhere (`none`).

    Raises:
        ValueError: an unknown exporter name, or an OTLP protocol other than http/protobuf; the message
            names the flag or the variable.
    """
    variable = f"OTEL_{signal.upper()}_EXPORTER"
    if flag is not None:
        source, raw = "--exporter", flag
    elif env.get(variable, "").strip():
        source, raw = variable, env[variable]
    elif env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        source, raw = "OTEL_EXPORTER_OTLP_ENDPOINT", "otlp"
    else:
        return ("console",)
    kinds: list[ExporterKind] = []
    for name in (part.strip().lower() for part in raw.split(",")):
        if name not in EXPORTER_NAMES:
            raise ValueError(f"{source}: unknown exporter {name!r} (expected console, otlp or none)")
        kind = EXPORTER_NAMES[name]
        if kind is not None and kind not in kinds:
            kinds.append(kind)
    if "otlp" in kinds:
        _check_protocol(env, signal)
    return tuple(kinds)


def _check_protocol(env: Mapping[str, str], signal: Signal) -> None:
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(variable, "").strip()
        if protocol:
            if protocol != _OTLP_PROTOCOL:
                raise ValueError(f"{variable}: only {_OTLP_PROTOCOL} is supported, got {protocol!r}")
            return


def app_target(raw: str) -> tuple[str, str]:
    """Split `MODULE:APP` (`pkg.module:object.attr`) into its module and attribute path.

    Raises:
        ValueError: not of that form.
    """
    module, colon, attribute = raw.partition(":")
    if not colon or not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(attribute):
        raise ValueError(f"expected MODULE:APP (like myapp.wsgi:application), got {raw!r}")
    return module, attribute


@dataclass(frozen=True, slots=True)
class Histogram:
    """An explicit-bucket histogram: `counts` has one more entry than `bounds` (the overflow bucket);
    `low` and `high` are the smallest and largest values recorded."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    low: float
    high: float


def merged(histograms: Iterable[Histogram]) -> Histogram | None:
    """Add histograms with the same bounds bucket by bucket; None if there are none or the bounds differ."""
    result: Histogram | None = None
    for item in histograms:
        if result is None:
            result = item
        elif item.bounds != result.bounds or len(item.counts) != len(result.counts):
            return None
        else:
            counts = tuple(a + b for a, b in zip(result.counts, item.counts, strict=True))
            result = Histogram(result.bounds, counts, min(result.low, item.low), max(result.high, item.high))
    return result


def quantile(histogram: Histogram, q: float) -> float | None:
    """Estimate the `q` quantile (0..1) by linear interpolation inside the bucket holding it.

    A bucket is assumed evenly filled between its bounds, with the recorded minimum and maximum as the
    outer edges (so the overflow bucket has an end, and a lone value is returned exactly). None when the
    histogram is empty or malformed.
    """
    total = sum(histogram.counts)
    if total <= 0 or len(histogram.counts) != len(histogram.bounds) + 1 or not 0 <= q <= 1:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(histogram.counts):
        if count > 0 and seen + count >= rank:
            lower = histogram.bounds[index - 1] if index > 0 else histogram.low
            upper = histogram.bounds[index] if index < len(histogram.bounds) else histogram.high
            lower, upper = max(lower, histogram.low), min(upper, histogram.high)
            return lower + (upper - lower) * max(rank - seen, 0) / count
        seen += count
    return histogram.high


def duration_text(seconds: float | None) -> str:
    """Return a duration for people: `0.42 ms`, `12.3 ms`, `1.25 s`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    milliseconds = seconds * 1000
    return f"{milliseconds:.2f} ms" if milliseconds < 10 else f"{milliseconds:.1f} ms"


@dataclass(frozen=True, slots=True)
class SpanView:
    """What one console line shows of an ended span: `status` is the HTTP code or None, `error` the
    `error.type` (or the span's ERROR status) or None."""

    name: str
    status: int | None
    error: str | None
    seconds: float


def span_line(span: SpanView, route: str | None, trace_id: int, *, remote_parent: bool = False) -> str:
    """Return the console line of one ended span: name, status code, duration, route, trace id (and
    the error, and whether the trace came in with the request's `traceparent`)."""
    status = "-" if span.status is None else str(span.status)
    error = "" if span.error is None else f"  error={span.error}"
    continued = "  (continued from traceparent)" if remote_parent else ""
    return (
        f"{span.name:<24} {status:>3} {duration_text(span.seconds):>9}  route={route or '-'}  "
        f"trace={trace_id:032x}{error}{continued}"
    )


@dataclass(frozen=True, slots=True)
class RouteSample:
    """One histogram point of `http.server.request.duration` reduced to what the summary groups by."""

    route: str
    error: bool
    histogram: Histogram


SUMMARY_HEADER: Final = f"{'route':<24} {'count':>6} {'p50':>9} {'p95':>9} {'errors':>6}"


def summary_lines(samples: Sequence[RouteSample]) -> list[str]:
    """Return the per-route summary: count, p50, p95 (interpolated from the buckets) and errors; no
    lines at all when nothing was measured."""
    routes = sorted({sample.route for sample in samples})
    lines = [SUMMARY_HEADER] if routes else []
    for route in routes:
        mine = [sample for sample in samples if sample.route == route]
        histogram = merged(sample.histogram for sample in mine)
        count = sum(sum(sample.histogram.counts) for sample in mine)
        errors = sum(sum(sample.histogram.counts) for sample in mine if sample.error)
        p50 = None if histogram is None else quantile(histogram, 0.5)
        p95 = None if histogram is None else quantile(histogram, 0.95)
        lines.append(f"{route:<24} {count:>6} {duration_text(p50):>9} {duration_text(p95):>9} {errors:>6}")
    return lines
