"""Replay order after an outage: alarms and gap batches first, then the newest data and the oldest backlog
sharing the publish slots by ``backlog_share``. One slot (``max_inflight=1``) makes the order exact.

The lanes do not depend on the ack mode; these tests run in broker mode with a plain subscriber, whose arrival
order is then the publish order (a subscriber that also publishes acks falls behind what the broker holds
for it, which blurs "how many went out before")."""

from __future__ import annotations

import pytest

from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import GW, Collector, Producer, mqtt_config, running, wait_until


def replay_model(urgent: list[int], data: list[int], share: float) -> list[int]:
    """The documented order: urgent oldest first; then, while newest and oldest data differ, a credit of
    ``share`` per slot picks the oldest when it reaches 1, otherwise the newest."""
    order, pending, credit = list(urgent), sorted(data), 0.0
    while pending:
        if len(pending) > 1:
            credit += share
            if credit >= 1.0:
                credit -= 1.0
                order.append(pending.pop(0))
                continue
        order.append(pending.pop())
    return order


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0, 0.25])
async def test_replay_order_is_urgent_then_newest_and_oldest_by_share(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer, share: float
) -> None:
    """A backlog drains as: alarms, gaps and tag catalogues oldest first, then newest/oldest data by
    ``backlog_share``."""
    data = await producer.append(8)
    urgent = await producer.append(2, kind="alarm")
    data += await producer.append(8)
    urgent += await producer.append(1, kind="gap")
    urgent += await producer.append(1, kind="catalog")
    data += await producer.append(4)
    uplink = MqttUplink(mqtt_config(broker.port, max_inflight=1, backlog_share=share, ack_mode="broker"), GW, queue)
    async with Collector(broker.port, ack=False) as collector, running(uplink):
        await wait_until(lambda: len(collector.unique) == len(producer.appended), "backlog drained")

    assert collector.seqs == replay_model(urgent, data, share)


async def test_live_data_and_alarms_overtake_a_long_backlog(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A batch appended while a long backlog drains goes out within a few publishes, not after the backlog."""
    await producer.append(300)
    uplink = MqttUplink(mqtt_config(broker.port, max_inflight=2, ack_mode="broker"), GW, queue)
    async with Collector(broker.port, ack=False) as collector, running(uplink):
        await wait_until(lambda: len(collector.seqs) >= 20, "drain under way")
        (alarm,) = await producer.append(1, kind="alarm")
        (live,) = await producer.append(1)
        arrived_before = len(collector.seqs)
        await wait_until(lambda: {alarm, live} <= collector.unique, "live and alarm delivered")
        overtaken = collector.seqs.index(live) - arrived_before
        await wait_until(lambda: len(collector.unique) == 302, "backlog drained")

    # Batches already in flight or selected when the two were appended (window 2, one selection of up to 2
    # being made); the backlog still held more than 250.
    assert overtaken <= 6
    assert collector.seqs.index(alarm) < collector.seqs.index(live)
    assert uplink.stats.by_lane["urgent"] == 1
    assert uplink.stats.by_lane["backlog"] >= 100
