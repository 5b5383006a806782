"""RTU bus efficiency on the timed simulated line (a pty and a simulator enforcing character times and gaps).

The agent polls one unit as fast as the line allows: 250 holding registers (two requests of 125) per cycle.
Efficiency = useful register bytes delivered per second / the line's capacity in bytes per second
(baud / 11 bits per character, 8N2 — a pty cannot carry parity, 8N2 has the same 11-bit frame as 8E1).
The theoretical ceiling for 125-register reads is 250 / (8 + 255 + 7) = 92.6% (request, response, two
3.5-character silences); the rest is the agent's turnaround between an answer and the next request.

    python3 bench/modbus_rtu.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.modbus import ModbusDriver, ModbusRtuDevice, ModbusTag
from drivers.modbus.tests.rtu_line import RtuLine, RtuUnit


async def measure(baud: int, seconds: float) -> None:
    unit = RtuUnit()
    unit.holding[:250] = list(range(250))
    async with RtuLine({1: unit}, baudrate=baud, parity="N", stopbits=2) as line:
        device = ModbusRtuDevice(
            protocol="modbus-rtu",
            serial_port=line.port,
            baudrate=baud,
            parity="N",
            stopbits=2,
            unit=1,
            poll_interval_s=0.01,
            timeout_s=2.0,
            tags=[ModbusTag(name=f"r{i}", address=i) for i in range(250)],
        )
        warmed_up = asyncio.Event()

        def sink(batch: object) -> None:
            warmed_up.set()

        driver = ModbusDriver("bench", device, sink)
        task = asyncio.create_task(driver.run(), name="modbus[bench].run")
        await warmed_up.wait()  # the first cycle opens the port
        start_bytes, start_busy = line.useful_bytes, line.busy_s
        t0, cpu0 = time.monotonic(), time.process_time()
        await asyncio.sleep(seconds)
        elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
        useful = line.useful_bytes - start_bytes
        busy = line.busy_s - start_busy
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    capacity = baud / line.bits_per_char
    print(
        f"{baud:6d} baud: {useful / elapsed:7.1f} useful B/s of {capacity:6.1f} B/s capacity = "
        f"{useful / elapsed / capacity:6.1%} efficiency; line busy {busy / elapsed:6.1%}; "
        f"{useful / 2 / elapsed:6.1f} registers/s; gap violations {line.gap_violations}; "
        f"CPU {cpu / elapsed:5.1%} of a core (agent + simulator)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring time per baud rate")
    args = parser.parse_args()
    print("theoretical ceiling for 125-register reads: 250 / 270 = 92.6%")
    for baud in (9600, 19200):
        asyncio.run(measure(baud, args.seconds))


if __name__ == "__main__":
    main()
