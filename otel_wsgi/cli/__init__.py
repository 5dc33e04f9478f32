"""The `otel-wsgi` command: `demo` for a first look, `serve MODULE:APP` to run any WSGI app traced.

Needs the `cli` extra (the OpenTelemetry SDK, the OTLP/HTTP exporter, waitress). Bad input is one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from typing_extensions import override

from otel_wsgi._version import __version__
from otel_wsgi.cli.decide import EXPORTER_NAMES, SERVERS, CommandError, exporter_kinds

__all__ = ["main"]

_EXPORTERS = ("console", "otlp", "none")
_EXPORTER_HELP = (
    "where spans and metrics go: console (a line per span, a per-route summary at exit), otlp "
    "(OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT) or none; default: OTEL_TRACES_EXPORTER / "
    "OTEL_METRICS_EXPORTER, else otlp if an OTLP endpoint is set, else console"
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2), like the command's own."""

    @override
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _count(limit: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not raw.isdigit() or not 1 <= int(raw) <= limit:
            raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {limit}, got {raw!r}")
        return int(raw)

    return parse


def _port(raw: str) -> int:
    if not raw.isdigit() or int(raw) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {raw!r}")
    return int(raw)


def _exporter(raw: str) -> str:
    if raw not in EXPORTER_NAMES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(_EXPORTERS)}, got {raw!r}")
    return raw


def parser() -> argparse.ArgumentParser:
    """The command line of `otel-wsgi`."""
    top = _Parser(prog="otel-wsgi", description="OpenTelemetry for any WSGI app.")
    top.add_argument("--version", action="version", version=f"otel-wsgi {__version__}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    demo = commands.add_parser("demo", help="serve a bundled app, print its spans and a metrics summary")
    demo.add_argument("--requests", type=_count(10_000), default=20, metavar="N", help="default: 20")
    demo.add_argument(
        "--exporter",
        type=_exporter,
        metavar="{console,otlp,none}",
        help="the span lines are always printed; console adds the per-route summary, otlp also exports "
        "both signals to OTEL_EXPORTER_OTLP_ENDPOINT, none prints the lines only (default: as for serve)",
    )
    serve = commands.add_parser("serve", help="run a WSGI app (MODULE:APP) traced, until SIGINT/SIGTERM")
    serve.add_argument("target", metavar="MODULE:APP", help="like myapp.wsgi:application")
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000, help="default: 8000 (0: any free port)")
    serve.add_argument("--server", choices=SERVERS, default="waitress", help="default: waitress")
    serve.add_argument("--workers", type=_count(256), metavar="N", help="processes (gunicorn only)")
    serve.add_argument("--threads", type=_count(1024), metavar="N", help="per process (waitress: 4)")
    serve.add_argument("--exporter", type=_exporter, metavar="{console,otlp,none}", help=_EXPORTER_HELP)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code (2 for bad input, after one line on stderr)."""
    top = parser()
    args = top.parse_args(argv)
    if args.command is None:
        top.print_help(sys.stderr)
        return 2
    try:
        return _run(args)
    except (CommandError, ValueError) as exc:
        print(f"otel-wsgi: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the server was up (while the app was imported)
        return 130


def _run(args: argparse.Namespace) -> int:
    """Import what the command needs (the SDK of the cli extra) and run it."""
    try:
        from otel_wsgi.cli.demo import run_demo
        from otel_wsgi.cli.serve import ServeOptions, run_serve
    except ModuleNotFoundError as exc:
        raise CommandError(f"the command needs the cli extra (pip install 'otel-wsgi[cli]'): {exc}") from None
    if args.command == "demo":
        return run_demo(args.requests, exporter_kinds(args.exporter, os.environ, "traces"))
    options = ServeOptions(
        target=args.target,
        host=args.host,
        port=args.port,
        server=args.server,
        workers=args.workers,
        threads=args.threads,
        exporter=args.exporter,
    )
    return run_serve(options)
