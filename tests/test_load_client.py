"""The load checker finds every way a span can fail to pair with its request (fabricated spans)."""

from __future__ import annotations

from typing import Final

import pytest
from load_client import Report, Sent, check

# Report(sent, answered, spans, missing, duplicated, wrong_parent, wrong_path, unknown)
SENT: Final = [Sent("n=0-0", "a" * 32, "b" * 16, 200), Sent("n=0-1", "c" * 32, "d" * 16, 200)]


def _span(query: str, trace_id: str, parent_id: str | None, path: str = "/hello") -> dict[str, object]:
    return {
        "kind": "span",
        "attributes": {"url.path": path, "url.query": query},
        "trace_id": trace_id,
        "parent_id": parent_id,
        "parent_trace_id": None if parent_id is None else trace_id,
    }


IDS_1: Final = ("c" * 32, "d" * 16)
#: Requests that each asked for a path of their own (`run_clients(..., path="/w/{n}")`).
OWN_PATHS: Final = [Sent(s.query, s.trace_id, s.parent_id, s.status, f"/w/{s.query[2:]}") for s in SENT]

GOOD: Final = [_span("n=0-0", "a" * 32, "b" * 16), _span("n=0-1", "c" * 32, "d" * 16)]

CASES: Final = [
    pytest.param(SENT, GOOD, Report(2, 2, 2, 0, 0, 0, 0, 0), True, id="all-paired"),
    pytest.param(SENT, GOOD[:1], Report(2, 2, 1, 1, 0, 0, 0, 0), False, id="lost-span"),
    pytest.param(SENT, [*GOOD, GOOD[0]], Report(2, 2, 3, 0, 1, 0, 0, 0), False, id="duplicated"),
    pytest.param(
        SENT, [GOOD[0], _span("n=0-1", "a" * 32, "b" * 16)], Report(2, 2, 2, 0, 0, 1, 0, 0), False,
        id="other-requests-parent",
    ),
    pytest.param(
        SENT, [GOOD[0], _span("n=0-1", "e" * 32, None)], Report(2, 2, 2, 0, 0, 1, 0, 0), False, id="root"
    ),
    pytest.param(
        SENT, [GOOD[0], _span("n=0-1", "c" * 32, "d" * 16, "/x")], Report(2, 2, 2, 0, 0, 0, 1, 0), False,
        id="other-path",
    ),
    pytest.param(
        SENT, [*GOOD, _span("other", "f" * 32, None)], Report(2, 2, 2, 0, 0, 0, 0, 1), True, id="traffic"
    ),
    pytest.param(
        OWN_PATHS, [_span("n=0-0", "a" * 32, "b" * 16, "/w/0-0"), _span("n=0-1", *IDS_1, "/w/0-1")],
        Report(2, 2, 2, 0, 0, 0, 0, 0), True, id="own-paths",
    ),
    pytest.param(
        OWN_PATHS, [_span("n=0-0", "a" * 32, "b" * 16, "/w/0-0"), _span("n=0-1", *IDS_1, "/w/0-0")],
        Report(2, 2, 2, 0, 0, 0, 1, 0), False, id="another-requests-path",
    ),
    pytest.param(
        [SENT[0], Sent("n=0-1", "c" * 32, "d" * 16, 500)], GOOD, Report(2, 1, 2, 0, 0, 0, 0, 0), False,
        id="failed-request",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("sent", "spans", "expected", "ok"), CASES)
def test_checker_finds_every_way_a_span_can_fail_to_pair_with_its_request(
    sent: list[Sent], spans: list[dict[str, object]], expected: Report, ok: bool
) -> None:
    report = check(sent, spans)

    assert report == expected
    assert report.ok is ok
