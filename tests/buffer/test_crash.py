"""Crash consistency with real processes: kill -9 while appending never loses a committed batch."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.protocol import wire
from buffer import DiskQueue
from tests.buffer.append_child import append_forever

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 60.0  # generous: the machine is shared; a healthy child reports its first commit in < 1 s


@dataclass
class ChildReport:
    committed: list[int] = field(default_factory=list)
    maybe_acked: set[int] = field(default_factory=set)


def run_and_kill(path: Path, *, commits: int, max_bytes: int = 1 << 30, ack_every: int = 0) -> ChildReport:
    """Start the appending child, wait until it reported ``commits`` commits, SIGKILL it mid-loop."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.buffer.append_child", str(path), str(max_bytes),
                             str(ack_every)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, bufsize=1)
    report = ChildReport()
    deadline = time.monotonic() + DEADLINE_S
    try:
        assert proc.stdout is not None
        while len(report.committed) < commits:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"child exited early with {proc.wait()}")
            if time.monotonic() > deadline:
                pytest.fail("child too slow")
            _note(report, line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=DEADLINE_S)
        if proc.stdout is not None:
            # Lines written before the kill are promises too.
            for line in proc.stdout:
                _note(report, line)
            proc.stdout.close()
    return report


def _note(report: ChildReport, line: str) -> None:
    word, *nums = line.split()
    if word == "committed":
        report.committed.append(int(nums[0]))
    elif word == "acking":
        report.maybe_acked.update(range(int(nums[0]), int(nums[1]) + 1))


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.ForkServerContext:
    """Children forked from a server that has already imported the agent: fast enough for 30 kills."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.buffer.append_child"])
    return ctx


def fork_and_kill(ctx: multiprocessing.context.ForkServerContext, path: Path, *, commits: int, max_bytes: int,
                  ack_every: int) -> ChildReport:
    """Like :func:`run_and_kill`, with the child forked from the preloaded forkserver."""
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=append_forever, args=(path, max_bytes, ack_every, sender), daemon=True)
    proc.start()
    sender.close()
    report = ChildReport()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(report.committed) < commits:
            if not receiver.poll(max(0.0, deadline - time.monotonic())):
                pytest.fail(f"child too slow or dead (exit code {proc.exitcode})")
            _note(report, receiver.recv())
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(DEADLINE_S)
        with contextlib.suppress(EOFError, OSError):
            while receiver.poll(0):  # messages sent before the kill are promises too
                _note(report, receiver.recv())
        receiver.close()
    return report


def check_store(path: Path, committed: set[int], maybe_acked: set[int]) -> tuple[int, int]:
    """Every committed seq is stored intact, acked or declared dropped; the chain links. Returns the head."""
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0)
    q.open()
    try:
        head_seq, head_hash = q.chain_head()
        stored = {}
        while True:
            page = q.peek(200, exclude=stored.keys())
            if not page:
                break
            for b in page:
                stored[b.seq] = b
        dropped = set()
        for d in q.pending_drops():
            dropped.update(range(d.first_seq, d.last_seq + 1))
        missing = committed - stored.keys() - maybe_acked - dropped
        assert missing == set(), f"committed batches lost: {sorted(missing)[:10]}"
        assert head_seq >= max(committed, default=0)
        for seq, b in stored.items():
            opened = wire.open_frame(b.frame)
            assert (opened.seq, opened.hash) == (seq, b.hash)
            if seq - 1 in stored:
                assert opened.prev == stored[seq - 1].hash
        if head_seq in stored:
            assert stored[head_seq].hash == head_hash
        assert q.stats().set_aside == 0
        return head_seq, len(stored)
    finally:
        q.close()


def test_kill_9_while_appending_loses_no_committed_batch(tmp_path: Path) -> None:
    """After SIGKILL every batch the child reported committed is stored intact and the chain continues."""
    path = tmp_path / "buffer.sqlite"
    report = run_and_kill(path, commits=200)

    head, stored = check_store(path, set(report.committed), set())
    assert stored >= len(report.committed)
    second = run_and_kill(path, commits=20)  # the sequence continues after the crash
    assert second.committed[0] == head + 1


def _soak(tmp_path: Path, kills: int, ctx: multiprocessing.context.ForkServerContext) -> None:
    path = tmp_path / "buffer.sqlite"
    rng = random.Random(1234)
    committed: set[int] = set()
    maybe_acked: set[int] = set()
    last_head = 0
    for _ in range(kills):
        report = fork_and_kill(ctx, path, commits=rng.randint(1, 40), max_bytes=200_000, ack_every=7)
        assert report.committed[0] == last_head + 1, "the sequence went back or skipped after a crash"
        committed.update(report.committed)
        maybe_acked.update(report.maybe_acked)
        last_head, _ = check_store(path, committed, maybe_acked)


@pytest.mark.slow
def test_repeated_kill_9_keeps_every_committed_batch_accounted(
    tmp_path: Path, forkserver: multiprocessing.context.ForkServerContext
) -> None:
    """Thirty kills at random points (with acks and cap evictions): every committed batch is stored, acked
    or declared in a pending drop, and the sequence always continues at head + 1."""
    _soak(tmp_path, kills=30, ctx=forkserver)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_soak_many_kill_9(tmp_path: Path, forkserver: multiprocessing.context.ForkServerContext) -> None:
    """The same invariant over 300 kills."""
    _soak(tmp_path, kills=300, ctx=forkserver)
