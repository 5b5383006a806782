"""Gateway CPU per acknowledged batch in the default ack mode, ack verification included.

Two figures:

1. **Ack verification**: CPU of :func:`agent.protocol.acks.open_ack` on acks in the shape the reference
   receiver publishes (one message per gateway per coalescing interval, one hash-linked run per message),
   per message and per batch it acknowledges, for several batches per ack.
2. **Whole path** on the gateway: a backlog of ``--batches`` signed batches in the real buffer is published
   through :class:`agent.uplink.MqttUplink` to a local Mosquitto, stored by the reference receiver (a separate
   process, signing its acks with an archive key), and deleted on those acks. The CPU time of this process
   (publish, PUBACK, ack verification, buffer delete; not the receiver) divided by the batches acknowledged.

    python3 bench/uplink_ack.py                  # 2,000 batches, about half a minute
    python3 bench/uplink_ack.py --batches 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog

from agent.protocol import acks, wire
from agent.protocol.signing import TrustStore, generate_key
from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue, QueuedBatch
from config.schema import MqttConfig
from tests.peers.mosquitto import Mosquitto

GW = "gw1"
ROOT = Path(__file__).resolve().parent.parent


def verification(tmp: Path, per_ack: int, messages: int) -> tuple[float, float]:
    """(µs CPU per ack message, µs CPU per acknowledged batch) of open_ack."""
    archive = generate_key(tmp / f"archive-{per_ack}", "archive")
    keys = TrustStore()
    keys.add(archive.public_raw)
    payloads = [acks.encode_ack(archive, gw=GW, ranges=[acks.AckRange(i * per_ack + 1, (i + 1) * per_ack,
                                                                      bytes(32))], issued=1)
                for i in range(messages)]
    start = time.process_time()
    for p in payloads:
        acks.open_ack(p, keys, gateway=GW)
    spent = time.process_time() - start
    return spent / messages * 1e6, spent / (messages * per_ack) * 1e6


async def whole_path(tmp: Path, batches: int, points: int) -> tuple[float, float, int]:
    """(µs CPU of this process per acknowledged batch, seconds, ack messages) for ``batches`` batches."""
    gateway = generate_key(tmp / "gw")
    archive = generate_key(tmp / "archive", "archive")
    (tmp / "trust.pub").write_text(f"{GW} {gateway.public_text}\n")  # the receiver's key registry format
    (tmp / "archive.keys").write_text(archive.public_text + "\n")
    queue = AsyncDiskQueue(tmp / "buffer.sqlite", max_bytes=8 << 30, frame_tags=wire.frame_tags, sync="normal",
                           min_free_bytes=0)
    await queue.open()
    prev = wire.GENESIS_HASH
    now = int(time.time() * 1000)
    tags = [f"plc1.t{i}" for i in range(10)]
    for seq in range(1, batches + 1):
        rows = [[i % 10, i, float(i % 97), 0] for i in range(points)]  # ts: ms after t0
        body = wire.encode_body(tags, {"raw": wire.Table(cols=["tag", "ts", "value", "q"], rows=rows)}, now)
        b = wire.encode_frame(gateway, gw=GW, seq=seq, prev=prev, created=now, t0=now, t1=now + points,
                              kind="data", enc="zstd", body=body)
        await queue.append(QueuedBatch.from_wire(b, points))
        prev = b.hash
    broker = Mosquitto(tmp / "mosquitto")
    broker.start()
    receiver = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, "-m", "backend.cli", "receive", "--broker", broker.url, "--trust", str(tmp / "trust.pub"),
         "--archive-key", str(tmp / "archive" / "archive.key"), "--db", str(tmp / "receiver.sqlite")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.sleep(1.0)  # the receiver subscribes before the first publish
        uplink = MqttUplink(MqttConfig(host="127.0.0.1", port=broker.port, archive_keys_file=tmp / "archive.keys"),
                            GW, queue)
        cpu0, t0 = time.process_time(), time.monotonic()
        task = asyncio.create_task(uplink.run())
        while uplink.stats.acked < batches:  # a counter of the uplink task; the receiver is watched too
            if receiver.poll() is not None:
                raise SystemExit(f"the receiver exited with status {receiver.returncode}; run it by hand to see why")
            if time.monotonic() - t0 > 300:
                raise SystemExit(f"{uplink.stats.acked} of {batches} batches acknowledged in 300 s: the receiver "
                                 f"refused the others (mine-backend receive --db {tmp / 'receiver.sqlite'} --report)")
            await asyncio.sleep(0.01)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert uplink.stats.bad_backend_acks == uplink.stats.unverified_acks == 0
    finally:
        receiver.terminate()
        receiver.wait(10)
        broker.kill()
        await queue.close()
    return cpu / batches * 1e6, wall, uplink.stats.published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--points", type=int, default=100, help="raw points per batch (default 100)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory() as tmp:
        print("open_ack (verification only), receiver-shaped acks: one hash-linked run per message")
        for per_ack in (1, 10, 100):
            per_msg, per_batch = verification(Path(tmp), per_ack, 2000)
            print(f"  {per_ack:>4} batches per ack: {per_msg:7.1f} µs CPU per ack, {per_batch:7.2f} µs per batch")
        per_batch, wall, published = asyncio.run(whole_path(Path(tmp), args.batches, args.points))
        print(f"whole path, {args.batches} batches of {args.points} points to a local Mosquitto and a signing "
              f"receiver: {per_batch:.0f} µs gateway CPU per acknowledged batch ({wall:.1f} s, "
              f"{published} publishes)")


if __name__ == "__main__":
    main()
