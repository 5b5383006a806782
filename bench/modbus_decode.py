"""Registers decoded per CPU-second over Modbus TCP: the agent's driver vs a bare pymodbus read loop.

A pymodbus server runs in a separate process (its CPU is not counted) serving 125 holding registers.
"bare" is the cheapest possible client: ``await client.read_holding_registers(0, count=125)`` in a loop.
"agent" is :class:`ModbusDriver` polling the same 125 registers back to back, with the planner, decoder,
sample building, statistics and a sink that keeps the samples, in two tag layouts: 125 uint16 tags, and a
mixed map (40 float32, 25 int16 with scale, 20 uint16 with enum-free bits, 20 uint16). CPU is this
process's ``time.process_time``. The ratio agent/bare is the overhead the agent adds per register;
the budget is 2x at 10,000 registers/s, so the main comparison reads on the same fixed schedule in both
loops (80 reads/s). A back-to-back comparison follows: there the driver's schedule costs one extra
event-loop wake-up per poll that a bare loop does not have.

    python3 bench/modbus_decode.py [--reads 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from agent.core.sample import Sample  # noqa: E402
from drivers.modbus import ModbusDriver, ModbusTag, ModbusTcpDevice  # noqa: E402
from drivers.modbus.decode import RegisterBlockDecoder, compile_tag  # noqa: E402
from drivers.modbus.tests.server import free_port  # noqa: E402

REGISTERS = 125


def uint16_tags() -> list[ModbusTag]:
    return [ModbusTag(name=f"r{i}", address=i) for i in range(REGISTERS)]


def mixed_tags() -> list[ModbusTag]:
    tags: list[dict[str, Any]] = []
    address = 0
    for i in range(40):
        tags.append({"name": f"f{i}", "address": address, "type": "float32"})
        address += 2
    for i in range(25):
        tags.append({"name": f"s{i}", "address": address, "type": "int16", "scale": 0.1})
        address += 1
    for i in range(20):
        tags.append({"name": f"b{i}", "address": address, "type": "bool", "bit": i % 16})
        address += 1
    while address < REGISTERS:
        tags.append({"name": f"u{address}", "address": address})
        address += 1
    return [ModbusTag(**t) for t in tags]


async def bare(port: int, reads: int, interval: float) -> float:
    """The bare loop; with ``interval`` > 0 it reads on the same fixed schedule as the driver."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await client.connect()
    total = 0
    loop = asyncio.get_running_loop()
    cpu0 = time.process_time()
    next_at = loop.time()
    for _ in range(reads):
        rr = await client.read_holding_registers(0, count=REGISTERS, device_id=1)
        total += len(rr.registers)
        if interval:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
    cpu = time.process_time() - cpu0
    client.close()
    return cpu


async def agent(port: int, reads: int, tags: list[ModbusTag], interval: float) -> tuple[float, int]:
    device = ModbusTcpDevice(
        protocol="modbus-tcp",
        host="127.0.0.1",
        port=port,
        poll_interval_s=interval or 0.0001,
        timeout_s=2.0,
        tags=tags,
    )
    done = asyncio.Event()
    started = asyncio.Event()
    polls = 0
    bad = 0

    def sink(samples: list[Sample]) -> None:
        # Like the pipeline's sink: look at every sample once, keep nothing.
        nonlocal polls, bad
        polls += 1
        bad += len(samples) - [s[3] for s in samples].count(0)
        started.set()
        if polls == reads + 1:
            done.set()

    driver = ModbusDriver("bench", device, sink)
    assert driver.requests_per_cycle == 1
    task = asyncio.create_task(driver.run(), name="modbus[bench].run")
    await started.wait()  # the first poll connects; not measured
    cpu0 = time.process_time()
    await done.wait()
    cpu = time.process_time() - cpu0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return cpu, bad


def decode_only(tags: list[ModbusTag], rounds: int = 20000) -> float:
    decoder = RegisterBlockDecoder(0, REGISTERS, [compile_tag("d", t, "ABCD") for t in tags])
    registers = [0x3FC0 if i % 2 == 0 else 0 for i in range(REGISTERS)]
    start = time.process_time()
    for _ in range(rounds):
        out: list[Sample] = []
        decoder.decode(out, registers, 0)
    return (time.process_time() - start) / rounds


async def compare(port: int, reads: int, interval: float, title: str) -> None:
    results: dict[str, float] = {}
    results["bare pymodbus"] = await bare(port, reads, interval)
    cpu, bad = await agent(port, reads, uint16_tags(), interval)
    assert bad == 0, "the bench server must serve every register"
    results["agent uint16"] = cpu
    results["agent mixed"], _ = await agent(port, reads, mixed_tags(), interval)
    base = results["bare pymodbus"]
    print(title)
    for name, cpu in results.items():
        print(
            f"  {name:14} CPU {cpu / reads * 1e6:7.1f} µs/read  {reads * REGISTERS / cpu:10,.0f} "
            f"registers/CPU-s  overhead ratio {cpu / base:4.2f}x"
        )


async def run(port: int, reads: int, paced_reads: int) -> None:
    rate = 10_000 / REGISTERS
    await compare(
        port,
        paced_reads,
        1 / rate,
        f"paced at 10,000 registers/s ({rate:.0f} reads/s of {REGISTERS} registers), "
        f"{paced_reads} reads each:",
    )
    await compare(port, reads, 0.0, f"back to back (as fast as the server answers), {reads} reads each:")
    for name, tags in (("uint16", uint16_tags()), ("mixed", mixed_tags())):
        per = decode_only(tags)
        print(
            f"decode only, {name:6}: {per * 1e6:6.1f} µs per 125-register block "
            f"({per / REGISTERS * 1e9:5.0f} ns/register)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=3000, help="reads per back-to-back run")
    parser.add_argument("--paced-reads", type=int, default=800, help="reads per paced run (80 reads/s)")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drivers.modbus.tests.server",
            "--port",
            str(port),
            "--registers",
            str(REGISTERS),
            "--period",
            "1.0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("listening"):
            raise SystemExit(f"bench server did not start: {line!r}")
        asyncio.run(run(port, args.reads, args.paced_reads))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
