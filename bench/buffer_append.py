"""Durable append rate, consume+ack rate and memory while draining a large backlog.

Run from the worktree root: ``python3 bench/buffer_append.py [batches]``. Prints figures; asserts nothing.
Frames are realistic 10 s window batches (bench/buffer_frames.py: 2,000 tags + 20 raw tags, ~38 KB).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import structlog
from buffer_frames import batches

from agent.protocol import wire
from buffer import DiskQueue, QueuedBatch

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))


def _append_time(frames: list[tuple[QueuedBatch, int]], sync: str, *, head_file: bool) -> float:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
        q = DiskQueue(Path(d) / "buffer.sqlite", max_bytes=1 << 40, frame_tags=wire.frame_tags, sync=sync,
                      min_free_bytes=0)
        q.open()
        if not head_file:
            q._write_head_file = lambda **_: None  # type: ignore[method-assign]  # the state file's cost
        t = time.perf_counter()
        for b, _ in frames:
            q.append(b)
        dt = time.perf_counter() - t
        q.close()
    return dt


def _append_rates(frames: list[tuple[QueuedBatch, int]], rounds: int = 3) -> list[str]:
    """Interleaved rounds, so that load from other processes hits every variant alike; median reported."""
    variants = [("full", True), ("full", False), ("normal", True)]
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for sync, head in variants:
            times[(sync, head)].append(_append_time(frames, sync, head_file=head))
    n = len(frames)
    recs = sum(b.records for b, _ in frames)
    samples = sum(s for _, s in frames)
    mb = sum(len(b.frame) for b, _ in frames) / 1e6
    lines = []
    for (sync, head), ts in times.items():
        dt = statistics.median(ts)
        label = f"sync={sync}" + ("" if head else ", no .head file")
        lines.append(f"  {label:28s} {n / dt:6.0f} batches/s  {recs / dt:9.0f} records/s  "
                     f"{samples / dt:10.0f} samples/s  {mb / dt:5.1f} MB/s  "
                     f"({dt / n * 1000:.2f} ms/append, "
                     f"range {min(ts) / n * 1000:.2f}-{max(ts) / n * 1000:.2f})")
    return lines


def _consume_ack_rate(frames: list[tuple[QueuedBatch, int]], window: int) -> str:
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
        q = DiskQueue(Path(d) / "buffer.sqlite", max_bytes=1 << 40, frame_tags=wire.frame_tags, sync="full",
                      min_free_bytes=0)
        q.open()
        for b, _ in frames:
            q.append(b)
        t = time.perf_counter()
        done = 0
        while page := q.peek(window):
            done += q.ack(b.seq for b in page)
        dt = time.perf_counter() - t
        q.close()
    recs = sum(b.records for b, _ in frames)
    return f"  peek({window}) + ack, sync=full: {done / dt:8.0f} batches/s  {recs / dt:10.0f} records/s"


_DRAIN = """
import resource, sys
from pathlib import Path
import structlog
# Warnings (e.g. buffer_limits_clamped on a small disk) go to stderr: stdout carries the figures.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30),
                    logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from agent.protocol import wire
from buffer import DiskQueue
q = DiskQueue(Path(sys.argv[1]), max_bytes=1 << 40, frame_tags=wire.frame_tags, sync="full", min_free_bytes=0)
q.open()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 0
while page := q.peek(20):
    n += q.ack(b.seq for b in page)
print(n, base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _drain_rss(frame: QueuedBatch, n: int) -> tuple[int, int, int, float]:
    """Peak RSS of a fresh process that opens a backlog of ``n`` batches and drains it 20 at a time."""
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
        path = Path(d) / "buffer.sqlite"
        q = DiskQueue(path, max_bytes=1 << 40, frame_tags=wire.frame_tags, sync="normal", min_free_bytes=0)
        q.open()
        h = frame.hash
        for seq in range(1, n + 1):  # same bytes, new seq: the queue does not parse frames on this path
            q.append(QueuedBatch(seq, "data", frame.created_ms, frame.t0_ms, frame.t1_ms, frame.records, h,
                                 frame.frame))
        q.close()
        size = path.stat().st_size / 1e6
        out = subprocess.run([sys.executable, "-c", _DRAIN, str(path)], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[1],
                             env={**os.environ, "PYTHONPATH": "."})
        drained, base, peak = map(int, out.stdout.split())
        return drained, base, peak, size


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    t = time.perf_counter()
    frames = list(batches(n))
    print(f"{n} realistic batches built in {time.perf_counter() - t:.1f} s; "
          f"{sum(len(b.frame) for b, _ in frames) / n / 1000:.1f} KB/frame, {frames[0][0].records} records, "
          f"{frames[0][1]} samples each (file system of {Path.cwd()})")
    print("durable append (one transaction per batch, as the batcher does; median of 3 interleaved rounds):")
    for line in _append_rates(frames):
        print(line)
    print("consume + ack:")
    for window in (20, 100):
        print(_consume_ack_rate(frames, window))
    print("peak RSS draining a backlog with peek(20)/ack (fresh process each; must not follow the backlog):")
    for backlog in (500, 4000):
        drained, base, peak, size = _drain_rss(frames[0][0], backlog)
        print(f"  backlog {drained:5d} batches ({size:6.0f} MB on disk): "
              f"RSS after open {base / 1024:5.1f} MiB, peak while draining {peak / 1024:5.1f} MiB")
    print(f"(this process peaked at {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
