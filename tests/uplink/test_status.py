"""The retained status tells the truth: ``publishing`` and ``reason`` follow the buffer's condition, ``cat``
the tag catalogue in force."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.batcher import Batcher
from agent.core.errors import BufferFull
from agent.protocol import wire
from agent.protocol.signing import generate_key
from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import GW, PREFIX, Producer, mqtt_config, running, wait_until

MIB = 1 << 20


@pytest.fixture
async def tight(tmp_path: Path) -> AsyncIterator[tuple[AsyncDiskQueue, dict[str, int]]]:
    """A real queue whose file system reports the free space the test sets."""
    free = {"bytes": 1 << 40}
    q = AsyncDiskQueue(tmp_path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags, sync="normal",
                       min_free_bytes=64 * MIB, free_disk=lambda _: free["bytes"], disk_size=lambda _: 1 << 40)
    await q.open()
    try:
        yield q, free
    finally:
        await q.close()


async def _statuses(port: int, seen: list[dict[str, Any]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        await client.subscribe(f"{PREFIX}/{GW}/status", qos=1)
        async for message in client.messages:
            seen.append(json.loads(bytes(message.payload)))  # type: ignore[arg-type]


async def test_status_says_not_publishing_while_the_disk_is_full_and_recovers(
    broker: Mosquitto, tight: tuple[AsyncDiskQueue, dict[str, int]]
) -> None:
    """online + publishing; the disk fills and appends are refused: a new retained status says publishing
    false, reason disk_full; space returns and an append succeeds: publishing true again. The last will and a
    clean stop say offline, not publishing."""
    queue, free = tight
    producer = Producer(queue)
    seen: list[dict[str, Any]] = []
    uplink = MqttUplink(mqtt_config(broker.port), GW, queue)
    watcher = asyncio.create_task(_statuses(broker.port, seen))
    try:
        async with running(uplink):
            await wait_until(lambda: any(s["state"] == "online" for s in seen), "online")
            first = next(s for s in seen if s["state"] == "online")
            assert (first["publishing"], first["reason"]) == (True, None)
            free["bytes"] = 1 * MIB
            with pytest.raises(BufferFull):
                await producer.append()
            await wait_until(lambda: seen[-1].get("reason") == "disk_full", "status says disk_full")
            assert seen[-1]["state"] == "online"
            assert seen[-1]["publishing"] is False
            free["bytes"] = 1 << 40
            await producer.append()
            await wait_until(lambda: seen[-1].get("publishing") is True, "status says publishing again")
        await wait_until(lambda: seen[-1]["state"] == "offline", "offline after stop")
        assert seen[-1]["publishing"] is False
        assert seen[-1]["reason"] == "stopped"
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)



async def test_status_names_the_catalogue_in_force_and_follows_a_new_one(broker: Mosquitto, tmp_path: Path) -> None:
    """The status carries ``cat``, the seq of the catalogue the real batcher put in force: 0 before there is
    one; when the batcher stores a catalogue batch, a new retained status names its seq (online, publishing
    unchanged), a subscriber arriving later gets it retained, and the clean stop's offline status keeps it."""
    queue = AsyncDiskQueue(tmp_path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags,
                           sync="normal")
    await queue.open()
    batcher = Batcher(GW, generate_key(tmp_path / "keys"), queue, catalog_state=tmp_path / "catalog.json")
    await batcher.open()
    seen: list[dict[str, Any]] = []
    uplink = MqttUplink(mqtt_config(broker.port), GW, queue, catalogue=lambda: batcher.cat)
    watcher = asyncio.create_task(_statuses(broker.port, seen))
    try:
        async with running(uplink):
            await wait_until(lambda: any(s["state"] == "online" for s in seen), "online")
            assert next(s for s in seen if s["state"] == "online")["cat"] == 0
            batcher.set_catalog([["plc1.ch4", "%CH4", "float32", "methane", 1.0, 0.0, 0.0, 5.0, "shaft 3"]])
            await batcher.flush()
            assert batcher.cat == 1
            await wait_until(lambda: seen[-1].get("cat") == 1, "status names catalogue 1")
            assert (seen[-1]["state"], seen[-1]["publishing"], seen[-1]["reason"]) == ("online", True, None)
            late: list[dict[str, Any]] = []
            late_watcher = asyncio.create_task(_statuses(broker.port, late))
            try:
                await wait_until(lambda: bool(late), "the retained status")
            finally:
                late_watcher.cancel()
                await asyncio.gather(late_watcher, return_exceptions=True)
            assert (late[0]["state"], late[0]["cat"]) == ("online", 1)
        await wait_until(lambda: seen[-1]["state"] == "offline", "offline after stop")
        assert (seen[-1]["reason"], seen[-1]["cat"]) == ("stopped", 1)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await queue.close()
