"""The requests the benchmarks send: one fixed environ, and a seeded stream that looks like real traffic.

The single environ (`SINGLE`) is the same request every time, so every cache anywhere is always warm.
The realistic stream (`realistic_stream()`) varies what varies in production, so a change that only
helps a repeated request shows up as such. It is drawn from `random.Random(SEED)`: every run, every
case and every machine sees the same requests in the same order. The mix:

- about 200 distinct paths (users, orders, products, static assets, blog posts, health checks, a few
  non-ASCII and space-containing paths that need percent-encoding), drawn with Zipf-like weights so
  a few are hot and most are rare;
- a query string on 30% (pagination, search terms, tracking parameters, a few presigned-URL
  signatures that must be redacted);
- a new client port on every request, from about 40 client addresses (a few IPv6);
- 20 user agents, weighted: browsers, tools (curl, python-requests, ...), crawlers (Googlebot, GPTBot,
  ...) and synthetic monitors (UptimeRobot, Pingdom, Datadog); 2% send none;
- a sampled `traceparent` with its own trace id on half the requests (a `tracestate` on some of those);
- methods: about 80% GET, then POST, HEAD, PUT, OPTIONS, DELETE, PATCH, and 1.5% junk (`get`,
  `PROPFIND`, `FOO`, `BREW`);
- 25% arrive over TLS (`wsgi.url_scheme` https); of the rest, 35% come through a proxy that adds
  `X-Forwarded-For`/`-Proto` (and sometimes `-Host`), and 5% carry an RFC 7239 `Forwarded` header;
- Host headers as seen in the wild: a few API and web names, explicit ports, localhost, IP literals
  (IPv4 and IPv6), odd case, a punycode name; HTTP/1.0 requests (5%) may send no Host at all.

The app answers every request the same way (200, one chunk); only the request varies.
"""

from __future__ import annotations

import io
import random
import sys
from collections.abc import Sequence
from typing import Final
from urllib.parse import quote
from wsgiref.types import WSGIEnvironment
from wsgiref.util import FileWrapper

#: The seed of the realistic stream; change it and every figure measured with it changes too.
SEED: Final = 1729
#: Requests in the realistic stream before it repeats (a round of the benchmark walks on through it).
STREAM_SIZE: Final = 3001

TRACE_ID: Final = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT: Final = f"00-{TRACE_ID}-b7ad6b7169203331-01"

#: What the server puts in every environ, whatever the request.
_SERVER_KEYS: Final[WSGIEnvironment] = {
    "wsgi.version": (1, 0),
    "wsgi.input": io.BytesIO(b""),
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.file_wrapper": FileWrapper,
    "wsgi.input_terminated": True,
    "SERVER_SOFTWARE": "gunicorn/23.0.0",
    "SERVER_NAME": "0.0.0.0",
    "SCRIPT_NAME": "",
}

#: What gunicorn puts in the environ for `GET /api/users/42?page=2` behind a proxy: the WSGI and CGI
#: keys, then 8 request headers including a sampled `traceparent`.
SINGLE: Final[WSGIEnvironment] = {
    **_SERVER_KEYS,
    "wsgi.url_scheme": "http",
    "REQUEST_METHOD": "GET",
    "QUERY_STRING": "page=2",
    "RAW_URI": "/api/users/42?page=2",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "10.0.0.7",
    "REMOTE_PORT": "52144",
    "SERVER_PORT": "8000",
    "PATH_INFO": "/api/users/42",
    "HTTP_HOST": "api.example.com",
    "HTTP_USER_AGENT": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "HTTP_ACCEPT": "application/json",
    "HTTP_ACCEPT_ENCODING": "gzip, deflate, br",
    "HTTP_ACCEPT_LANGUAGE": "en-US,en;q=0.5",
    "HTTP_CONNECTION": "keep-alive",
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "HTTP_TRACEPARENT": TRACEPARENT,
}

