"""What the batcher declares: the collection gap after an unclean stop, and no pile of gap batches while the
buffer is dropping data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.batcher import Batcher
from agent.core.clock import FakeClock
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol.signing import TrustStore, generate_key
from agent.protocol.tables import OUTAGE_COLUMNS, OUTAGE_TABLE
from agent.protocol.wire import decode_body, frame_tags, open_frame, verify_frame
from buffer import ROW_OVERHEAD, AsyncDiskQueue
from tests.buffer.test_crash import run_and_kill

T_NEW = 1_800_000_000_000
TAGS = ["gas.ch4", "gas.co", "hoist.speed"]


def _raw(ts: int, tag: str = "gas.ch4") -> list[Any]:
    return [tag, ts, 0.4, 0, None]


async def test_after_kill_9_the_first_gap_batch_declares_the_collection_gap(tmp_path: Path) -> None:
    """An appending process killed with SIGKILL: the next start's first batch is a signed gap batch with an
    outage row from the last committed batch's t1 to the first new sample, reason unclean_stop, naming the
    configured tags; it is chained before the first data batch."""
    path = tmp_path / "buffer.sqlite"
    run_and_kill(path, commits=5)
    queue = AsyncDiskQueue(path, max_bytes=1 << 30, frame_tags=frame_tags, min_free_bytes=0)
    await queue.open()
    try:
        (last,) = await queue.peek(1, newest_first=True)
        head = await queue.chain_head()
        signer = generate_key(tmp_path / "key")
        batcher = Batcher("gw-test", signer, queue, outage_tags=TAGS)
        await batcher.open()

        await batcher.submit(PipelineOutput(raw=[_raw(T_NEW + 5), _raw(T_NEW)]))

        stored = await queue.peek(10, exclude=range(1, head[0] + 1))
    finally:
        await queue.close()
    assert [b.kind for b in stored] == ["gap", "data"]
    gap = open_frame(stored[0].frame)
    assert gap.seq == head[0] + 1
    assert gap.prev == head[1]
    verify_frame(stored[0].frame, TrustStore({signer.kid: signer.public_raw}))
    outage = decode_body(gap).tables[OUTAGE_TABLE]
    assert outage.cols == OUTAGE_COLUMNS
    assert outage.rows == [[last.t1_ms, T_NEW, "unclean_stop", TAGS, 0]]  # tags_omitted: the list is complete
    assert gap.t0 <= last.t1_ms
    assert gap.t1 >= T_NEW


async def test_a_clean_stop_declares_no_outage(tmp_path: Path) -> None:
    """After a clean close the next start makes no gap batch."""
    path = tmp_path / "buffer.sqlite"
    signer = generate_key(tmp_path / "key")
    for ts in (T_NEW, T_NEW + 60_000):
        queue = AsyncDiskQueue(path, max_bytes=1 << 30, frame_tags=frame_tags, min_free_bytes=0)
        await queue.open()
        batcher = Batcher("gw-test", signer, queue, outage_tags=TAGS)
        await batcher.open()
        await batcher.submit(PipelineOutput(raw=[_raw(ts)]))
        kinds = [b.kind for b in await queue.peek(10)]
        await queue.close()
    assert kinds == ["data", "data"]


async def test_no_second_gap_batch_while_one_waits_and_the_buffer_drops(tmp_path: Path) -> None:
    """While the buffer evicts data on every append and an earlier gap batch is still unacknowledged, the
    batcher leaves the new drops pending (the buffer coalesces them into one record) instead of adding a gap
    batch per declaration interval; once the gap batch is acknowledged the next declaration covers them all."""
    clock = FakeClock(T_NEW / 1000)
    signer = generate_key(tmp_path / "key")
    probe = AsyncDiskQueue(tmp_path / "probe.sqlite", max_bytes=1 << 30, frame_tags=frame_tags, min_free_bytes=0)
    await probe.open()
    probe_batcher = Batcher("gw-test", signer, probe, clock=clock)
    await probe_batcher.open()
    await probe_batcher.submit(PipelineOutput(raw=[_raw(T_NEW + i, f"t{i}") for i in range(50)]))
    (one,) = await probe.peek(1)
    await probe.close()
    per = len(one.frame) + ROW_OVERHEAD

    queue = AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=per * 4, frame_tags=frame_tags, min_free_bytes=0)
    await queue.open()
    try:
        batcher = Batcher("gw-test", signer, queue, declare_interval_s=0.0, clock=clock)
        await batcher.open()
        for k in range(30):
            await clock.advance(10)
            await batcher.submit(PipelineOutput(raw=[_raw(T_NEW + k * 10_000 + i, f"t{i}") for i in range(50)]))
        stats = await queue.stats()
        assert stats.by_kind["gap"] == 1
        assert stats.condition == "dropping"
        pending = await queue.pending_drops()
        (gap,) = await queue.peek(1, kinds=["gap"])
        # Coalesced: one growing record per run of evicted seqs, and the queued gap batch is what splits them.
        assert pending[0].last_seq == gap.seq - 1
        assert len(pending) == 2
        assert pending[1].first_seq == gap.seq + 1
        await queue.ack([gap.seq])
        await clock.advance(10)
        await batcher.submit(PipelineOutput(raw=[_raw(T_NEW + 999_000, "t0")]))
        gaps = await queue.peek(10, kinds=["gap"])
        assert len(gaps) == 1
        rows = decode_body(open_frame(gaps[0].frame)).tables["gap"].rows
        assert rows[0][0] == pending[0].first_seq
        assert rows[-1][1] >= pending[1].last_seq
    finally:
        await queue.close()
