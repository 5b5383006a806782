"""Receiver throughput: frames verified (Ed25519), decoded and stored (SQLite WAL, FULL sync) per second.

Run: python3 bench/receiver.py [--frames N] [--rows R] [--hostile]

Two commit policies are measured in the same run: one transaction per frame (what a receiver does when
frames trickle in) and up to 256 frames per transaction (what the MQTT receiver does with a backlog).
Also prints the cost of verification alone, and the CPU time of each run: the difference between wall and
CPU time is the disk (fsync), which on a shared or slow disk dominates.

``--hostile`` then feeds, at full rate and 256 frames per commit, a mix in which most frames are an attack
(another gateway's key signing in this gateway's name, unknown keys, garbage, bit flips, oversized frames,
decompression and row bombs) and prints the throughput, how each was refused, and the peak RSS of the
process (``ru_maxrss``) before and after: what an attacker can make the receiver spend.
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import msgpack
import zstandard
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


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _forged(signer: BatchSigner, gw: str, seq: object, body: bytes) -> bytes:
    """A frame signed by ``signer`` in ``gw``'s name, with any seq (what a key holder can make)."""
    h: dict[str, object] = {"v": 1, "gw": gw, "seq": seq, "prev": bytes(32), "created": 1_700_000_000_000,
                            "t0": 1_700_000_000_000, "t1": 1_700_000_010_000, "kind": "data", "enc": "zstd",
                            "alg": "ed25519", "kid": signer.kid, "body": body}
    signed = msgpack.packb(h, use_bin_type=True)
    return msgpack.packb([1, signed, signer.sign(signed)], use_bin_type=True)


def hostile_mix(genuine: list[bytes], n: int) -> tuple[list[tuple[bytes, str, str]], BatchSigner]:
    """``n`` arrivals on gw-bench's topics: every fourth a genuine frame, the others attacks in rotation.
    Returns them and the attacker's own gateway key (to register for gw-evil)."""
    rng = random.Random(15)
    attacker, stranger = BatchSigner(Ed25519PrivateKey.generate()), BatchSigner(Ed25519PrivateKey.generate())
    small = wire.encode_body(["t"], {"win": wire.Table(["tag", "start", "mean"], [[0, 0, 1.0]])}, 0)
    zbomb = zstandard.ZstdCompressor().compress(b"\xc6" + (80 << 20).to_bytes(4, "big") + bytes(80 << 20))
    rows_bomb = zstandard.ZstdCompressor().compress(msgpack.packb(
        {"tags": [], "tables": {"x": {"cols": ["a"], "rows": [[]] * 300_000}}}))
    attacks = [
        lambda i: _forged(attacker, "gw-bench", i, small),  # impersonation with a registered key
        lambda i: _forged(stranger, "gw-bench", i, small),  # unknown key
        lambda i: rng.randbytes(rng.randrange(1, 2000)),  # garbage
        lambda i: _flip(genuine[i % len(genuine)], rng),  # bit flips of genuine frames
        lambda i: _forged(attacker, "gw-bench", 2**63 + i, small),  # out-of-range header
        lambda i: _forged(attacker, "gw-evil", i, zbomb),  # a decompression bomb under its own name
        lambda i: _forged(attacker, "gw-evil", i, rows_bomb),  # a row bomb under its own name
    ]
    oversized = bytes(16 * 1024 * 1024 + 1)
    out: list[tuple[bytes, str, str]] = []
    g = iter(genuine)
    for i in range(n):
        if i % 4 == 0:
            out.append((next(g), "gw-bench", "data"))
        elif i % 500 == 1:
            out.append((oversized, "gw-bench", "data"))
        else:
            kind = attacks[i % len(attacks)]
            topic = "gw-evil" if kind in attacks[5:] else "gw-bench"
            out.append((kind(i + 10_000), topic, "data"))
    return out, attacker


def _flip(frame: bytes, rng: random.Random) -> bytes:
    b = bytearray(frame)
    b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b)


def run_hostile(frames: list[bytes], signer: BatchSigner) -> None:
    n = len(frames) * 4
    mix, attacker = hostile_mix(frames, n)
    before = _peak_rss_mib()
    causes: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as d, ReceiverStore(Path(d) / "bench.sqlite") as store:
        store.registry.register(entry_for("gw-bench", signer.public_text), now_ms=0)
        store.registry.register(entry_for("gw-evil", attacker.public_text), now_ms=0)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, n, 256):
            for r in store.ingest_many(mix[i:i + 256]):
                causes[r.cause or r.status] += 1
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        report = store.report()["gateways"]["gw-bench"]
        if report["batches"] != len(frames) or report["missing"] or report["chain_breaks"]:
            raise SystemExit(f"the attack changed the genuine record: {report}")
    print(f"hostile mix, 256/commit:     {n / elapsed:8.0f} frames/s  ({len(frames)} genuine, {n - len(frames)} "
          f"hostile; CPU {cpu / n * 1e6:.0f} µs/frame); every genuine batch stored")
    print("  decided: " + ", ".join(f"{k} {v}" for k, v in sorted(causes.items())))
    print(f"  peak RSS: {before:.0f} MiB before the hostile mix, {_peak_rss_mib():.0f} MiB after")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--rows", type=int, default=100, help="rows (tags) per frame")
    p.add_argument("--hostile", action="store_true",
                   help="also feed a mostly hostile mix (4x --frames arrivals) and print peak RSS")
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
    print(f"peak RSS so far: {_peak_rss_mib():.0f} MiB")
    if args.hostile:
        run_hostile(frames, signer)


if __name__ == "__main__":
    main()
