"""End-to-end acknowledgement (``ack_mode = "backend"``, the default): a batch leaves the buffer only when an
ack signed by the archive on ``<prefix>/<gw>/ack`` covers it; a batch not acknowledged within
``ack_timeout_s`` is sent again. Hostile acks are in test_hostile_acks.py."""

from __future__ import annotations

from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import BatchSigner
from agent.uplink import MqttUplink, load_archive_keys
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import (
    GW,
    PREFIX,
    Collector,
    Producer,
    archive_keys,
    mqtt_config,
    running,
    signed_ack,
    wait_until,
)


async def _send_ack(port: int, payload: bytes) -> None:
    async with aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        await client.publish(f"{PREFIX}/{GW}/ack", payload, qos=1, timeout=10)


async def test_pubacked_batches_stay_until_the_archive_acks_their_runs(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A PUBACK alone deletes nothing; a signed ack of the runs [1, 4] and [7, 7] deletes exactly those seqs."""
    await producer.append(8)
    hashes = {b.seq: b.hash for b in await queue.peek(100)}
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue)
    async with Collector(broker.port, ack=False) as collector, running(uplink):
        await wait_until(lambda: collector.unique == set(range(1, 9)), "all delivered to the broker")
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 8, "all PUBACKed")
        kept_after_puback = await producer.stored()
        await _send_ack(broker.port, signed_ack([(1, 4, hashes[4]), (7, 7, hashes[7])]))
        await wait_until(lambda: uplink.stats.acked == 5, "acked ones deleted")

    assert kept_after_puback == set(range(1, 9))
    assert await producer.stored() == {5, 6, 8}
    assert (uplink.stats.bad_backend_acks, uplink.stats.unverified_acks) == (0, 0)


async def test_batches_without_backend_ack_are_resent_after_ack_timeout(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """When the backend stays silent, every batch is published again after ``ack_timeout_s`` and kept."""
    await producer.append(5)
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=1.0), GW, queue)
    async with Collector(broker.port, ack=False) as collector, running(uplink):
        await wait_until(lambda: all(collector.seqs.count(s) >= 2 for s in range(1, 6)), "each sent twice")

    assert uplink.stats.backend_ack_timeouts >= 5
    assert await producer.stored() == set(range(1, 6))


async def test_acknowledging_backend_receives_everything_and_the_buffer_empties(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """With an archive that acks each batch after receiving it, all batches arrive and are then deleted."""
    await producer.append(30)
    uplink = MqttUplink(mqtt_config(broker.port), GW, queue)
    async with Collector(broker.port, ack=True) as collector, running(uplink):
        await producer.append(30, kind="alarm")
        await wait_until(lambda: uplink.stats.acked == 60, "all acked end to end")

    assert collector.unique == set(range(1, 61))
    assert await producer.stored() == set()


async def test_the_archive_keys_file_is_what_the_uplink_trusts(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer, tmp_path: Path
) -> None:
    """An uplink whose archive_keys_file lists another key deletes nothing on the test archive's acks, and
    deletes once use_archive_keys (a reload) gives it the right one."""
    other = tmp_path / "other.keys"
    other.write_text(BatchSigner(Ed25519PrivateKey.generate()).public_text + "\n")
    config = mqtt_config(broker.port, ack_timeout_s=300.0, archive_keys_file=other)
    await producer.append(2)
    uplink = MqttUplink(config, GW, queue, archive_keys=load_archive_keys(config))
    hashes = {b.seq: b.hash for b in await queue.peek(100)}
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 2, "both PUBACKed")
        await _send_ack(broker.port, signed_ack([(1, 2, hashes[2])]))
        await wait_until(lambda: uplink.stats.unverified_acks == 1, "the ack refused")
        uplink.use_archive_keys(archive_keys())
        await _send_ack(broker.port, signed_ack([(1, 2, hashes[2])]))
        await wait_until(lambda: uplink.stats.acked == 2, "both deleted")

    assert await producer.stored() == set()
