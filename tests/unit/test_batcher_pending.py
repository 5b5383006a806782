"""While the buffer refuses appends the batcher keeps rows in memory, bounded; the excess is data, not alarms,
and what it discards is declared as an outage once the buffer accepts a gap batch again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.batcher import Batcher
from agent.core.errors import BufferStoreError
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol.signing import generate_key
from agent.protocol.wire import decode_body, frame_tags, open_frame
from buffer import AsyncDiskQueue, QueuedBatch

T0 = 1_700_000_000_000


class RefusingQueue(AsyncDiskQueue):
    """The real queue, with a disk that refuses writes while ``refusing`` is set (an I/O error or a read-only
    remount cannot be produced on this machine's file system from a test)."""

    refusing = True

    async def append(self, batch: QueuedBatch, *, declares: Any = ()) -> None:
        if self.refusing:
            raise BufferStoreError("disk I/O error", recoverable=True)
        await super().append(batch, declares=declares)


def _alarm(i: int) -> list[Any]:
    return ["gas.ch4", T0 + i, "high", "raised", 1.6, 1.5, T0 + i]


def _raw(i: int) -> list[Any]:
    return ["gas.ch4", T0 + i, 0.4, 0, None]


@pytest.fixture
async def queue(tmp_path: Path) -> Any:
    q = RefusingQueue(tmp_path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=frame_tags, sync="normal",
                      min_free_bytes=0)
    await q.open()
    try:
        yield q
    finally:
        await q.close()


async def test_alarms_outlive_data_while_the_buffer_refuses(queue: RefusingQueue, tmp_path: Path) -> None:
    """Over the bound, the oldest data rows are discarded and counted; every alarm row is kept and stored as
    soon as the buffer accepts writes again."""
    batcher = Batcher("gw1", generate_key(tmp_path), queue, max_pending_rows=10)
    await batcher.open()

    await batcher.submit(PipelineOutput(raw=[_raw(i) for i in range(8)]))
    await batcher.submit(PipelineOutput(alarm=[_alarm(i) for i in range(3)], raw=[_raw(i) for i in range(8, 12)]))

    assert batcher.stats.rows_dropped_unbuffered == 5
    queue.refusing = False
    await batcher.flush()
    stored = await queue.peek(10)
    assert [b.kind for b in stored] == ["gap", "alarm", "data"]
    bodies = {b.kind: decode_body(open_frame(b.frame)).tables for b in stored}
    assert len(bodies["alarm"]["alarm"].rows) == 3
    assert [row[1] - T0 for row in bodies["data"]["raw"].rows] == list(range(5, 12))
    # The five discarded data rows are declared, with their time span and tag, before anything else.
    assert bodies["gap"]["outage"].rows == [[T0, T0 + 4, "store_error", ["gas.ch4"], 0]]


async def test_alarms_are_dropped_only_when_nothing_else_is_left(queue: RefusingQueue, tmp_path: Path) -> None:
    """With only alarm rows pending, the bound still holds: the oldest alarms go, counted."""
    batcher = Batcher("gw1", generate_key(tmp_path), queue, max_pending_rows=2)
    await batcher.open()

    await batcher.submit(PipelineOutput(alarm=[_alarm(i) for i in range(5)]))

    assert batcher.stats.rows_dropped_unbuffered == 3
    queue.refusing = False
    await batcher.flush()
    gap, stored = await queue.peek(10)
    assert [row[1] - T0 for row in decode_body(open_frame(stored.frame)).tables["alarm"].rows] == [3, 4]
    # The discarded alarms are declared first, as a collection gap of the refusing buffer.
    assert decode_body(open_frame(gap.frame)).tables["outage"].rows == [[T0, T0 + 2, "store_error", ["gas.ch4"], 0]]
