"""AsyncDiskQueue: the DiskQueue's methods on one worker thread, and waiting for data."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from agent.protocol import wire
from buffer import AsyncDiskQueue
from tests.buffer.frames import ChainMaker


async def test_calls_run_on_one_worker_thread_not_the_loop(tmp_path: Path) -> None:
    """Every call runs in the same dedicated thread, never on the event loop's thread."""
    seen: set[str] = set()
    loop_thread = threading.current_thread().name

    def spy(_: Path) -> int:
        seen.add(threading.current_thread().name)
        return 1 << 40

    async with AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags, free_disk=spy) as q:
        chain = ChainMaker()
        for _ in range(5):
            await q.append(chain.next())

    assert len(seen) == 1
    assert loop_thread not in seen


async def test_append_peek_ack_round_trip(tmp_path: Path) -> None:
    """The coroutine methods behave like the synchronous ones."""
    async with AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags) as q:
        chain = ChainMaker()
        batches = [chain.next() for _ in range(3)]
        for b in batches:
            await q.append(b)

        assert await q.peek(10) == batches
        assert await q.ack([1, 2]) == 2
        assert (await q.chain_head())[0] == 3
        assert (await q.stats()).batches == 1
        assert await q.pending_drops() == []


async def test_wait_for_data_wakes_on_append(tmp_path: Path) -> None:
    """A waiter returns True as soon as a batch is appended, well before its timeout."""
    async with AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags) as q:
        waiter = asyncio.create_task(q.wait_for_data(600))
        await asyncio.sleep(0)
        await q.append(ChainMaker().next())

        assert await asyncio.wait_for(waiter, 60) is True


async def test_wait_for_data_sees_an_append_made_before_the_wait(tmp_path: Path) -> None:
    """An append between the uplink's empty peek and its wait is not missed."""
    async with AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags) as q:
        await q.append(ChainMaker().next())

        assert await q.wait_for_data(600) is True


async def test_wait_for_data_times_out_when_idle(tmp_path: Path) -> None:
    """With nothing appended, wait_for_data returns False after its timeout."""
    async with AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags) as q:
        assert await q.wait_for_data(0.05) is False


async def test_a_blocked_worker_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """While an append is stuck in the worker (a slow fsync, here a gate), the loop keeps running: it is
    the loop that opens the gate. Were the append run on the loop, the gate would stay shut."""
    gate = threading.Event()
    opened_in_time: list[bool] = []

    def slow_free_disk(_: Path) -> int:
        opened_in_time.append(gate.wait(60))
        return 1 << 40

    async with AsyncDiskQueue(tmp_path / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags,
                              free_disk=slow_free_disk) as q:
        pending = asyncio.create_task(q.append(ChainMaker().next()))
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.wait_for(pending, 60)

    assert opened_in_time == [True]
