"""LastValues (what `mine-agent tail` shows): the last thing recorded per tag, blocks kept one per layout."""

from __future__ import annotations

import struct

from agent.core.sample import BlockLayout, Poll, Quality, Sample, SampleBlock
from agent.pipeline.last_values import LastValues


def _layout(*names: str) -> BlockLayout:
    return BlockLayout(names, struct.Struct(f">{len(names)}H").unpack_from, [None] * len(names))


def _block(layout: BlockLayout, ts: int, *values: int) -> Poll:
    poll = Poll()
    poll.add_block(SampleBlock(layout, ts, struct.pack(f">{len(values)}H", *values)))
    return poll


def _values(tail: LastValues) -> dict[str, object]:
    return {tag: row["value"] for tag, row in tail.select(["*"]).items()}


def test_a_replanned_layout_replaces_the_old_one() -> None:
    """A re-planned request (or a restarted driver) brings new layouts for the same tags: the old layouts
    are dropped, not kept beside them."""
    tail = LastValues()
    old = _layout("d.a", "d.b")
    tail.record(_block(old, 1, 1, 2))
    new_a, new_b = _layout("d.a"), _layout("d.b")
    tail.record(_block(new_a, 2, 10))
    assert _values(tail) == {"d.a": 10, "d.b": 2}  # d.b is still only in the old layout
    tail.record(_block(new_b, 3, 20))

    assert _values(tail) == {"d.a": 10, "d.b": 20}
    assert set(tail._blocks) == {new_a, new_b}


def test_overlapping_layouts_show_the_last_read() -> None:
    """Two live layouts sharing a tag: the tag shows whichever block was recorded last, every time."""
    tail = LastValues()
    wide, narrow = _layout("d.a", "d.b"), _layout("d.b")
    for i in range(3):
        tail.record(_block(wide, i, 1, 100 + i))
        assert _values(tail)["d.b"] == 100 + i
        tail.record(_block(narrow, i, 200 + i))
        assert _values(tail)["d.b"] == 200 + i


def test_a_sample_after_a_block_wins_and_the_reverse() -> None:
    tail = LastValues()
    layout = _layout("d.a")
    tail.record(_block(layout, 5, 7))
    tail.record([Sample("d.a", 5, None, Quality.BAD, "timeout")])
    assert tail.select(["d.a"])["d.a"]["reason"] == "timeout"
    tail.record(_block(layout, 6, 8))
    assert _values(tail) == {"d.a": 8}


def test_forget_drops_samples_and_blocks_of_a_device() -> None:
    tail = LastValues()
    tail.record(_block(_layout("d.a", "d.b"), 1, 1, 2))
    tail.record([Sample("d.c", 1, 3.0, Quality.GOOD, None), Sample("e.a", 1, 4.0, Quality.GOOD, None)])
    tail.forget("d.")

    assert _values(tail) == {"e.a": 4.0}
    assert not tail._blocks


def test_a_tag_follows_its_last_block_when_an_overlap_goes_through_a_dropped_layout() -> None:
    """d.a moves from wide to first to second; first is dropped, yet wide and second still share d.a."""
    tail = LastValues()
    wide, first, second = _layout("d.a", "d.b"), _layout("d.a"), _layout("d.a")
    tail.record(_block(wide, 0, 1, 2))
    tail.record(_block(first, 0, 3))
    tail.record(_block(second, 0, 4))
    tail.record(_block(wide, 0, 5, 6))
    tail.record([Sample("d.a", 755, None, Quality.BAD, "timeout")])
    tail.record(_block(second, 755, 7))

    assert _values(tail) == {"d.a": 7, "d.b": 6}
