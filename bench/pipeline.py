"""Agent CPU per point against the floor of a bare pymodbus read loop (issue 2's figures).

A simulated PLC in another process serves N registers (default 10,000) that change every second; the agent
polls them once a second as N uint16 tags through the durable buffer to a local Mosquitto, in two
configurations measured in the same run: the default (10 s window aggregates per tag) and the costliest
(every tag also sent raw, so each reading becomes a row in a signed, compressed batch). A bare pymodbus
loop reads the same registers once a second, 125 at a time, and does nothing with them: the floor no agent
can go below. It runs just before and just after the default run, and the floor is their mean.

Each agent run is measured over whole windows (``--seconds`` rounded to a multiple of 10), starting midway
between two window closes, so every run holds the same number of closes (each a burst of CPU).

Printed: points/s polled and delivered (acknowledged by the broker), agent CPU µs per point (all threads
of this process, measured after a warm-up), RSS at the end of each run and the process's peak so far, the
bare loop's CPU µs per point, and the ratio. Target, for the default configuration: ratio <= 2 and peak
RSS <= 80 MB. The default run is the first agent run, so the peak after it is its own (start-up and
shutdown included); the all-raw run holds every reading as a row until its batch is stored and peaks higher.

    python3 bench/pipeline.py [--registers 10000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.demo.localbroker import Mosquitto, free_port, wait_port
from agent.protocol.signing import generate_key
from agent.runtime import Agent
from agent.service.logs import configure_logging
from config.loader import parse_config

WINDOW_S = 10


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (``VmRSS``) or its peak so far (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _config(root: Path, mqtt_port: int, plc_port: int, registers: int, *, raw: bool) -> str:
    flag = "raw = true\n" if raw else ""
    tags = "".join(f'[[devices.plc.tags]]\nname = "r{i}"\naddress = {i}\n{flag}' for i in range(registers))
    return f"""
[gateway]
id = "gw-bench"
key_file = "{root / 'gateway.key'}"
state_dir = "{root / ('state-raw' if raw else 'state')}"
[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
ack_mode = "broker"   # no archive in this benchmark: a plain subscriber stands for the backend
max_inflight = 20
[pipeline]
window_s = {WINDOW_S}
batch_interval_s = 1.0
[devices.plc]
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {plc_port}
poll_interval_s = 1.0
timeout_s = 2.0
{tags}"""


async def _measure_agent(agent: Agent, warmup: float, seconds: float) -> dict[str, float]:
    task = asyncio.create_task(agent.run(), name="bench.agent")
    await asyncio.wait_for(agent.ready.wait(), 60)
    await asyncio.sleep(warmup)
    # Measure whole windows, starting mid-way between two window closes (a close comes 2 s of grace after
    # each boundary): every run then holds the same number of closes, which cost a burst of CPU each.
    window = WINDOW_S
    await asyncio.sleep((7.0 - time.time() % window) % window)
    seconds = window * max(1, round(seconds / window))
    assert agent.pipeline is not None
    assert agent.batcher is not None
    s0, c0, t0 = agent.pipeline.stats.samples, time.process_time(), time.monotonic()
    rows0, windows0 = agent.batcher.stats.rows, agent.pipeline.stats.windows
    await asyncio.sleep(seconds)
    s1, c1, t1 = agent.pipeline.stats.samples, time.process_time(), time.monotonic()
    rows1, windows1 = agent.batcher.stats.rows, agent.pipeline.stats.windows
    backlog = (await agent.queue.stats()).batches
    rss_now = _rss_mb()
    agent.stop()
    await task
    peak_so_far = _rss_mb("VmHWM")
    points = s1 - s0
    return {"points": points, "wall": t1 - t0, "cpu": c1 - c0, "rows": rows1 - rows0, "backlog": backlog,
            "rss_now": rss_now, "peak_so_far": peak_so_far, "windows": windows1 - windows0}


async def _measure_bare(port: int, registers: int, warmup: float, seconds: float) -> dict[str, float]:
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await client.connect()

    async def cycle() -> int:
        n = 0
        for start in range(0, registers, 125):
            rr = await client.read_holding_registers(start, count=min(125, registers - start), device_id=1)
            n += len(rr.registers)
        return n

    deadline = time.monotonic() + warmup
    while time.monotonic() < deadline:
        await cycle()
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() % 1.0)))
    points, c0, t0 = 0, time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        tick = time.monotonic()
        points += await cycle()
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    cpu = time.process_time() - c0
    client.close()
    return {"points": points, "cpu": cpu, "wall": time.monotonic() - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--registers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    args = parser.parse_args()
    configure_logging("console", "warning")

    root = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    broker = Mosquitto(root / "mosquitto")
    broker.start()
    plc_port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    plc = subprocess.Popen([sys.executable, "-m", "agent.demo.simulator", "--port", str(plc_port), "--registers",
                            str(args.registers), "--period", "1"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_port("127.0.0.1", plc_port, 30)
        signer = generate_key(root)
        # The bare loop runs just before and just after the default run and their mean is the floor, so
        # both sides of the ratio see the same machine (its speed drifts with what else runs on it).
        bare_seconds = min(args.seconds, 10.0)
        bares = [asyncio.run(_measure_bare(plc_port, args.registers, args.warmup / 2, bare_seconds))]
        for raw in (False, True):
            config = parse_config(_config(root, broker.port, plc_port, args.registers, raw=raw))
            results[raw] = asyncio.run(_measure_agent(Agent(config, signer=signer), args.warmup, args.seconds))
            del config
            if not raw:
                bares.append(asyncio.run(_measure_bare(plc_port, args.registers, args.warmup / 2, bare_seconds)))
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        plc.terminate()
        plc.wait(10)
        broker.kill()

    before_us, after_us = (b["cpu"] / b["points"] * 1e6 for b in bares)
    bare_us = (before_us + after_us) / 2
    print(f"registers polled once a second:   {args.registers}")
    print(f"bare pymodbus loop CPU per point:  {bare_us:.2f} µs  (before the default run {before_us:.2f}, "
          f"after it {after_us:.2f})")
    for raw, a in results.items():
        agent_us = a["cpu"] / a["points"] * 1e6
        print(f"-- {'every tag also sent raw' if raw else 'default: 10 s window aggregates'}")
        print(f"   points/s polled by the agent:     {a['points'] / a['wall']:,.0f}")
        print(f"   rows/s put into signed batches:   {a['rows'] / a['wall']:,.0f}")
        print(f"   batches left unacknowledged:      {a['backlog']} (0-2 means the broker kept up)")
        print(f"   agent CPU per point:              {agent_us:.2f} µs  ({a['cpu'] / a['wall'] * 100:.0f}% of a core)")
        print(f"   ratio agent / bare loop:          {agent_us / bare_us:.2f}x  (target <= 2x)")
        closes = a["windows"] / args.registers
        print(f"   measured:                         {a['wall']:.0f} s, {closes:.0f} window closes")
        print(f"   RSS at the end of the run:        {a['rss_now']:.0f} MB")
        print(f"   peak RSS of the process so far:   {a['peak_so_far']:.0f} MB"
              + ("  (target <= 80 MB; start-up and shutdown included)" if not raw else ""))
    print(f"peak RSS of the process:            {peak_rss:.0f} MB  (both runs and the bare loop)")


if __name__ == "__main__":
    main()
