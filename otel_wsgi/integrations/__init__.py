"""Route and exception reporting for WSGI frameworks, one module per framework.

Each module imports its framework only inside itself, so `otel_wsgi` never depends on one:
`otel_wsgi.integrations.flask`, `.django`, `.falcon`, `.bottle` and `.pyramid`. Each reports the matched
route template through `set_route` and an exception the framework turned into a 500 through
`record_exception`; `instrument_app` also wraps the app with `wrap`, `report_routes` only reports (for
an app traced by another layer of this package).
"""
