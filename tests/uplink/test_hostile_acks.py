"""Messages on ``<prefix>/<gw>/ack`` from someone other than the archive: they delete nothing and never stop
the uplink. Run against a real Mosquitto, with the attacker as just another MQTT client."""

from __future__ import annotations

import aiomqtt

from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import GW, PREFIX, Producer, mqtt_config, running, wait_until


async def _publish_ack(port: int, payload: bytes | str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="attacker", timeout=10) as client:
        await client.publish(f"{PREFIX}/{GW}/ack", payload, qos=1, timeout=10)


async def test_an_unsigned_ack_from_anyone_deletes_nothing(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A JSON ack covering every seq, published by a client that is not the archive, leaves the buffer whole."""
    await producer.append(3)
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue)
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 3, "all PUBACKed")
        await _publish_ack(broker.port, '{"acked": [[1, 1000]]}')
        await wait_until(lambda: uplink.stats.bad_backend_acks == 1, "the ack counted as malformed")

    assert await producer.stored() == {1, 2, 3}


async def test_an_ack_with_an_infinite_seq_does_not_stop_the_uplink(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """``{"acked": [[1, Infinity]]}`` is counted as malformed; the uplink keeps publishing afterwards."""
    await producer.append(2)
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue)
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 2, "both PUBACKed")
        await _publish_ack(broker.port, '{"acked": [[1, Infinity]]}')
        await wait_until(lambda: uplink.stats.bad_backend_acks == 1, "the ack counted as malformed", limit_s=10)
        await producer.append(1)
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 3, "the next batch PUBACKed")

    assert await producer.stored() == {1, 2, 3}
