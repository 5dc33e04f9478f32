"""The atheris fuzz targets (`fuzz/targets.py`), run under Hypothesis in CI: the same checks, bounded.

Each target decodes raw bytes into environs, configs, status lines and headers and raises `Violation`
when the pure core breaks a promise; here Hypothesis feeds them (and shrinks any failure), by hand
atheris does for minutes (README, Reliability).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz.targets import TARGETS, Violation, check_attributes, run_one


@pytest.mark.parametrize("name", sorted(TARGETS))
@given(data=st.binary(max_size=400))
def test_fuzz_target_holds(name: str, data: bytes) -> None:
    TARGETS[name](data)


@given(data=st.binary(max_size=400))
def test_dispatching_target_holds(data: bytes) -> None:
    run_one(data)


@pytest.mark.parametrize(
    ("attributes", "limit"),
    [({"a": "xyz"}, 2), ({"a": ("ok", 1)}, 5), ({"server.port": 70000}, 9), ({"a": None}, 9)],
)
def test_the_attribute_check_can_fail(attributes: dict[str, object], limit: int) -> None:
    with pytest.raises(Violation):
        check_attributes(attributes, limit)
