"""A batch's t1 is true: every time its rows cover lies within [t0, t1], whatever the row kinds and clocks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.batcher import Batcher
from agent.pipeline.aggregates import window_row
from agent.pipeline.column_rows import ColumnRows, Repeated
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol import wire
from agent.protocol.signing import generate_key
from buffer import AsyncDiskQueue

T0 = 1_700_000_000_000
W = 10_000


def _win(tag: str, start: int) -> list[Any]:
    return window_row(tag, start, W, 2, 2, 0, 1.0, 2.0, 1.5, 2.0, 0, 2, 1.5, 0.5, 1.0, start + 100, start + 9_900,
                      start + 100, start + 9_900, 0)


def _times_outside(batch: wire.Batch) -> list[tuple[str, str, int]]:
    """Every (table, column, time) of the decoded body outside [t0, t1]: offset and ``*_ms`` columns, and a
    window's end."""
    out = []
    for name, table in wire.decode_body(batch).tables.items():
        for row in table.rows:
            values = dict(zip(table.cols, row, strict=True))
            if "start" in values and "dur_ms" in values:
                values["end"] = values["start"] + values["dur_ms"]
            for col, value in values.items():
                timed = col in ("ts", "start", "end") or (col.endswith("_ms") and col != "dur_ms")
                if timed and value is not None and not batch.t0 <= value <= batch.t1:
                    out.append((name, col, value))
    return out


@pytest.fixture
async def queue(tmp_path: Path) -> Any:
    q = AsyncDiskQueue(tmp_path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags, sync="normal",
                       min_free_bytes=0)
    await q.open()
    try:
        yield q
    finally:
        await q.close()


async def _stored(queue: AsyncDiskQueue) -> list[wire.Batch]:
    return [wire.open_frame(b.frame) for b in await queue.peek(100)]


async def test_alarm_detected_after_its_last_sample_is_within_t1(queue: AsyncDiskQueue, tmp_path: Path) -> None:
    """An alarm noticed by the timer well after its sample (detected_ms > ts) is inside [t0, t1]; so is one
    stamped by a device whose clock runs ahead of the gateway's (detected_ms < ts)."""
    batcher = Batcher("gw1", generate_key(tmp_path), queue)
    await batcher.open()
    alarms = [["gas.ch4", T0, "stuck", "raised", 1.0, 0.1, T0 + 65_000],
              ["gas.co", T0 + 5_000, "high", "raised", 30.0, 25.0, T0 + 2_000]]

    await batcher.submit(PipelineOutput(alarm=alarms))

    (batch,) = await _stored(queue)
    assert (batch.t0, batch.t1) == (T0, T0 + 65_000)
    assert _times_outside(batch) == []


async def test_window_end_bounds_t1_on_both_row_paths(queue: AsyncDiskQueue, tmp_path: Path) -> None:
    """Window rows as lists and as columns (ColumnRows) both extend t1 to their window end."""
    batcher = Batcher("gw1", generate_key(tmp_path), queue)
    await batcher.open()
    columns = ColumnRows(window_row(["a.x", "a.y"], Repeated(T0 + W, 2), Repeated(W, 2), Repeated(2, 2),
                                    Repeated(2, 2), Repeated(0, 2), [1.0, 1.0], [2.0, 2.0], [1.5, 1.5], [2.0, 2.0],
                                    Repeated(0, 2), Repeated(2, 2), [1.5, 1.5], [0.5, 0.5], [1.0, 1.0],
                                    Repeated(T0 + W + 100, 2), Repeated(T0 + 2 * W - 1, 2), [T0 + W + 100] * 2,
                                    [T0 + 2 * W - 1] * 2, Repeated(0, 2)))

    await batcher.submit(PipelineOutput(win=[_win("b.z", T0)], win_blocks=[columns],
                                        raw=[["b.z", T0 + 3, 1.0, 0, None]]))

    (batch,) = await _stored(queue)
    assert (batch.t0, batch.t1) == (T0, T0 + 2 * W)
    assert _times_outside(batch) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    alarms=st.lists(st.tuples(st.integers(0, 10**6), st.integers(-10**5, 10**6)), max_size=5),
    windows=st.lists(st.integers(0, 100), max_size=5),
    raws=st.lists(st.integers(0, 10**6), max_size=5),
)
async def test_every_time_in_every_batch_is_within_t0_t1(
    tmp_path_factory: pytest.TempPathFactory, alarms: list[tuple[int, int]], windows: list[int], raws: list[int]
) -> None:
    """Any mix of rows, in batches of at most three rows: nothing a batch holds lies outside [t0, t1]."""
    if not (alarms or windows or raws):
        return
    path = tmp_path_factory.mktemp("b")
    q = AsyncDiskQueue(path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags, sync="normal",
                       min_free_bytes=0)
    await q.open()
    try:
        batcher = Batcher("gw1", generate_key(path), q, max_rows=3)
        await batcher.open()
        await batcher.submit(PipelineOutput(
            alarm=[["a.x", T0 + ts, "high", "raised", 2.0, 1.0, T0 + ts + lag] for ts, lag in alarms],
            win=[_win("a.x", T0 + k * W) for k in windows],
            raw=[["a.x", T0 + ts, 1.0, 0, None] for ts in raws],
        ))
        for batch in await _stored(q):
            assert batch.t0 <= batch.t1
            assert _times_outside(batch) == []
    finally:
        await q.close()
