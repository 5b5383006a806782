"""Service figures: time to READY, time to the first stored and first acknowledged batch, idle CPU, RSS.

Runs the agent in a child process exactly as systemd would (``run_agent`` with a notify socket bound here)
with 500 tags at 1 s: 5 Modbus TCP devices x 100 holding registers, read by the real driver from a
simulated PLC (``agent.demo.simulator``, its own process), one raw tag per device so the first batch does not
wait for a window to close; the real disk buffer and the real MQTT uplink to a Mosquitto the benchmark
starts on a free loopback port. The PLC and the broker are other processes, so their CPU is not counted.

    python3 bench/service.py [--seconds 30]

Idle CPU is the child's user+system time over the measuring window divided by its length (target < 1% of
one core). Figures vary with machine load; run it a few times on the target gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEVICES, TAGS = 5, 100


def child(state: Path, port: int, mqtt_port: int, plc_port: int) -> None:
    from agent.cli.run import run_agent
    from agent.protocol.signing import generate_key
    from agent.runtime import Agent
    from agent.service.logs import configure_logging
    from config.schema import AgentConfig

    configure_logging("json", "warning")
    config = AgentConfig.model_validate({
        "gateway": {"id": "gw-bench", "key_file": str(state / "k.pem"), "state_dir": str(state / "state")},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_port, "ack_mode": "broker"},  # no archive here
        "pipeline": {"window_s": 10, "batch_interval_s": 1.0},
        "health": {"listen": f"127.0.0.1:{port}"},
        "devices": {f"plc{d}": {"protocol": "modbus-tcp", "host": "127.0.0.1", "port": plc_port,
                                "poll_interval_s": 1.0,
                                "tags": [{"name": f"t{i}", "address": d * TAGS + i, "raw": i == 0}
                                         for i in range(TAGS)]}
                    for d in range(DEVICES)},
    })
    signer = generate_key(state / "keys")
    asyncio.run(run_agent(Agent(config, signer=signer), state / "unused.toml"))


def _health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return json.load(resp)  # type: ignore[no-any-return]
    except OSError:
        return None


def _cpu_rss(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return cpu, rss


def _drain(sock: socket.socket) -> None:
    sock.settimeout(None)
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass


def _scrape_ms(port: int, n: int = 50) -> float:
    """Median milliseconds for a /metrics scrape (snapshot, buffer stats, rendering, HTTP)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            resp.read()
        times.append(time.perf_counter() - t)
    return sorted(times)[n // 2] * 1000


def _last_values_ns() -> float:
    """Cost per sample of keeping the last value per tag (the runtime does it for every poll)."""
    from agent.core.sample import Sample
    from agent.pipeline.last_values import LastValues

    lv = LastValues()
    burst = [Sample(f"plc.t{i}", 1_700_000_000_000, float(i)) for i in range(500)]
    rounds = 2000
    t = time.perf_counter()
    for _ in range(rounds):
        lv.record(burst)
    return (time.perf_counter() - t) / (rounds * len(burst)) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="idle measuring window (default 30)")
    parser.add_argument("--child", nargs=4, metavar=("STATE", "PORT", "MQTT", "PLC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), *(int(a) for a in args.child[1:]))
        return

    from agent.demo.localbroker import Mosquitto, free_port, wait_port

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        stack.callback(broker.kill)
        plc_port = free_port()
        plc = subprocess.Popen([sys.executable, "-m", "agent.demo.simulator", "--port", str(plc_port), "--registers",
                                str(DEVICES * TAGS), "--period", "1"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(plc.wait, 10)
        stack.callback(plc.terminate)
        wait_port("127.0.0.1", plc_port, 30)
        figures = _measure(Path(tmp), broker.port, plc_port, args.seconds)
    _report(*figures)


def _measure(tmp: Path, mqtt_port: int, plc_port: int, seconds: float) -> tuple[object, ...]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify_name = f"@mine-agent-bench-{os.getpid()}"
        notify.bind("\0" + notify_name[1:])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "NOTIFY_SOCKET": notify_name, "WATCHDOG_USEC": "10000000", "PYTHONPATH": str(ROOT)}
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(tmp), str(port), str(mqtt_port),
                                 str(plc_port)], env=env)
        try:
            notify.settimeout(60)
            while True:
                msg = notify.recv(4096).decode()
                if "READY=1" in msg.split("\n"):
                    t_ready = time.monotonic() - t0
                    break
            # Keep reading notifications (watchdog pings, STATUS) as systemd would, or the socket fills up.
            threading.Thread(target=_drain, args=(notify,), daemon=True).start()
            t_stored = t_acked = None
            deadline = time.monotonic() + 60
            while (t_stored is None or t_acked is None) and time.monotonic() < deadline:
                doc = _health(port) or {}
                now = time.monotonic() - t0
                if t_stored is None and (doc.get("seq") or 0) >= 1:
                    t_stored = now
                if t_acked is None and ((doc.get("uplink") or {}).get("acked") or 0) >= 1:  # type: ignore[union-attr]
                    t_acked = now
                time.sleep(0.02)
            time.sleep(5)  # let start-up work (imports, first windows) settle before measuring idle
            cpu0, _ = _cpu_rss(proc.pid)
            w0 = time.monotonic()
            time.sleep(seconds)
            cpu1, rss = _cpu_rss(proc.pid)
            wall = time.monotonic() - w0
            doc = _health(port) or {}
            scrape = _scrape_ms(port)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return t_ready, t_stored, t_acked, wall, cpu1 - cpu0, rss, scrape, doc, proc.returncode


def _report(t_ready: float, t_stored: float | None, t_acked: float | None, wall: float, cpu: float, rss: int,
            scrape: float, doc: dict[str, Any], returncode: int) -> None:
    devices = doc.get("devices") or {}
    samples = sum(d["samples"] for d in devices.values())  # type: ignore[union-attr]
    print(f"service bench: {DEVICES} devices x {TAGS} tags at 1 s ({DEVICES * TAGS} tags), window 10 s, "
          "batch interval 1 s; real Modbus driver, disk buffer and MQTT uplink (local Mosquitto)")
    print(f"  time to READY (process start -> READY=1):      {t_ready:.2f} s")
    print(f"  time to first batch stored in the buffer:       {t_stored:.2f} s" if t_stored else
          "  time to first batch stored: not within 60 s")
    print(f"  time to first batch acknowledged (published):   {t_acked:.2f} s" if t_acked else
          "  time to first batch acknowledged: not within 60 s")
    print(f"  idle CPU over {wall:.0f} s:                            {100 * cpu / wall:.2f} % of one core")
    print(f"  RSS:                                            {rss / 2**20:.1f} MiB")
    print(f"  /metrics scrape, median of 50:                   {scrape:.1f} ms")
    print(f"  last-value-per-tag bookkeeping (for tail):       {_last_values_ns():.0f} ns per sample")
    print(f"  samples ingested so far: {samples}; exit code on SIGTERM: {returncode}")


if __name__ == "__main__":
    main()
