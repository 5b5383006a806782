"""Fixtures for the uplink tests: the real DiskQueue and a producer appending to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.protocol import wire
from buffer import AsyncDiskQueue
from tests.uplink.harness import Producer


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[AsyncDiskQueue]:
    q = AsyncDiskQueue(tmp_path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags, sync="normal",
                       min_free_bytes=0)
    await q.open()
    try:
        yield q
    finally:
        await q.close()


@pytest.fixture
def producer(queue: AsyncDiskQueue) -> Producer:
    return Producer(queue)
