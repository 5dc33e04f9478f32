"""`python -m otel_wsgi.demo`: the same as `otel-wsgi demo` (kept for the command's first spelling)."""

import sys

from otel_wsgi.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["demo", *sys.argv[1:]]))
