"""Serve tests/matrix_app.py with an in-Python server on 127.0.0.1 and a free port, until SIGTERM.

Prints `LISTENING <port>` once the socket is bound. Usage: `python tests/matrix_serve.py SERVER`
with SERVER one of wsgiref, werkzeug, cheroot, waitress (gunicorn and uWSGI have their own commands).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Final, NoReturn

from matrix_app import app


def _announce(port: int) -> None:
    print(f"LISTENING {port}", flush=True)


def _wsgiref() -> None:
    from wsgiref.simple_server import make_server

    server = make_server("127.0.0.1", 0, app)  # one request at a time, as users run it
    _announce(server.server_port)
    server.serve_forever()


def _werkzeug() -> None:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    _announce(server.server_port)
    server.serve_forever()


def _cheroot() -> None:
    from cheroot import wsgi

    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4)
    server.prepare()
    address = server.bind_addr
    assert isinstance(address, tuple)
    _announce(int(address[1]))
    try:
        server.serve()
    finally:
        server.stop()  # joins its worker threads; without it the process outlives SIGTERM


def _waitress() -> None:
    from waitress import create_server  # type: ignore[import-untyped]

    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    _announce(int(server.effective_port))
    server.run()


SERVERS: Final[dict[str, Callable[[], None]]] = {
    "wsgiref": _wsgiref,
    "werkzeug": _werkzeug,
    "cheroot": _cheroot,
    "waitress": _waitress,
}


def _exit(signum: int, frame: object) -> NoReturn:
    raise SystemExit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit)
    SERVERS[sys.argv[1]]()
