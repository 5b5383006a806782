"""A polling Modbus driver stops when cancelled, however the cancellation falls against the replies.

On Python 3.11 pymodbus' ``asyncio.wait_for`` returns a reply and drops a cancellation that lands in the same
loop iteration; the driver then polled on after SIGTERM and the agent did not exit (about one stop in ten at a
100 ms poll). Each trial here cancels a driver that polls every millisecond at a random moment; every one must end.
"""

from __future__ import annotations

import asyncio
import random

from drivers import create_driver
from drivers.modbus.tests.harness import Collector, all_good, tcp_device
from drivers.modbus.tests.server import ModbusTestServer

TRIALS = 150


async def test_cancelled_driver_stops_every_time() -> None:
    rng = random.Random(7)
    stuck = 0
    async with ModbusTestServer(registers=10) as server:
        tags = [{"name": f"r{i}", "address": i} for i in range(4)]
        for _ in range(TRIALS):
            sink = Collector()
            driver = create_driver("plc1", tcp_device(server.port, tags, poll_interval_s=0.001), sink)
            task = asyncio.create_task(driver.run())
            await sink.wait_for(all_good)
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2.0)
            if not done:
                stuck += 1
                # A driver that dropped its cancellation: cancel again, so the next trial starts clean.
                task.cancel()
                await asyncio.wait({task}, timeout=2.0)
    assert stuck == 0, f"{stuck} of {TRIALS} cancelled drivers went on polling"