# (value, weight) tables; the weights are relative.
_METHODS: Final = (
    ("GET", 800), ("POST", 70), ("HEAD", 30), ("PUT", 30), ("OPTIONS", 20), ("DELETE", 20),
    ("PATCH", 15), ("get", 5), ("PROPFIND", 4), ("FOO", 3), ("BREW", 3),
)  # fmt: skip
_AGENTS: Final = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", 200),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", 120),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", 60),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", 50),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/18.1 Mobile/15E148 Safari/604.1", 120),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/18.1 Safari/605.1.15", 60),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36", 90),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", 50),
    ("curl/8.5.0", 40),
    ("python-requests/2.32.3", 50),
    ("Go-http-client/1.1", 30),
    ("okhttp/4.12.0", 30),
    ("PostmanRuntime/7.42.0", 10),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 25),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", 10),
    ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
     10),
    ("Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)", 8),
    ("Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)", 15),
    ("Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)", 8),
    ("Datadog/Synthetics", 8),
)  # fmt: skip
_HOSTS: Final = (
    ("api.example.com", 400), ("www.example.com", 200), ("example.com", 100), ("shop.example.co.uk", 50),
    ("api.example.com:443", 50), ("localhost:8000", 50), ("127.0.0.1:8000", 40), ("10.0.0.5:8000", 30),
    ("API.Example.COM", 20), ("[::1]:8000", 20), ("xn--caf-dma.example", 10),
)  # fmt: skip
_ACCEPTS: Final = ("application/json", "*/*", "text/html,application/xhtml+xml,*/*;q=0.8", "image/webp,*/*")
_WORDS: Final = (
    "red", "blue", "chair", "table", "lamp", "desk", "sofa", "rug", "mirror", "shelf", "clock", "vase",
    "oak", "pine", "steel", "glass", "linen", "wool", "summer", "winter",
)  # fmt: skip


def realistic_stream(size: int = STREAM_SIZE, seed: int = SEED) -> list[WSGIEnvironment]:
    """Return `size` environs drawn from the documented mix, the same for the same seed."""
    rng = random.Random(seed)
    paths = _paths(rng)
    ranks = [1 / (rank + 1) ** 0.8 for rank in range(len(paths))]  # Zipf-like: a few hot paths
    clients = [f"198.51.100.{rng.randrange(1, 255)}" for _ in range(20)]
    clients += [f"203.0.113.{rng.randrange(1, 255)}" for _ in range(17)]
    clients += ["2001:db8::1", "2001:db8:0:1::7", "::1"]
    port = rng.randrange(1024, 65536)
    stream = []
    for _ in range(size):
        port = 1024 + (port - 1024 + rng.randrange(1, 8)) % (65536 - 1024)  # a new port every request
        path = rng.choices(paths, ranks)[0]
        stream.append(_environ(rng, path, rng.choice(clients), port))
    return stream


