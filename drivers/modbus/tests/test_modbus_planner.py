"""RegisterPlanner: exact request lists for given tags and limits."""

from __future__ import annotations

import pytest

from drivers.modbus.planner import RegisterPlanner, TagSpan


def spans(table: str, *items: tuple[int, int]) -> list[TagSpan]:
    return [TagSpan(key=(table, a), table=table, address=a, count=c) for a, c in items]


def requests(planner: RegisterPlanner, tags: list[TagSpan]) -> list[tuple[str, int, int]]:
    return [(r.table, r.address, r.count) for r in planner.plan(tags)]


CASES = [
    # (case id, planner settings, tags, expected requests (table, address, count))
    ("one tag", {}, spans("holding", (10, 1)), [("holding", 10, 1)]),
    ("adjacent merge", {}, spans("holding", (0, 1), (1, 2), (3, 1)), [("holding", 0, 4)]),
    ("unsorted input", {}, spans("holding", (3, 1), (0, 1), (1, 2)), [("holding", 0, 4)]),
    (
        "gap within limit filled",
        {"max_gap_registers": 8},
        spans("holding", (0, 1), (9, 1)),
        [("holding", 0, 10)],
    ),
    (
        "gap beyond limit splits",
        {"max_gap_registers": 8},
        spans("holding", (0, 1), (10, 1)),
        [("holding", 0, 1), ("holding", 10, 1)],
    ),
    (
        "no gaps: adjacent only",
        {"max_gap_registers": 0},
        spans("holding", (0, 2), (2, 1)),
        [("holding", 0, 3)],
    ),
    (
        "no gaps: one hole splits",
        {"max_gap_registers": 0},
        spans("holding", (0, 1), (2, 1)),
        [("holding", 0, 1), ("holding", 2, 1)],
    ),
    (
        "125-register limit",
        {},
        spans("holding", *[(a, 1) for a in range(0, 130)]),
        [("holding", 0, 125), ("holding", 125, 5)],
    ),
    (
        "a multi-register tag never straddles requests",
        {},
        spans("holding", (0, 1), (123, 4)),
        [("holding", 0, 1), ("holding", 123, 4)],
    ),
    (
        "device limit of 16",
        {"max_registers": 16},
        spans("input", *[(a, 2) for a in range(0, 40, 2)]),
        [("input", 0, 16), ("input", 16, 16), ("input", 32, 8)],
    ),
    ("overlapping views of one register", {}, spans("holding", (5, 1), (5, 1), (5, 2)), [("holding", 5, 2)]),
    (
        "tables are planned separately, in function-code order",
        {},
        [
            *spans("input", (0, 1)),
            *spans("holding", (0, 1)),
            *spans("coil", (0, 1)),
            *spans("discrete", (7, 1)),
        ],
        [("coil", 0, 1), ("discrete", 7, 1), ("holding", 0, 1), ("input", 0, 1)],
    ),
    (
        "bits: 2000 per request",
        {"max_gap_bits": 0},
        spans("coil", *[(a, 1) for a in range(2001)]),
        [("coil", 0, 2000), ("coil", 2000, 1)],
    ),
    (
        "bits: gap rule in bits",
        {"max_gap_bits": 64},
        spans("discrete", (0, 1), (65, 1), (131, 1)),
        [("discrete", 0, 66), ("discrete", 131, 1)],
    ),
    ("string tag", {}, spans("holding", (100, 10), (110, 2)), [("holding", 100, 12)]),
]


@pytest.mark.parametrize(("settings", "tags", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan_matches_table(
    settings: dict[str, int], tags: list[TagSpan], expected: list[tuple[str, int, int]]
) -> None:
    """The planner produces exactly the listed requests."""
    assert expected == requests(RegisterPlanner(**settings), tags)


def test_every_tag_is_in_exactly_one_request() -> None:
    """Each tag is covered once, inside its request's range."""
    tags = spans("holding", *[(a, 2) for a in range(0, 2000, 7)])
    planned = RegisterPlanner(max_gap_registers=3).plan(tags)

    covered = [t.key for r in planned for t in r.tags]
    assert sorted(covered) == sorted(t.key for t in tags)
    assert all(
        r.address <= t.address and t.address + t.count <= r.address + r.count for r in planned for t in r.tags
    )
    assert all(r.count <= 125 for r in planned)


def test_split_rereads_without_gaps() -> None:
    """After an illegal-address answer, a gap-filled request is re-planned as gap-free requests."""
    planner = RegisterPlanner(max_gap_registers=8)
    (merged,) = planner.plan(spans("holding", (0, 2), (2, 1), (6, 1)))

    assert [(r.address, r.count) for r in planner.split(merged)] == [(0, 3), (6, 1)]


def test_split_of_gap_free_request_goes_tag_by_tag() -> None:
    """A refused request without gaps is split into one request per tag (identical spans stay together)."""
    planner = RegisterPlanner(max_gap_registers=0)
    (merged,) = planner.plan(spans("holding", (4, 1), (5, 1), (5, 1), (6, 2)))

    assert [(r.address, r.count, len(r.tags)) for r in planner.split(merged)] == [
        (4, 1, 1),
        (5, 1, 2),
        (6, 2, 1),
    ]


def test_split_of_single_tag_request_is_unchanged() -> None:
    """A refused single-tag request cannot be split further."""
    planner = RegisterPlanner()
    (single,) = planner.plan(spans("input", (9, 2)))

    assert planner.split(single) == [single]


def test_tag_longer_than_device_limit_is_rejected() -> None:
    """A tag that cannot fit one request is a clear error, not a silent truncation."""
    with pytest.raises(ValueError, match="more than 16"):
        RegisterPlanner(max_registers=16).plan(spans("holding", (0, 20)))


@pytest.mark.parametrize("settings", [{"max_registers": 126}, {"max_bits": 2001}, {"max_registers": 0}])
def test_limits_beyond_the_spec_are_rejected(settings: dict[str, int]) -> None:
    """Limits above the Modbus maxima (125 registers, 2000 bits) are refused."""
    with pytest.raises(ValueError, match="must be"):
        RegisterPlanner(**settings)
