"""Replay benchmark: how fast a backlog in the real DiskQueue drains to a local Mosquitto through MqttUplink,
how fresh live data stays meanwhile, and whether memory grows with the backlog.

For each backlog size (``--points`` and a tenth of it) a child process fills a fresh buffer with signed
batches of ``--per-batch`` points; another child runs the uplink against a local Mosquitto while a live
producer appends one batch every ``--live-interval`` seconds; a third process subscribes and measures each
live batch's latency (receive time minus the batch's ``created``). Printed per run: drain rate in points/s
and batches/s, live latency p50/p99, and the peak RSS of the uplink process during the drain. A last run
repeats the small backlog with ``backlog_share = 1.0`` (plain oldest-first) to show what the live lane buys.

    python3 bench/replay.py                      # 1 million points (and 100k), about a minute
    python3 bench/replay.py --points 10000000    # the full 10 million
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiomqtt
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue, DiskQueue, QueuedBatch
from config.schema import MqttConfig
from tests.peers.mosquitto import Mosquitto

GW = "gw1"


def _signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.from_private_bytes(bytes(32)))


def _frame(signer: BatchSigner, seq: int, prev: bytes, points: int, now_ms: int) -> QueuedBatch:
    tags = [f"plc{i}.t{i}" for i in range(10)]
    rows = [[i % 10, i * 10, float(i % 97) * 0.5, 0] for i in range(points)]
    body = wire.encode_body(tags, {"raw": wire.Table(cols=["tag", "ts", "value", "q"], rows=rows)}, now_ms)
    b = wire.encode_frame(signer, gw=GW, seq=seq, prev=prev, created=now_ms, t0=now_ms,
                          t1=now_ms + points * 10, kind="data", enc="zstd", body=body)
    return QueuedBatch.from_wire(b, points)


def build_backlog(path: str, points: int, per_batch: int) -> None:
    """Child process: a buffer holding ``points`` points in batches of ``per_batch``."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    q = DiskQueue(Path(path), max_bytes=64 << 30, frame_tags=wire.frame_tags, sync="normal", min_free_bytes=0)
    q.open()
    signer = _signer()
    seq, prev = q.chain_head()
    now = int(time.time() * 1000) - 3_600_000
    for i in range(0, points, per_batch):
        batch = _frame(signer, seq + 1, prev, min(per_batch, points - i), now + i * 10)
        q.append(batch)
        seq, prev = batch.seq, batch.hash
    q.close()


