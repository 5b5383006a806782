"""Fault soak: the broker goes down, then the link is black-holed, then it flaps, while batches keep being
appended. Afterwards every seq has arrived and the buffer is empty. The short run is part of the slow suite;
``pytest -m soak`` runs the long one."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import pytest

from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.blackhole_proxy import BlackholeProxy
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import GW, Collector, Producer, mqtt_config, running, wait_until


@dataclass(frozen=True)
class Faults:
    phase_s: float  # how long the broker stays down, and how long the link stays black-holed
    flaps: int  # then this many cycles of (broken, healthy)
    flap_s: float


async def _feed(producer: Producer, interval: float) -> None:
    """One batch every ``interval`` seconds; every tenth is an alarm."""
    n = 0
    while True:
        n += 1
        await producer.append(1, kind="alarm" if n % 10 == 0 else "data")
        await asyncio.sleep(interval)


async def _soak(broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer, faults: Faults,
                ack_mode: str) -> tuple[MqttUplink, Collector, set[int]]:
    async with BlackholeProxy(broker.port, connect_timeout=1.0) as proxy, \
            Collector(broker.port, ack=ack_mode == "backend") as collector:
        config = mqtt_config(proxy.port, publish_timeout_s=1.0, connect_timeout_s=1.0, ack_mode=ack_mode,
                             ack_timeout_s=5.0)
        uplink = MqttUplink(config, GW, queue)
        async with running(uplink):
            feeder = asyncio.create_task(_feed(producer, 0.05), name="test.feeder")
            try:
                await wait_until(lambda: len(collector.unique) >= 5, "first deliveries")
                # 1. broker down
                broker.kill()
                await asyncio.sleep(faults.phase_s)
                proxy.refuse()  # keep the uplink off until the subscriber is back (broker persistence is off)
                broker.start()
                await wait_until(collector.connected.is_set, "collector back")
                proxy.heal()
                await wait_until(lambda: uplink.stats.connected, "uplink back after the broker")
                # 2. silent link
                proxy.blackhole()
                await asyncio.sleep(faults.phase_s)
                proxy.heal()
                await wait_until(lambda: uplink.stats.connected, "uplink back after the black hole")
                # 3. flapping: black hole and hard resets in turn
                for i in range(faults.flaps):
                    if i % 2:
                        await proxy.reset()
                    else:
                        proxy.blackhole()
                    await asyncio.sleep(faults.flap_s)
                    proxy.heal()
                    await asyncio.sleep(faults.flap_s)
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
            # A cancelled append may still have committed: the chain head says what was appended.
            head, _ = await queue.chain_head()
            expected = set(range(1, head + 1))
            await wait_until(lambda: collector.unique >= expected, "every seq delivered", limit_s=120)
            await wait_until(lambda: uplink.stats.acked >= head, "all deleted", limit_s=120)
    return uplink, collector, expected


@pytest.mark.slow
@pytest.mark.parametrize("ack_mode", ["broker", "backend"])
async def test_short_fault_soak_delivers_every_seq(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer, ack_mode: str
) -> None:
    """Down, black-holed, flapping: no seq is missing afterwards and the buffer is empty."""
    faults = Faults(phase_s=2.0, flaps=4, flap_s=1.5)
    uplink, collector, appended = await _soak(broker, queue, producer, faults, ack_mode)

    assert collector.unique == appended
    assert await producer.stored() == set()
    assert uplink.stats.outages >= 3


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("ack_mode", ["broker", "backend"])
async def test_long_fault_soak_delivers_every_seq(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer, ack_mode: str
) -> None:
    """The same for minutes: 30 s down, 30 s black-holed, 40 flaps of 3 s."""
    faults = Faults(phase_s=30.0, flaps=40, flap_s=3.0)
    uplink, collector, appended = await _soak(broker, queue, producer, faults, ack_mode)

    assert collector.unique == appended
    assert await producer.stored() == set()
    assert uplink.stats.outages >= 3
