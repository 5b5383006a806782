"""Outages against a real Mosquitto: killed, frozen, and a link that goes silent. A batch leaves the buffer
only after its PUBACK; a missing PUBACK means reconnect and resend, so every seq arrives at least once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import pytest
from structlog.testing import capture_logs

from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.blackhole_proxy import BlackholeProxy
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import GW, Collector, Producer, mqtt_config, running, wait_until

# A dead link must be noticed within seconds, not TCP's ~15 minutes of retransmissions. The uplink under test
# uses publish_timeout_s=2 and keepalive_s=5; the bound below is generous because the machine is shared.
NOTICE_BOUND_S = 20.0


async def test_broker_killed_mid_stream_loses_nothing(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """After a broker crash and restart every seq arrives, and batches appended during the outage stay in the
    buffer until then."""
    async with BlackholeProxy(broker.port) as proxy, Collector(broker.port) as collector:
        uplink = MqttUplink(mqtt_config(proxy.port), GW, queue)
        async with running(uplink):
            await producer.append(40)
            await wait_until(lambda: len(collector.unique) >= 10, "first deliveries")
            broker.kill()
            during = await producer.append(40)
            await wait_until(lambda: not uplink.stats.connected, "uplink notices the crash")
            await wait_until(lambda: not collector.connected.is_set(), "collector notices the crash")
            kept = await producer.stored()
            # Hold the uplink off until the subscriber is back: with persistence off, a batch the restarted
            # broker acknowledges before anyone subscribed would be acknowledged and dropped.
            proxy.refuse()
            broker.start()
            await wait_until(collector.connected.is_set, "collector back")
            proxy.heal()
            await wait_until(lambda: collector.unique >= set(producer.appended), "every seq delivered")
            await wait_until(lambda: uplink.stats.acked == 80, "all deleted after delivery")

    assert set(during) <= kept
    assert uplink.stats.reconnects >= 1
    assert uplink.stats.outages == 1


async def test_frozen_broker_times_out_reconnects_and_delivers_everything(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A broker that stops answering (SIGSTOP) makes publishes time out; nothing is deleted meanwhile, and
    everything arrives after it resumes."""
    uplink = MqttUplink(mqtt_config(broker.port, publish_timeout_s=1.0), GW, queue)
    async with Collector(broker.port) as collector, running(uplink):
        await producer.append(20)
        await wait_until(lambda: collector.unique >= set(producer.appended), "first deliveries")
        broker.pause()
        try:
            during = await producer.append(20)
            await wait_until(lambda: uplink.stats.publish_timeouts >= 1, "a publish timeout")
            kept = await producer.stored()
        finally:
            broker.resume()
        await wait_until(lambda: collector.unique >= set(producer.appended), "every seq delivered")
        await wait_until(lambda: not uplink.stats.inflight and uplink.stats.acked >= 40, "all deleted")

    assert set(during) <= kept
    assert await producer.stored() == set()


