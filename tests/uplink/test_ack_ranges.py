"""The backend's ack ranges: parsing and membership."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agent.uplink import _parse_ack, _RangeSet

ranges_st = st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=12)


@given(ranges_st, st.integers(-5, 240))
def test_range_set_membership_matches_the_union_of_ranges(ranges: list[tuple[int, int]], seq: int) -> None:
    """A seq is covered exactly when some inclusive range contains it, however the ranges overlap."""
    expected = any(a <= seq <= b for a, b in ranges)

    assert (seq in _RangeSet(ranges)) == expected


def test_ack_payload_parses_into_ranges() -> None:
    """``{"acked": [[1, 4], [7, 7]]}`` is two inclusive ranges."""
    assert _parse_ack(json.dumps({"acked": [[1, 4], [7, 7]]}).encode()) == [(1, 4), (7, 7)]


def test_ack_payloads_that_are_not_ranges_are_refused() -> None:
    """Reversed or non-positive ranges, other shapes and non-JSON all parse to None."""
    bad = [b'{"acked": [[4, 1]]}', b'{"acked": [[0, 1]]}', b'{"acked": [1, 2]}', b'{"ack": []}', b"x", b"[]"]

    assert [_parse_ack(p) for p in bad] == [None] * len(bad)
