"""The pure functions' memo tables: a memoised result equals the computed one, and the tables stay bounded
under a flood of client-chosen values (Host, method, user agent)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_pure import CONFIGS, ENVIRONS, FULL

from otel_wsgi.config import Config
from otel_wsgi.memo import MEMO_LIMIT, MEMO_RESET, MEMO_VALUE_LIMIT, Table, keepable, remember
from otel_wsgi.pure import request_attributes, request_head, request_record


class Text(str):
    """A str subclass: equal to its plain spelling, so never a memo key."""


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(("GET", None, "api.example.com"), True, id="text-and-absent"),
        pytest.param((), True, id="empty"),
        pytest.param(("8000", 8000), False, id="int-equals-nothing-but-is-not-text"),
        pytest.param((True,), False, id="bool-equals-1"),
        pytest.param((1.0,), False, id="float"),
        pytest.param((b"GET",), False, id="bytes"),
        pytest.param((Text("GET"),), False, id="str-subclass"),
        pytest.param(("x" * MEMO_VALUE_LIMIT,), True, id="longest-kept"),
        pytest.param(("x" * (MEMO_VALUE_LIMIT + 1),), False, id="too-long"),
    ],
)
def test_keepable(values: tuple[object, ...], expected: bool) -> None:
    assert keepable(values) is expected


def test_a_full_table_keeps_what_it_has_then_starts_over() -> None:
    table: Table[object, int] = Table()
    for index in range(MEMO_LIMIT):
        assert remember(table, index, index) == index
    assert remember(table, "new", -1) == -1  # handed back, not kept
    assert len(table) == MEMO_LIMIT and "new" not in table and table[0] == 0
    for _ in range(MEMO_RESET - 2):
        remember(table, "new", -1)
    assert len(table) == MEMO_LIMIT
    remember(table, "last", -2)  # the MEMO_RESET-th miss empties it
    assert len(table) == 0 and table.misses == 0
    remember(table, "next", -3)
    assert table == {"next": -3}


@given(environs=st.lists(ENVIRONS.map(lambda extra: FULL | extra) | ENVIRONS, min_size=1, max_size=6))
def test_memoised_results_equal_computed_ones(environs: list[dict[str, object]]) -> None:
    # Per config: the shared one has served every earlier example (its tables are warm and hit); an
    # equal config built now has empty tables, so its results are computed.
    for config in CONFIGS:
        for environ in environs + environs:  # the second pass hits what the first one kept
            assert request_record(environ, config) == request_record(environ, replace(config))
            head = request_head(environ, config, path=True)
            assert head == request_head(environ, replace(config), path=True)


def test_a_head_built_by_hand_gets_the_same_attributes() -> None:
    config = Config()
    head = request_head(FULL, config)
    assert head.fixed_attributes is not None
    by_hand = head._replace(fixed_attributes=None)
    assert request_attributes(FULL, config, by_hand) == request_attributes(FULL, config, head)


def test_tables_stay_bounded_under_a_flood_of_client_chosen_values() -> None:
    config = Config(forwarded_headers=True)
    for index in range(4 * MEMO_LIMIT + 3):
        environ = FULL | {
            "HTTP_HOST": f"h{index}.example.com",
            "REQUEST_METHOD": f"M{index}",
            "HTTP_USER_AGENT": f"agent/{index}",
            "HTTP_X_FORWARDED_HOST": f"p{index}.example.com",
        }
        record = request_record(environ, config)
        assert len(config.memo.heads) <= MEMO_LIMIT
        assert len(config.memo.agents) <= MEMO_LIMIT
        assert record.attributes["server.address"] == f"p{index}.example.com"
        assert record.attributes["user_agent.original"] == f"agent/{index}"
        assert record.attributes["http.request.method_original"] == f"M{index}"
    assert len(config.memo.heads) == len(config.memo.agents) == MEMO_LIMIT  # full, and no larger


def test_long_and_unhashable_values_are_computed_not_kept() -> None:
    config = Config()
    long_agent = "a" * (MEMO_VALUE_LIMIT + 1)
    record = request_record(FULL | {"HTTP_USER_AGENT": long_agent, "HTTP_HOST": "x" * 600}, config)
    assert record.attributes["user_agent.original"] == long_agent
    assert record.attributes["server.address"] == "x" * 600
    assert config.memo.agents == {} and config.memo.heads == {}
    unhashable = request_record(FULL | {"SERVER_PROTOCOL": ["HTTP/1.1"]}, config)
    assert "network.protocol.version" not in unhashable.attributes
    assert config.memo.heads == {}


def test_equal_but_different_inputs_never_share_an_entry() -> None:
    # 1, True and 1.0 are equal dict keys but not equal ports: none of them may be kept for the others.
    config = Config()
    no_host = {key: value for key, value in FULL.items() if key != "HTTP_HOST"}
    ports = [request_record(no_host | {"SERVER_PORT": port}, config) for port in (1, True, 1.0, "1")]
    assert [record.attributes.get("server.port") for record in ports] == [1, None, None, 1]
