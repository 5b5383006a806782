"""End-to-end acknowledgement (``ack_mode = "backend"``): a batch leaves the buffer only when the backend's
ack on ``<prefix>/<gw>/ack`` covers it; a batch not acknowledged within ``ack_timeout_s`` is sent again."""

from __future__ import annotations

import json

import aiomqtt

from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import GW, PREFIX, Collector, Producer, mqtt_config, running, wait_until


async def _send_ack(port: int, payload: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        await client.publish(f"{PREFIX}/{GW}/ack", payload, qos=1, timeout=10)


async def test_pubacked_batches_stay_until_the_backend_acks_their_range(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A PUBACK alone deletes nothing; an ack of [[1, 4], [7, 7]] deletes exactly those seqs."""
    await producer.append(8)
    uplink = MqttUplink(mqtt_config(broker.port, ack_mode="backend", ack_timeout_s=300.0), GW, queue)
    async with Collector(broker.port) as collector, running(uplink):
        await wait_until(lambda: collector.unique == set(range(1, 9)), "all delivered to the broker")
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 8, "all PUBACKed")
        kept_after_puback = await producer.stored()
        await _send_ack(broker.port, json.dumps({"acked": [[1, 4], [7, 7]]}))
        await wait_until(lambda: uplink.stats.acked == 5, "acked ones deleted")

    assert kept_after_puback == set(range(1, 9))
    assert await producer.stored() == {5, 6, 8}


async def test_batches_without_backend_ack_are_resent_after_ack_timeout(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """When the backend stays silent, every batch is published again after ``ack_timeout_s`` and kept."""
    await producer.append(5)
    uplink = MqttUplink(mqtt_config(broker.port, ack_mode="backend", ack_timeout_s=1.0), GW, queue)
    async with Collector(broker.port) as collector, running(uplink):
        await wait_until(lambda: all(collector.seqs.count(s) >= 2 for s in range(1, 6)), "each sent twice")

    assert uplink.stats.backend_ack_timeouts >= 5
    assert await producer.stored() == set(range(1, 6))


async def test_acknowledging_backend_receives_everything_and_the_buffer_empties(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """With a backend that acks each batch after receiving it, all batches arrive and are then deleted."""
    await producer.append(30)
    uplink = MqttUplink(mqtt_config(broker.port, ack_mode="backend"), GW, queue)
    async with Collector(broker.port, ack=True) as collector, running(uplink):
        await producer.append(30, kind="alarm")
        await wait_until(lambda: uplink.stats.acked == 60, "all acked end to end")

    assert collector.unique == set(range(1, 61))
    assert await producer.stored() == set()


async def test_malformed_backend_ack_is_counted_and_deletes_nothing(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """An ack that is not ``{"acked": [[first, last], ...]}`` is ignored and counted."""
    await producer.append(3)
    uplink = MqttUplink(mqtt_config(broker.port, ack_mode="backend", ack_timeout_s=300.0), GW, queue)
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 3, "all PUBACKed")
        await _send_ack(broker.port, '{"acked": [[3, 1]]}')
        await _send_ack(broker.port, "not json")
        await wait_until(lambda: uplink.stats.bad_backend_acks == 2, "both counted")

    assert await producer.stored() == {1, 2, 3}