async def test_blackholed_link_is_noticed_within_seconds_and_heals_without_a_gap(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A link that silently drops everything (no FIN, no RST) is noticed by the publish timeout; nothing sent
    into it is counted as delivered, and after healing every seq arrives."""
    async with BlackholeProxy(broker.port) as proxy, Collector(broker.port) as collector:
        uplink = MqttUplink(mqtt_config(proxy.port), GW, queue)
        async with running(uplink):
            await producer.append(20)
            await wait_until(lambda: collector.unique >= set(producer.appended), "first deliveries")
            proxy.blackhole()
            cut = time.monotonic()
            during = await producer.append(20)
            await wait_until(lambda: uplink.stats.outages >= 1, "uplink notices the silent link")
            noticed_after = time.monotonic() - cut
            kept = await producer.stored()
            proxy.heal()
            await wait_until(lambda: collector.unique >= set(producer.appended), "every seq delivered")
            await wait_until(lambda: uplink.stats.acked >= 40, "all deleted")

    assert noticed_after < NOTICE_BOUND_S
    assert set(during) <= kept
    assert uplink.stats.publish_timeouts >= 1
    assert sorted(collector.unique) == list(range(1, 41))


async def test_publishes_are_pipelined_up_to_max_inflight(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """Up to ``max_inflight`` publishes await their PUBACK at once, never more, and none is deleted early."""
    uplink = MqttUplink(mqtt_config(broker.port, max_inflight=4, publish_timeout_s=60.0), GW, queue)
    async with Collector(broker.port) as collector, running(uplink):
        await wait_until(lambda: uplink.stats.connected, "connected")
        broker.pause()
        try:
            await producer.append(10)
            await wait_until(lambda: uplink.stats.inflight == 4, "window full")
            peak_while_frozen = uplink.stats.inflight
            kept = await producer.stored()
        finally:
            broker.resume()
        await wait_until(lambda: collector.unique == set(range(1, 11)), "every seq delivered")
        await wait_until(lambda: uplink.stats.acked == 10, "all deleted")

    assert peak_while_frozen == 4
    assert kept == set(range(1, 11))
    assert uplink.stats.publish_timeouts == 0


@pytest.mark.slow
async def test_idle_blackholed_link_is_noticed_by_keepalive(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """With nothing to publish, a silent link is still noticed (keepalive: within 1-2x keepalive_s) and the
    first batch appended afterwards is delivered once the link heals."""
    async with BlackholeProxy(broker.port) as proxy, Collector(broker.port) as collector:
        uplink = MqttUplink(mqtt_config(proxy.port), GW, queue)
        async with running(uplink):
            await wait_until(lambda: uplink.stats.connected, "connected")
            proxy.blackhole()
            await wait_until(lambda: uplink.stats.outages >= 1, "keepalive expiry", limit_s=3 * 5 + 15)
            proxy.heal()
            await producer.append(1)
            await wait_until(lambda: collector.unique == {1}, "delivered after healing")

    assert uplink.stats.publish_timeouts == 0


async def test_reconnecting_many_times_leaves_no_sockets_behind(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """Each dropped client's socket and paho's internal socket pair are closed, not left to the GC."""
    async with BlackholeProxy(broker.port) as proxy:
        uplink = MqttUplink(mqtt_config(proxy.port, reconnect_max_s=0.5), GW, queue)
        async with running(uplink):
            await wait_until(lambda: uplink.stats.connected, "connected")
            before = _open_fds()
            for i in range(1, 11):
                await proxy.reset()
                await wait_until(lambda i=i: uplink.stats.reconnects == i and uplink.stats.connected,
                                 "reconnected")
            after = _open_fds()

    assert after - before <= 2


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
async def test_an_outage_is_one_warning_and_its_duration_is_logged_on_recovery(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """Failed reconnects during an outage add no warnings; recovery reports how long the outage lasted."""
    async with BlackholeProxy(broker.port, connect_timeout=1.0) as proxy, Collector(broker.port) as collector:
        uplink = MqttUplink(mqtt_config(proxy.port, publish_timeout_s=1.0, connect_timeout_s=1.0), GW, queue)
        with capture_logs() as logs:
            async with running(uplink):
                await producer.append(3)
                await wait_until(lambda: uplink.stats.acked == 3, "first deliveries")
                proxy.blackhole()
                await producer.append(1)
                await wait_until(lambda: uplink.stats.connect_failures >= 2, "reconnects into the black hole")
                proxy.heal()
                await wait_until(lambda: collector.unique == {1, 2, 3, 4}, "delivered after healing")

    warnings = [e for e in logs if e["log_level"] == "warning"]
    restored = [e for e in logs if e["event"] == "uplink_restored"]
    assert [(e["event"], e["seq"]) for e in warnings] == [("uplink_down", 4)]
    assert len(restored) == 1
    assert restored[0]["outage_s"] >= 1.0


async def test_shutdown_during_a_silent_link_is_bounded_and_keeps_the_batches(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """Cancelling run() while publishes hang in a black hole returns promptly and deletes nothing unacked."""
    async with BlackholeProxy(broker.port) as proxy:
        uplink = MqttUplink(mqtt_config(proxy.port, publish_timeout_s=60.0), GW, queue)
        task = asyncio.create_task(uplink.run())
        await wait_until(lambda: uplink.stats.connected, "connected")
        proxy.blackhole()
        await producer.append(5)
        await wait_until(lambda: uplink.stats.inflight == 5, "publishes hanging")
        started = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        took = time.monotonic() - started

    # The goodbye ("offline" + DISCONNECT) is given SHUTDOWN_TIMEOUT_S (3 s); the rest is slack for load.
    assert took < 10.0
    assert await producer.stored() == {1, 2, 3, 4, 5}
