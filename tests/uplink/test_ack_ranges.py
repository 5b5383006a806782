"""Membership in the union of acknowledged runs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.uplink import _RangeSet

ranges_st = st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=12)


@given(ranges_st, st.integers(-5, 240))
def test_range_set_membership_matches_the_union_of_ranges(ranges: list[tuple[int, int]], seq: int) -> None:
    """A seq is covered exactly when some inclusive range contains it, however the ranges overlap."""
    expected = any(a <= seq <= b for a, b in ranges)

    assert (seq in _RangeSet(ranges)) == expected