def _pick(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([value for value, _ in table], [weight for _, weight in table])[0]


def _paths(rng: random.Random) -> list[str]:
    """Return 200 distinct PATH_INFO values, as PEP 3333 gives them (UTF-8 bytes as latin-1 text)."""
    fixed = ["/", "/health", "/healthz", "/metrics", "/favicon.ico", "/robots.txt", "/login", "/logout",
             "/search", "/api/v1/status", "/products/café-crème", "/docs/getting started",
             "/products/größe-xl"]  # fmt: skip
    paths = [path.encode().decode("latin-1") for path in fixed]
    kinds = (
        lambda: f"/api/users/{rng.randrange(1, 100_000)}",
        lambda: f"/api/users/{rng.randrange(1, 100_000)}/orders",
        lambda: f"/api/orders/{rng.getrandbits(64):016x}",
        lambda: f"/products/{rng.choice(_WORDS)}-{rng.choice(_WORDS)}-{rng.randrange(100)}",
        lambda: (
            f"/static/{rng.choice(('js', 'css'))}/app.{rng.getrandbits(32):08x}.{rng.choice(('js', 'css'))}"
        ),
        lambda: f"/blog/2026/{rng.randrange(1, 13):02d}/{rng.choice(_WORDS)}-{rng.choice(_WORDS)}",
    )
    while len(paths) < 200:
        path = rng.choice(kinds)()
        if path not in paths:
            paths.append(path)
    return paths


def _query(rng: random.Random) -> str:
    choice = rng.randrange(8)
    if choice == 0:
        return f"page={rng.randrange(1, 50)}"
    if choice == 1:
        return f"page={rng.randrange(1, 50)}&per_page=50&sort=-created"
    if choice == 2:
        return f"q={rng.choice(_WORDS)}+{rng.choice(_WORDS)}"
    if choice == 3:
        return "q=caf%C3%A9&lang=fr"
    if choice == 4:
        return "utm_source=newsletter&utm_medium=email&utm_campaign=winter"
    if choice == 5:
        return (
            f"AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires={rng.randrange(10**9, 2 * 10**9)}&Signature=vjb%2Bk"
        )
    return f"id={rng.randrange(1, 10_000)}&fields=name,price"


def _environ(rng: random.Random, path: str, client: str, port: int) -> WSGIEnvironment:
    """Return one request's environ as gunicorn builds it."""
    method = _pick(rng, _METHODS)
    query = _query(rng) if rng.random() < 0.3 else ""
    http10 = rng.random() < 0.05
    tls = rng.random() < 0.25
    raw_path = quote(path.encode("latin-1"), safe="/:@!$&'()*+,;=")
    environ: WSGIEnvironment = {
        **_SERVER_KEYS,
        "wsgi.url_scheme": "https" if tls else "http",
        "REQUEST_METHOD": method,
        "QUERY_STRING": query,
        "RAW_URI": f"{raw_path}?{query}" if query else raw_path,
        "SERVER_PROTOCOL": "HTTP/1.0" if http10 else "HTTP/1.1",
        "REMOTE_ADDR": client,
        "REMOTE_PORT": str(port),
        "SERVER_PORT": "443" if tls else "8000",
        "PATH_INFO": path,
    }
    if not (http10 and rng.random() < 0.5):
        environ["HTTP_HOST"] = _pick(rng, _HOSTS)
    if rng.random() < 0.98:
        environ["HTTP_USER_AGENT"] = _pick(rng, _AGENTS)
    environ["HTTP_ACCEPT"] = rng.choice(_ACCEPTS)
    environ["HTTP_ACCEPT_ENCODING"] = "gzip, deflate, br"
    if rng.random() < 0.6:
        environ["HTTP_ACCEPT_LANGUAGE"] = rng.choice(("en-US,en;q=0.9", "fr-FR,fr;q=0.8", "de-DE,de;q=0.7"))
    if not http10:
        environ["HTTP_CONNECTION"] = "keep-alive"
    if method in ("POST", "PUT", "PATCH"):
        environ["CONTENT_TYPE"] = "application/json"
        environ["CONTENT_LENGTH"] = str(rng.randrange(2, 4000))
    if not tls:
        _add_proxy_headers(rng, environ)
    if rng.random() < 0.5:
        environ["HTTP_TRACEPARENT"] = f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01"
        if rng.random() < 0.2:
            environ["HTTP_TRACESTATE"] = f"vendor={rng.getrandbits(32):08x}"
    if rng.random() < 0.3:
        environ["HTTP_X_REQUEST_ID"] = f"{rng.getrandbits(128):032x}"
    return environ


def _add_proxy_headers(rng: random.Random, environ: WSGIEnvironment) -> None:
    """Add what a TLS-terminating proxy sends (35% of plain-HTTP requests `X-Forwarded-*`, 5% `Forwarded`)."""
    draw = rng.random()
    origin = f"192.0.2.{rng.randrange(1, 255)}"
    if draw < 0.05:
        environ["HTTP_FORWARDED"] = (
            f'for="{origin}:{rng.randrange(1024, 65536)}";proto=https;host=www.example.com'
        )
    elif draw < 0.4:
        environ["HTTP_X_FORWARDED_FOR"] = f"{origin}, 10.0.0.2"
        environ["HTTP_X_FORWARDED_PROTO"] = "https"
        if rng.random() < 0.3:
            environ["HTTP_X_FORWARDED_HOST"] = "www.example.com"
