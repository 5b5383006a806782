"""The poll schedule on an injected clock, against a real server: poll groups, overruns, skipped ticks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from agent.core.clock import FakeClock
from agent.core.sample import Sample
from drivers.modbus import ModbusDriver
from drivers.modbus.tests.harness import Collector, tcp_device
from drivers.modbus.tests.server import ModbusTestServer


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[ModbusTestServer]:
    async with ModbusTestServer(registers=10) as server:
        yield server


async def run_scenario(
    driver: ModbusDriver, clock: FakeClock, sink: Collector, steps: Sequence[tuple[float, int]]
) -> list[tuple[float, tuple[str, ...]]]:
    """Advance the clock step by step, waiting for the expected number of polls after each step."""
    start = clock.time()
    polls: list[tuple[float, tuple[str, ...]]] = []
    task = asyncio.create_task(driver.run(), name="modbus[test].run")
    try:
        for advance, expected_polls in steps:
            await clock.advance(advance)
            for _ in range(expected_polls):
                poll = await sink.wait_for(lambda p: True)
                polls.append(
                    (round(poll[0].ts_ms / 1000 - start, 3), tuple(s.tag.split(".")[1] for s in poll))
                )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return polls


async def test_poll_groups_follow_their_own_intervals() -> None:
    """Tags with a 3 s interval are polled every third tick of the 1 s group, on the same schedule."""
    clock = FakeClock()
    sink = Collector()
    async with serving() as server:
        device = tcp_device(
            server.port,
            [{"name": "fast", "address": 0}, {"name": "slow", "address": 1, "poll_interval_s": 3.0}],
            poll_interval_s=1.0,
        )
        driver = ModbusDriver("plc", device, sink, clock=clock)
        polls = await run_scenario(driver, clock, sink, [(0, 2), (1, 1), (1, 1), (1, 2), (1, 1)])

    assert polls == [
        (0.0, ("fast",)),
        (0.0, ("slow",)),
        (1.0, ("fast",)),
        (2.0, ("fast",)),
        (3.0, ("fast",)),
        (3.0, ("slow",)),
        (4.0, ("fast",)),
    ]
    assert driver.stats.skipped_polls == 0


async def test_overrun_skips_and_counts_missed_ticks() -> None:
    """A poll that takes 2.5 s on a 1 s schedule skips the two ticks it overlapped and resumes on the grid."""
    clock = FakeClock()
    stalled = False

    def sink_that_stalls(samples: Sequence[Sample]) -> None:
        nonlocal stalled
        collector(samples)
        if len(collector.polls) == 2 and not stalled:
            stalled = True
            clock._now += 2.5  # the second poll "took" 2.5 s: time moved while it ran

    collector = Collector()
    async with serving() as server:
        device = tcp_device(server.port, [{"name": "a", "address": 0}], poll_interval_s=1.0)
        driver = ModbusDriver("plc", device, sink_that_stalls, clock=clock)
        polls = await run_scenario(driver, clock, collector, [(0, 1), (1, 1), (0.5, 1), (1, 1)])

    assert [t for t, _ in polls] == [0.0, 1.0, 4.0, 5.0]
    assert driver.stats.skipped_polls == 2
