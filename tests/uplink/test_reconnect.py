"""Reconnect pacing on an injected clock: capped exponential backoff between attempts, one warning per
outage. The broker address refuses connections, so every attempt fails at once."""

from __future__ import annotations

from structlog.testing import capture_logs

from agent.core.clock import FakeClock
from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import free_port
from tests.uplink.harness import GW, mqtt_config, running, wait_until

# (fake seconds since the first failed attempt, attempts made by then). Backoff 0.5 s doubling, capped at
# 4 s, each delay scaled by a jitter factor in [0.8, 1]: attempt n+1 comes between the sums of the lower
# and upper bounds of the first n delays (0.4-0.5, 1.2-1.5, 2.8-3.5, 6.0-7.5, 9.2-11.5).
SCENARIO = [
    (0.3, 1), (0.55, 2), (1.1, 2), (1.55, 3), (2.7, 3), (3.6, 4), (5.9, 4), (7.6, 5), (9.1, 5), (11.6, 6),
]


async def test_reconnect_attempts_follow_capped_backoff(queue: AsyncDiskQueue) -> None:
    """Attempts are spaced 0.5, 1, 2, 4, 4 s (less jitter): never faster, and never slower than the cap."""
    clock = FakeClock()
    uplink = MqttUplink(mqtt_config(free_port(), reconnect_max_s=4.0), GW, queue, clock=clock)
    seen: list[tuple[float, int]] = []
    with capture_logs() as logs:
        async with running(uplink):
            await wait_until(lambda: uplink.stats.connect_failures == 1 and _parked(clock), "first attempt")
            now = 0.0
            for t, _ in SCENARIO:
                await clock.advance(t - now)
                now = t
                await wait_until(lambda: _parked(clock), "uplink waiting for its next attempt")
                seen.append((t, uplink.stats.connect_failures))

    assert seen == SCENARIO
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["uplink_down"]


def _parked(clock: FakeClock) -> bool:
    """The uplink sleeps on the fake clock (so no attempt is under way)."""
    return any(not fut.done() for _, _, fut in clock._sleepers)
