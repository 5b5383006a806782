"""Receiver throughput: frames verified (Ed25519), decoded and stored (SQLite WAL, FULL sync) per second.

Run: python3 bench/receiver.py [--frames N] [--rows R]

Two commit policies are measured in the same run: one transaction per frame (what a receiver does when
frames trickle in) and up to 256 frames per transaction (what the MQTT receiver does with a backlog).
Also prints the cost of verification alone, and the CPU time of each run: the difference between wall and
CPU time is the disk (fsync), which on a shared or slow disk dominates.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner, TrustStore
from backend.receiver import ReceiverStore
from backend.registry import entry_for

WIN = ["tag", "start", "dur_ms", "count", "good", "bad", "min", "max", "mean", "last"]


def make_frames(n: int, rows: int) -> tuple[list[bytes], BatchSigner]:
    signer = BatchSigner(Ed25519PrivateKey.generate())
    tags = [f"plc{i // 50}.t{i % 50}" for i in range(rows)]
    prev, frames = wire.GENESIS_HASH, []
    t0 = 1_700_000_000_000
    for seq in range(1, n + 1):
        table = wire.Table(WIN, [[i, 0, 10_000, 10, 10, 0, 1.0 + i, 2.0 + i, 1.5 + i, 1.7 + i]
                                 for i in range(rows)])
        body = wire.encode_body(tags, {"win": table}, t0)
        b = wire.encode_frame(signer, gw="gw-bench", seq=seq, prev=prev, created=t0 + 10_500, t0=t0,
                              t1=t0 + 10_000, kind="data", enc="zstd", body=body)
        prev, t0 = b.hash, t0 + 10_000
        frames.append(b.frame)
    return frames, signer


def run(frames: list[bytes], signer: BatchSigner, per_commit: int) -> tuple[float, float]:
    """Wall and CPU seconds to ingest every frame, ``per_commit`` frames per transaction."""
    with tempfile.TemporaryDirectory() as d, ReceiverStore(Path(d) / "bench.sqlite") as store:
        store.registry.register(entry_for("gw-bench", signer.public_text), now_ms=0)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(frames), per_commit):
            store.ingest_many([(f, "gw-bench", "data") for f in frames[i:i + per_commit]])
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        report = store.report()["gateways"]["gw-bench"]
        if report["batches"] != len(frames) or report["missing"] or report["chain_breaks"]:
            raise SystemExit(f"the store lost or broke something: {report}")
    return elapsed, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--rows", type=int, default=100, help="rows (tags) per frame")
    args = p.parse_args()
    frames, signer = make_frames(args.frames, args.rows)
    trust = TrustStore()
    trust.add(signer.public_raw)
    size = sum(map(len, frames)) / len(frames)
    print(f"{args.frames} frames of {args.rows} win rows, {size:.0f} bytes each (zstd)")

    start = time.perf_counter()
    for f in frames:
        wire.decode_body(wire.verify_frame(f, trust))
    verify = time.perf_counter() - start
    print(f"verify + decode only:        {args.frames / verify:8.0f} frames/s  "
          f"{args.frames * args.rows / verify:9.0f} rows/s  {verify / args.frames * 1e6:6.0f} µs/frame")
    for per_commit in (1, 256):
        t, cpu = run(frames, signer, per_commit)
        print(f"verify + store, {per_commit:3d}/commit: {args.frames / t:8.0f} frames/s  "
              f"{args.frames * args.rows / t:9.0f} rows/s  {t / args.frames * 1e6:6.0f} µs/frame  "
              f"(CPU {cpu / args.frames * 1e6:.0f} µs/frame; the rest is waiting for the disk)")


if __name__ == "__main__":
    main()
