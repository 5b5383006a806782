"""Realistic batches for the buffer benchmarks: 2,000 slowly varying tags aggregated in 10 s windows at 1 Hz,
plus a few raw tags sent sample by sample, signed and chained like the batcher does."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from buffer import QueuedBatch

WIN_COLS = ["tag", "start", "n", "min", "max", "mean", "last"]
RAW_COLS = ["tag", "ts", "value"]


@dataclass
class Plant:
    """``tags`` slowly varying analog values (random walks rounded like a 16-bit scaled register)."""

    tags: int = 2000
    raw_tags: int = 20
    window_s: int = 10
    seed: int = 7

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        devices = [f"plc{d:02d}" for d in range(1, 21)]
        kinds = ["ch4_pct", "co_ppm", "o2_pct", "temp_c", "airflow_m3s", "pump_current_a", "level_m",
                 "vib_mms"]
        self.names = [f"{devices[i % len(devices)]}.{kinds[i % len(kinds)]}_{i:04d}"
                      for i in range(self.tags)]
        self.raw_names = [f"gas{i:02d}.ch4_pct_fast" for i in range(self.raw_tags)]
        self.value = [rng.uniform(0, 100) for _ in range(self.tags + self.raw_tags)]
        self.rng = rng

    def _step(self, i: int) -> float:
        self.value[i] += self.rng.gauss(0, 0.05)
        return round(self.value[i], 2)

    def window_tables(self, t0: int) -> tuple[list[str], dict[str, wire.Table], int, int]:
        """One window's body tables (rows already in wire form) and its record and 1 Hz sample counts."""
        win = []
        for i in range(self.tags):
            xs = [self._step(i) for _ in range(self.window_s)]
            win.append([i, 0, len(xs), min(xs), max(xs), round(sum(xs) / len(xs), 4), xs[-1]])
        raw = []
        for j in range(self.raw_tags):
            for k in range(self.window_s):
                raw.append([self.tags + j, k * 1000, self._step(self.tags + j)])
        tables = {"win": wire.Table(WIN_COLS, win), "raw": wire.Table(RAW_COLS, raw)}
        samples = self.tags * self.window_s + len(raw)
        return self.names + self.raw_names, tables, len(win) + len(raw), samples


def batches(n: int, *, plant: Plant | None = None, enc: str = "zstd") -> Iterator[tuple[QueuedBatch, int]]:
    """``n`` consecutive signed batches (one per window) with the number of 1 Hz samples each covers."""
    plant = plant or Plant()
    signer = BatchSigner(Ed25519PrivateKey.generate())
    prev = wire.GENESIS_HASH
    t = 1_700_000_000_000
    for seq in range(1, n + 1):
        tags, tables, records, samples = plant.window_tables(t)
        body = wire.encode_body(tags, tables, t, enc)
        b = wire.encode_frame(signer, gw="gw-bench", seq=seq, prev=prev,
                              created=t + plant.window_s * 1000 + 200, t0=t, t1=t + plant.window_s * 1000 - 1,
                              kind="data", enc=enc, body=body)
        prev = b.hash
        t += plant.window_s * 1000
        yield QueuedBatch.from_wire(b, records), samples
