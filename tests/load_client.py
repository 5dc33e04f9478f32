"""A load client and a checker: N concurrent clients, each request with its own `traceparent` and query,
then every exported span paired with the request that caused it.

The checker reads spans in the JSON-lines form of tests/span_lines.py, whatever exported them (the
test exporter today; an OTLP receiver can write the same records). By hand, against a running server:
`python tests/load_client.py --port 8000 --clients 16 --requests 500 --path /hello --events events.jsonl`
(it waits for the spans, prints the report as JSON and exits 1 unless every span pairs up).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from span_lines import read_records

#: How long the client waits on one response, and the checker on the spans, before giving up.
TIMEOUT: Final = 30.0


@dataclass(frozen=True, slots=True)
class Sent:
    """One request the client made: its unique query, the parent it announced, the status it got, and
    the path it asked for."""

    query: str
    trace_id: str
    parent_id: str
    status: int
    path: str = "/hello"


@dataclass(frozen=True, slots=True)
class Report:
    """How the spans received pair with the requests sent; `ok` when every request has exactly its span.

    `spans` counts the spans of these requests; `unknown` the others (other traffic), which are not errors.
    """

    sent: int
    answered: int
    spans: int
    missing: int
    duplicated: int
    wrong_parent: int
    wrong_path: int
    unknown: int

    @property
    def ok(self) -> bool:
        return self.sent == self.answered == self.spans and not (
            self.missing or self.duplicated or self.wrong_parent or self.wrong_path
        )


def _client(port: int, requests: list[tuple[str, str]], out: list[Sent], reconnect: int) -> None:
    """One client: a keep-alive connection (a new one every `reconnect` requests, if not 0), one request
    per (path, query), each with a fresh parent."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        for number, (path, query) in enumerate(requests):
            if reconnect and number and number % reconnect == 0:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
            trace_id, parent_id = os.urandom(16).hex(), os.urandom(8).hex()
            headers = {"traceparent": f"00-{trace_id}-{parent_id}-01"}
            connection.request("GET", f"{path}?{query}", headers=headers)
            response = connection.getresponse()
            response.read()
            out.append(Sent(query, trace_id, parent_id, response.status, path))
    finally:
        connection.close()


def run_clients(
    port: int, clients: int, requests: int, path: str = "/hello", *, reconnect: int = 0
) -> list[Sent]:
    """Run `clients` threads of `requests` requests each against 127.0.0.1:port; return what was sent.

    Request `i` of client `c` has the query `n=c-i`; a `{n}` in `path` is replaced by `c-i` too, so that
    each request also has its own path. With `reconnect`, each client opens a new connection every
    `reconnect` requests (so that every worker of a multi-process server gets to accept some).
    """
    results: list[list[Sent]] = [[] for _ in range(clients)]
    numbers = [[f"{c}-{i}" for i in range(requests)] for c in range(clients)]
    threads = [
        threading.Thread(
            target=_client,
            args=(port, [(path.replace("{n}", n), f"n={n}") for n in numbers[c]], results[c], reconnect),
        )
        for c in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [sent for result in results for sent in result]


def check(sent: Iterable[Sent], spans: Iterable[Mapping[str, object]]) -> Report:
    """Pair each span with the request whose query it carries and check its parent and path."""
    by_query = {request.query: request for request in sent}
    seen: dict[str, int] = {}
    wrong_parent = wrong_path = unknown = total = 0
    for span in spans:
        attributes = span.get("attributes")
        query = attributes.get("url.query") if isinstance(attributes, Mapping) else None
        request = by_query.get(query) if isinstance(query, str) else None
        if request is None or not isinstance(attributes, Mapping):
            unknown += 1
            continue
        total += 1
        seen[request.query] = seen.get(request.query, 0) + 1
        parent = (span.get("parent_trace_id"), span.get("parent_id"), span.get("trace_id"))
        wrong_parent += parent != (request.trace_id, request.parent_id, request.trace_id)
        wrong_path += attributes.get("url.path") != request.path
    return Report(
        sent=len(by_query),
        answered=sum(request.status == 200 for request in by_query.values()),
        spans=total,
        missing=sum(query not in seen for query in by_query),
        duplicated=sum(count > 1 for count in seen.values()),
        wrong_parent=wrong_parent,
        wrong_path=wrong_path,
        unknown=unknown,
    )


def read_spans(events: Path) -> list[dict[str, object]]:
    """The span records of a JSON-lines events file (complete lines only)."""
    return [record for record in read_records(events) if record.get("kind") == "span"]


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=100, help="per client")
    parser.add_argument("--path", default="/hello", help="a {n} in it becomes the request's number")
    parser.add_argument("--events", type=Path, required=True, help="the JSON-lines spans file to check")
    args = parser.parse_args(argv)
    started = time.monotonic()
    sent = run_clients(args.port, args.clients, args.requests, args.path)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + TIMEOUT
    report = check(sent, read_spans(args.events))
    while not report.ok and time.monotonic() < deadline:
        time.sleep(0.5)
        report = check(sent, read_spans(args.events))
    print(json.dumps({**asdict(report), "ok": report.ok, "seconds": round(elapsed, 2)}))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
