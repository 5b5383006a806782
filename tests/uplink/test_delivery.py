"""Delivery against a real Mosquitto and the real DiskQueue: everything arrives, on the right topic, and
leaves the buffer only after delivery; the status topic tells whether the gateway is online."""

from __future__ import annotations

import asyncio
import json

import aiomqtt

from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.blackhole_proxy import BlackholeProxy
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import DEADLINE_S, GW, PREFIX, Collector, Producer, mqtt_config, running, wait_until


async def test_everything_appended_arrives_and_leaves_the_buffer(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """Batches appended before and while the uplink runs all reach a subscriber and are then deleted."""
    await producer.append(30)
    uplink = MqttUplink(mqtt_config(broker.port), GW, queue)
    async with Collector(broker.port) as collector, running(uplink):
        await producer.append(20, kind="alarm")
        await producer.append(30)
        await wait_until(lambda: collector.unique >= set(producer.appended), "all seqs delivered")
        await wait_until(lambda: uplink.stats.acked == 80, what="all deleted")

    assert await producer.stored() == set()
    assert uplink.stats.published >= 80
    assert collector.topics[31] == f"{PREFIX}/{GW}/batch/alarm"
    assert collector.topics[1] == f"{PREFIX}/{GW}/batch/data"


async def test_status_is_retained_online_while_connected_and_offline_after_shutdown(
    broker: Mosquitto, queue: AsyncDiskQueue
) -> None:
    """A late subscriber sees a retained "online"; after a clean shutdown the retained status is "offline"."""
    uplink = MqttUplink(mqtt_config(broker.port), GW, queue)
    async with running(uplink):
        await wait_until(lambda: uplink.stats.connected, what="connected")
        online = await _retained_status(broker.port)
    offline = await _retained_status(broker.port)

    assert online["state"] == "online"
    assert offline["state"] == "offline"
    assert offline["ts"] >= online["ts"]


async def test_last_will_marks_the_gateway_offline_when_its_connection_drops(
    broker: Mosquitto, queue: AsyncDiskQueue
) -> None:
    """A connection cut without DISCONNECT makes the broker publish the retained will "offline"; the next
    connection says "online" again."""
    async with BlackholeProxy(broker.port) as proxy:
        uplink = MqttUplink(mqtt_config(proxy.port, reconnect_max_s=60.0), GW, queue)
        async with running(uplink):
            await wait_until(lambda: uplink.stats.connected, what="connected")
            proxy.blackhole()  # keep the uplink from reconnecting, so the will is the last word
            await proxy.reset()
            await wait_until(lambda: not uplink.stats.connected, what="uplink notices the cut")
            status = await _retained_status(broker.port)

    assert status["state"] == "offline"


async def test_client_id_defaults_to_one_fixed_per_gateway(broker: Mosquitto, queue: AsyncDiskQueue) -> None:
    """The persistent session is keyed by 'mine-agent-<gateway>' unless mqtt.client_id says otherwise."""
    default = MqttUplink(mqtt_config(broker.port), GW, queue)
    chosen = MqttUplink(mqtt_config(broker.port, client_id="plant-7"), GW, queue)

    assert default.client_id == f"mine-agent-{GW}"
    assert chosen.client_id == "plant-7"


async def _retained_status(port: int) -> dict[str, int | str]:
    async with asyncio.timeout(DEADLINE_S), aiomqtt.Client("127.0.0.1", port, timeout=10) as client:
        await client.subscribe(f"{PREFIX}/{GW}/status", qos=1)
        async for message in client.messages:
            return json.loads(bytes(message.payload))  # type: ignore[arg-type, no-any-return]
    raise AssertionError("no status message")
