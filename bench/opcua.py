"""OPC UA driver benchmark: notification throughput and CPU against a bare asyncua loop; restart recovery.

    python3 bench/opcua.py              # about 2 minutes on 2 cores
    python3 bench/opcua.py --quick      # smaller, for a smoke run

What it prints, per case (N monitored items, publishing = sampling interval P):
  * notifications/s received by a bare asyncua iterator-mode subscription loop, and by OpcUaDriver
    (with a sink that only counts), each for the same wall time against the same server;
  * client CPU per notification (process CPU time of this process, which runs only the client);
  * the overhead ratio driver/bare of CPU per notification (target <= 1.5).
And the time from a server restart (the new server process accepting connections) to the first fresh
value delivered by the driver.

Read CPU per notification and the overhead ratio first: notifications/s is set by the server, which
lags whenever the machine is busy (the load average is printed). The server is an asyncua server in a
separate process, writing every variable once per P. Library notes
§2.3: the asyncua *server* saturates around 1,000 variables at 100 ms on 2 cores, so 5,000 items run at
1 s. When the server lags, fewer notifications than N/P arrive; CPU per notification stays comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncua import Client, Server, ua

from agent.core.sample import Quality, Sample
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- server process ------------------------------------------------------------------------------


async def serve(port: int, n: int, period_s: float, base: float) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:bench")
    obj = await server.nodes.objects.add_object(ns, "Bench")
    # One AddNodes call for all variables: node.add_variable costs 2-3 ms each (5,000 took minutes
    # on a loaded machine); the batch builds the same nodes as asyncua's _create_variable.
    ids = [ua.NodeId(f"v{i}", ns) for i in range(n)]
    items = []
    for node_id in ids:
        item = ua.AddNodesItem()
        item.RequestedNewNodeId = node_id
        item.BrowseName = ua.QualifiedName(node_id.Identifier, ns)
        item.NodeClass = ua.NodeClass.Variable
        item.ParentNodeId = obj.nodeid
        item.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HasComponent)
        item.TypeDefinition = ua.NodeId(ua.ObjectIds.BaseDataVariableType)
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText(node_id.Identifier)
        attrs.DataType = ua.NodeId(ua.ObjectIds.Double)
        attrs.Value = ua.Variant(base, ua.VariantType.Double)
        attrs.ValueRank = ua.ValueRank.Scalar
        attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        item.NodeAttributes = attrs
        items.append(item)
    for result in await server.iserver.isession.add_nodes(items):
        result.StatusCode.check()
    await server.start()
    print(f"READY {ns}", flush=True)
    k = 0
    next_t = time.monotonic()
    while True:
        k += 1
        for node_id in ids:
            await server.write_attribute_value(
                node_id, ua.DataValue(ua.Variant(base + k, ua.VariantType.Double))
            )
        next_t += period_s
        await asyncio.sleep(max(0.0, next_t - time.monotonic()))


class ServerProcess:
    def __init__(self, port: int, n: int, period_s: float, base: float = 0.0) -> None:
        self.port, self.n, self.period_s, self.base = port, n, period_s, base
        self.url = f"opc.tcp://127.0.0.1:{port}/bench/"
        self.proc: subprocess.Popen[str] | None = None
        self.ns = 0

    def start(self) -> float:
        """Start and wait until it serves; returns the monotonic time it became ready."""
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                str(self.port),
                str(self.n),
                str(self.period_s),
                str(self.base),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("bench server failed to start")
        self.ns = int(line.split()[1])
        return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --- clients -------------------------------------------------------------------------------------


async def bare_loop(url: str, ns: int, n: int, period_s: float, seconds: float) -> tuple[int, float]:
    """The reference: asyncua iterator mode, counting events. Returns (notifications, cpu seconds)."""
    client = Client(url, timeout=30)
    await client.connect()
    try:
        sub = await client.create_subscription(period_s * 1000, None, queue_maxsize=10 * n)
        nodes = [client.get_node(ua.NodeId(f"v{i}", ns)) for i in range(n)]
        for start in range(0, n, 1000):
            await sub.subscribe_data_change(
                nodes[start : start + 1000], queuesize=1, sampling_interval=period_s * 1000
            )
        count = 0
        async with asyncio.timeout(3 * period_s + 10):  # initial values
            while count < n:
                await anext(sub)
                count += 1
        count = 0
        cpu0 = time.process_time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for _ in sub:
                    count += 1
        return count, time.process_time() - cpu0
    finally:
        await client.disconnect()


async def driver_loop(url: str, ns: int, n: int, period_s: float, seconds: float) -> tuple[int, float]:
    """The same subscription through OpcUaDriver with a counting sink."""
    counted = [0]

    def sink(samples: Sequence[Sample]) -> None:
        counted[0] += len(samples)

    cfg = OpcUaDevice.model_validate(
        {
            "protocol": "opcua",
            "url": url,
            "timeout_s": 30,
            "publishing_interval_s": period_s,
            "client_queue_size": max(50_000, 10 * n),
            "tags": [{"name": f"v{i}", "node": f"ns={ns};s=v{i}"} for i in range(n)],
        }
    )
    driver = OpcUaDriver("bench", cfg, sink)
    task = asyncio.create_task(driver.run(), name="bench.driver")
    try:
        async with asyncio.timeout(3 * period_s + 30):
            while counted[0] < n:  # noqa: ASYNC110 - the sink is a plain callback
                await asyncio.sleep(0.01)
        start_count, cpu0 = counted[0], time.process_time()
        await asyncio.sleep(seconds)
        return counted[0] - start_count, time.process_time() - cpu0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def restart_recovery(period_s: float) -> list[float]:
    """Seconds from a restarted server being ready to the driver's first value from it."""
    port = free_port()
    first = ServerProcess(port, 10, period_s, base=0.0)
    first.start()
    fresh_at: list[float] = []
    generation = [0.0]

    def sink(samples: Sequence[Sample]) -> None:
        for s in samples:
            if s.quality is Quality.GOOD and isinstance(s.value, float) and s.value >= generation[0] > 0:
                fresh_at.append(time.monotonic())
                return

    cfg = OpcUaDevice.model_validate(
        {
            "protocol": "opcua",
            "url": first.url,
            "publishing_interval_s": period_s,
            "watchdog_s": 1.0,
            "tags": [{"name": "v0", "node": f"ns={first.ns};s=v0"}],
        }
    )
    driver = OpcUaDriver("bench", cfg, sink)
    task = asyncio.create_task(driver.run(), name="bench.driver")
    results = []
    server = first
    try:
        await asyncio.sleep(2)
        for round_ in range(1, 4):
            server.stop()
            await asyncio.sleep(2.0)  # an outage of a few seconds: the driver notices and backs off
            generation[0] = round_ * 1_000_000.0
            server = ServerProcess(port, 10, period_s, base=generation[0])
            fresh_at.clear()
            ready = await asyncio.to_thread(server.start)
            async with asyncio.timeout(60):
                while not fresh_at:  # noqa: ASYNC110 - the sink is a plain callback
                    await asyncio.sleep(0.01)
            results.append(fresh_at[0] - ready)
            await asyncio.sleep(3.0)  # up for a while before the next restart, as in the field
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.stop()
    return results


