"""Bytes on disk per point for a realistic mix, the 7-day sizing it implies, and what other body encodings
would save. Run from the worktree root: ``python3 bench/buffer_sizing.py [windows]``.

The mix: 2,000 slowly varying tags read at 1 Hz, aggregated in 10 s windows (one ``win`` row per tag per
window: n, min, max, mean, last), plus 20 raw tags sent sample by sample; one signed batch per window.
"""

from __future__ import annotations

import sys
import tempfile
import time
import zlib
from pathlib import Path

import msgpack
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

from buffer_frames import Plant, batches

from agent.protocol import wire
from buffer import ROW_OVERHEAD, DiskQueue

DAY_S = 86400


def _on_disk(n_windows: int) -> tuple[int, int, int, int, int]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "buffer.sqlite"
        q = DiskQueue(path, max_bytes=1 << 40, frame_tags=wire.frame_tags, sync="normal", min_free_bytes=0)
        q.open()
        frames = records = samples = 0
        for b, s in batches(n_windows):
            q.append(b)
            frames += len(b.frame)
            records += b.records
            samples += s
        q.close()  # checkpoints the WAL into the database file
        size = path.stat().st_size + sum(p.stat().st_size for p in Path(d).glob("buffer.sqlite-*"))
        return size, frames, records, samples, n_windows


def _body_variants(n: int) -> dict[str, int]:
    """Compressed body bytes per batch for several encodings of the same content (averaged over n windows)."""
    plant = Plant(seed=11)
    sizes: dict[str, int] = {}
    samples_for_dict: list[bytes] = []
    docs = []
    for k in range(n):
        tags, tables, _, _ = plant.window_tables(1_700_000_000_000 + k * 10_000)
        rows_doc = {"tags": tags,
                    "tables": {name: {"cols": t.cols, "rows": t.rows} for name, t in tables.items()}}
        docs.append((tags, tables, rows_doc))
        samples_for_dict.append(msgpack.packb(rows_doc, use_bin_type=True))

    def add(name: str, size: int) -> None:
        sizes[name] = sizes.get(name, 0) + size

    dict_data = zstandard.train_dictionary(112_640, samples_for_dict[: max(1, n // 2)])
    dict_c = zstandard.ZstdCompressor(level=3, dict_data=dict_data)
    for tags, tables, rows_doc in docs:
        packed = msgpack.packb(rows_doc, use_bin_type=True)
        add("msgpack, uncompressed", len(packed))
        add("rows, zlib-6", len(zlib.compress(packed, 6)))
        for level in (1, 3, 9, 19):
            label = f"rows, zstd-{level}{' (current)' if level == 3 else ''}"
            add(label, len(zstandard.ZstdCompressor(level=level).compress(packed)))
        add("rows, zstd-3 + trained dictionary", len(dict_c.compress(packed)))
        add("  of which the tag-name list, zstd-3", len(zstandard.ZstdCompressor(level=3).compress(
            msgpack.packb(tags, use_bin_type=True))))
        no_tags = msgpack.packb({"tags": [], "tables": rows_doc["tables"]}, use_bin_type=True)
        add("rows without tag names (names sent once, by hash), zstd-3",
            len(zstandard.ZstdCompressor(level=3).compress(no_tags)))
        # Columnar: one array per column; win values as integer hundredths, min-relative (delta inside a row).
        win = tables["win"].rows
        cols = list(zip(*win, strict=True))
        lo = [round(v * 100) for v in cols[3]]
        columnar = {
            "tags": tags,
            "win": {"tag_first": win[0][0], "n": 10, "min": lo,
                    "max_d": [round(v * 100) - m for v, m in zip(cols[4], lo, strict=True)],
                    "mean": list(cols[5]),
                    "last_d": [round(v * 100) - m for v, m in zip(cols[6], lo, strict=True)]},
            "raw": {"cols": tables["raw"].cols, "rows": tables["raw"].rows},
        }
        add("columnar + scaled-int deltas (mean kept as float), zstd-3",
            len(zstandard.ZstdCompressor(level=3).compress(msgpack.packb(columnar, use_bin_type=True))))
        columnar_nt = dict(columnar, tags=[])
        add("columnar + deltas, no tag names, zstd-3",
            len(zstandard.ZstdCompressor(level=3).compress(msgpack.packb(columnar_nt, use_bin_type=True))))
    return {k: v // n for k, v in sizes.items()}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    plant = Plant()
    t = time.perf_counter()
    size, frames, records, samples, windows = _on_disk(n)
    took = time.perf_counter() - t
    print(f"workload: {plant.tags} tags at 1 Hz in {plant.window_s} s windows + {plant.raw_tags} raw tags; "
          f"{windows} batches ({took:.1f} s to build and store)")
    print(f"frame size (signed, zstd-3 body):     {frames / windows:10.0f} B/batch")
    print(f"on disk (db + wal after checkpoint):  {size / windows:10.0f} B/batch   "
          f"({size / frames:.3f} x frame bytes; ROW_OVERHEAD charged = {ROW_OVERHEAD} B)")
    print(f"per record (win row or raw sample):   {size / records:10.2f} B")
    print(f"per 1 Hz sample read:                 {size / samples:10.3f} B")
    per_day = size / windows * (DAY_S / plant.window_s)
    print(f"7-day backlog for this gateway:       {per_day * 7 / 2**30:10.2f} GiB "
          f"({per_day / 2**20:.0f} MiB/day); default buffer.max_bytes = 1 GiB holds "
          f"{2**30 / per_day:.1f} days")
    print()
    print(f"compressed body per batch, {min(n, 20)} windows (format change proposals, not implemented):")
    variants = _body_variants(min(n, 20))
    base = variants["rows, zstd-3 (current)"]
    for name, v in variants.items():
        print(f"  {name:58s} {v:8d} B  {v / base:6.2f}x")


if __name__ == "__main__":
    main()
