"""`python -m otel_wsgi demo` (and `serve`): the same as the `otel-wsgi` command."""

from otel_wsgi.cli import main

raise SystemExit(main())
