"""What the receiver's trust checks cost: records/s of the reference receiver of an earlier revision (format
version 1: no key registry, no bounds, no per-frame savepoint) against this tree's, measured in one run.

Run: python3 bench/receiver_checks.py [--baseline REV] [--frames N] [--rows R] [--rounds K]

The baseline is taken from git (``git archive REV``) into a temporary folder; each round runs the baseline and
then this tree in child processes, alternately, on the same kind of input (each side's own frame format: the
baseline reads only version 1, this tree writes version 2), 256 frames per commit as the MQTT receiver does
with a backlog, into a fresh SQLite file with FULL sync. Printed per side: the median over the rounds of
records/s by wall clock (includes fsync, which a shared or slow disk dominates) and by CPU time (what the
checks cost), and the ratio of this tree to the baseline. The default baseline is the last revision whose
receiver spoke format version 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "6e20c88"

# Run in a child with PYTHONPATH at one tree; prints one JSON line. Works with both receiver APIs.
CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from backend.receiver import ReceiverStore

frames_n, rows = int(sys.argv[1]), int(sys.argv[2])
signer = BatchSigner(Ed25519PrivateKey.generate())
cols = ["tag", "start", "dur_ms", "count", "good", "bad", "min", "max", "mean", "last"]
tags = [f"plc{i // 50}.t{i % 50}" for i in range(rows)]
t0 = 1_700_000_000_000
prev, frames = wire.GENESIS_HASH, []
for seq in range(1, frames_n + 1):
    table = wire.Table(cols, [[i, 0, 10_000, 10, 10, 0, 1.0 + i, 2.0 + i, 1.5 + i, 1.7 + i] for i in range(rows)])
    body = wire.encode_body(tags, {"win": table}, t0 + seq * 10_000)
    b = wire.encode_frame(signer, gw="gw-01", seq=seq, prev=prev, created=t0 + seq * 10_000 + 10_000,
                          t0=t0 + seq * 10_000, t1=t0 + seq * 10_000 + 10_000, kind="data", enc="zstd", body=body)
    frames.append(b.frame)
    prev = b.hash
with tempfile.TemporaryDirectory() as tmp:
    store = ReceiverStore(Path(tmp) / "r.sqlite")
    if hasattr(store, "registry"):
        from backend.registry import entry_for
        store.registry.register(entry_for("gw-01", signer.public_text), now_ms=0)
        ingest = lambda chunk: store.ingest_many([(f, "gw-01", "data") for f in chunk])
    else:
        from agent.protocol.signing import TrustStore
        trust = TrustStore()
        trust.add(signer.public_raw)
        ingest = lambda chunk: store.ingest_many([(f, "gw-01") for f in chunk], trust)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    stored = 0
    for i in range(0, len(frames), 256):
        stored += sum(r.status == "stored" for r in ingest(frames[i:i + 256]))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    store.close()
print(json.dumps({"stored": stored, "records": stored * rows, "wall_s": wall, "cpu_s": cpu}))
"""


def run_side(tree: Path, frames: int, rows: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, str(frames), str(rows)], check=True, capture_output=True,
                         text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, timeout=1800)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["stored"] != frames:
        raise SystemExit(f"{tree}: stored {result['stored']} of {frames} frames")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"git revision to compare with ({DEFAULT_BASELINE})")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--rows", type=int, default=100, help="window rows (tags) per frame")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "agent", "backend", "buffer",
                                  "config", "drivers"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        sides: dict[str, list[dict[str, float]]] = {"baseline": [], "this tree": []}
        for _ in range(args.rounds):
            sides["baseline"].append(run_side(base, args.frames, args.rows))
            sides["this tree"].append(run_side(ROOT, args.frames, args.rows))
    print(f"{args.frames} frames x {args.rows} window rows, 256 frames per commit, {args.rounds} rounds, "
          f"baseline {args.baseline}; medians:")
    medians = {}
    for name, runs in sides.items():
        wall = statistics.median(r["records"] / r["wall_s"] for r in runs)
        cpu = statistics.median(r["records"] / r["cpu_s"] for r in runs)
        medians[name] = (wall, cpu)
        print(f"  {name:9}  {wall:9.0f} records/s by wall clock   {cpu:9.0f} records/s per CPU second")
    (bw, bc), (tw, tc) = medians["baseline"], medians["this tree"]
    print(f"  this tree / baseline: {tw / bw:.2f} by wall clock, {tc / bc:.2f} per CPU second")


if __name__ == "__main__":
    main()