def subscribe(port: int, first_live: int, received: Synchronized, ready: Any, stop: Any,
              out: Connection) -> None:
    """Child process: count delivered batches and measure the latency of live ones (seq >= first_live)."""
    latencies: list[float] = []

    async def consume() -> None:
        seen: set[int] = set()
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-sub", timeout=30) as client:
            await client.subscribe(f"mine/{GW}/batch/#", qos=1)
            ready.set()
            async for message in client.messages:
                b = wire.open_frame(bytes(message.payload))  # type: ignore[arg-type]
                if b.seq >= first_live and b.seq not in seen:
                    latencies.append(time.time() * 1000 - b.created)
                seen.add(b.seq)
                received.value = len(seen)

    async def main() -> None:
        task = asyncio.create_task(consume())
        while not stop.is_set() and not task.done():  # noqa: ASYNC110 - stop is a multiprocessing Event
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        out.send(latencies)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def drain(path: str, port: int, backlog: int, per_batch: int, live_interval: float, share: float,
          received: Synchronized, out: Connection) -> None:
    """Child process: run the uplink until the backlog and all live batches are delivered and deleted."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))

    async def main() -> dict[str, float]:
        q = AsyncDiskQueue(Path(path), max_bytes=64 << 30, frame_tags=wire.frame_tags, sync="normal", min_free_bytes=0)
        await q.open()
        signer = _signer()
        # Broker mode: this measures how fast the uplink drains to the broker; the archive's acks are measured
        # by bench/uplink_ack.py.
        config = MqttConfig(host="127.0.0.1", port=port, backlog_share=share, ack_mode="broker")
        uplink = MqttUplink(config, GW, q)
        peak = _rss_kb()
        live = 0
        start = time.perf_counter()
        task = asyncio.create_task(uplink.run())
        drained_at: float | None = None
        next_live = time.perf_counter()
        while True:
            now = time.perf_counter()
            peak = max(peak, _rss_kb())
            if uplink.stats.acked >= backlog and drained_at is None:
                drained_at = now
            delivered = uplink.stats.acked >= backlog + live and received.value >= backlog + live
            if drained_at is not None and delivered:
                break
            if drained_at is None and now >= next_live:
                seq, prev = await q.chain_head()
                await q.append(_frame(signer, seq + 1, prev, 10, int(time.time() * 1000)))
                live += 1
                next_live += live_interval
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await q.close()
        assert drained_at is not None
        return {"drain_s": drained_at - start, "live": live, "peak_rss_kb": peak,
                "resends": uplink.stats.published - uplink.stats.acked,
                "backlog_lane": uplink.stats.by_lane["backlog"], "live_lane": uplink.stats.by_lane["live"]}

    out.send(asyncio.run(main()))


def run_case(points: int, per_batch: int, live_interval: float, share: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
        path = str(Path(tmp) / "buffer.sqlite")
        t0 = time.perf_counter()
        builder = ctx.Process(target=build_backlog, args=(path, points, per_batch))
        builder.start()
        builder.join()
        build_s = time.perf_counter() - t0
        backlog = -(-points // per_batch)
        broker = Mosquitto(Path(tmp) / "mosquitto")
        broker.start()
        try:
            received = ctx.Value("i", 0)
            ready, stop = ctx.Event(), ctx.Event()
            sub_rx, sub_tx = ctx.Pipe(duplex=False)
            sub = ctx.Process(target=subscribe,
                              args=(broker.port, backlog + 1, received, ready, stop, sub_tx))
            sub.start()
            if not ready.wait(60):
                raise RuntimeError("subscriber did not start")
            rx, tx = ctx.Pipe(duplex=False)
            drainer = ctx.Process(target=drain, args=(path, broker.port, backlog, per_batch, live_interval,
                                                      share, received, tx))
            drainer.start()
            result: dict[str, Any] = rx.recv()
            drainer.join()
            stop.set()
            latencies: list[float] = sub_rx.recv() if sub_rx.poll(30) else []
            sub.join(10)
            if sub.is_alive():
                sub.kill()
        finally:
            broker.kill()
    result.update(points=points, batches=backlog, build_s=build_s, share=share, latencies=latencies)
    return result


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000, help="backlog size in points (default 1M)")
    parser.add_argument("--per-batch", type=int, default=100, help="points per batch (default 100)")
    parser.add_argument("--live-interval", type=float, default=0.1, help="seconds between live batches")
    args = parser.parse_args()

    cases = [(args.points // 10, 0.5), (args.points, 0.5), (args.points // 10, 1.0)]
    print(f"replay benchmark: {os.cpu_count()} CPUs, {args.per_batch} points/batch, one live batch every "
          f"{args.live_interval:g} s, max_inflight 20, local Mosquitto, buffer sync=normal")
    print(f"{'points':>10} {'batches':>8} {'share':>5} {'drain s':>8} {'points/s':>10} {'batches/s':>9} "
          f"{'live n':>6} {'live p50 ms':>11} {'live p99 ms':>11} {'peak RSS MB':>11} {'resent':>6}")
    for points, share in cases:
        r = run_case(points, args.per_batch, args.live_interval, share)
        lat = r["latencies"]
        print(f"{r['points']:>10} {r['batches']:>8} {share:>5.2f} {r['drain_s']:>8.2f} "
              f"{r['points'] / r['drain_s']:>10.0f} {r['batches'] / r['drain_s']:>9.0f} {len(lat):>6} "
              f"{_pct(lat, 50):>11.1f} {_pct(lat, 99):>11.1f} {r['peak_rss_kb'] / 1024:>11.1f} "
              f"{r['resends']:>6}", flush=True)
    print("points/s counts backlog points deleted after PUBACK per second of drain; live latency is "
          "receive time minus creation time of batches appended during the drain.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