async def case(n: int, period_s: float, seconds: float) -> None:
    server = ServerProcess(free_port(), n, period_s)
    t0 = time.monotonic()
    server.start()
    startup = time.monotonic() - t0
    # Alternate bare and driver twice, half the window each, so a load change on this shared
    # machine (or a server that warms up) does not favour whichever runs second.
    bare_n = drv_n = 0
    bare_cpu = drv_cpu = 0.0
    try:
        for _ in range(2):
            count, cpu = await bare_loop(server.url, server.ns, n, period_s, seconds / 2)
            bare_n, bare_cpu = bare_n + count, bare_cpu + cpu
            count, cpu = await driver_loop(server.url, server.ns, n, period_s, seconds / 2)
            drv_n, drv_cpu = drv_n + count, drv_cpu + cpu
    finally:
        server.stop()
    ideal = n / period_s
    bare_us = bare_cpu / max(bare_n, 1) * 1e6
    drv_us = drv_cpu / max(drv_n, 1) * 1e6
    print(
        f"{n:>5} items @ {period_s * 1000:>4.0f} ms | ideal {ideal:>6.0f}/s | "
        f"bare {bare_n / seconds:>6.0f}/s {bare_us:5.1f} µs CPU/notif ({bare_cpu / seconds:4.0%} core) | "
        f"driver {drv_n / seconds:>6.0f}/s {drv_us:5.1f} µs CPU/notif ({drv_cpu / seconds:4.0%} core) | "
        f"overhead {drv_us / bare_us:4.2f}x | server start {startup:4.1f} s",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    print(
        f"OPC UA driver benchmark (python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load:.1f}, "
        f"{args.seconds:g} s per measurement, server in a separate process)"
    )
    cases = [(200, 0.1), (1000, 1.0)] if args.quick else [(1000, 0.1), (1000, 1.0), (5000, 1.0)]
    for n, period in cases:
        await case(n, period, args.seconds)
    recoveries = await restart_recovery(0.1)
    print(
        "server restart -> first fresh value: "
        + ", ".join(f"{r:.2f} s" for r in recoveries)
        + " (server down 2 s plus its ~3 s start; varies with where the 0.5 s doubling backoff stands)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        port, n, period, base = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
        asyncio.run(serve(port, n, period, base))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--quick", action="store_true", help="smaller cases for a smoke run")
        parser.add_argument("--seconds", type=float, default=8.0, help="measurement window (default 8)")
        asyncio.run(main(parser.parse_args()))
