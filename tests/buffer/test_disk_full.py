"""A full file system, for real: a small tmpfs mounted by the test (root only, skipped otherwise)."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.errors import BufferStoreError
from agent.protocol import wire
from buffer import DiskQueue
from tests.buffer.frames import ChainMaker
from tests.peers.tmpfs import tmpfs

MIB = 1 << 20


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A fresh 8 MiB tmpfs, unmounted afterwards."""
    with tmpfs(tmp_path / "fs", 8) as mnt:
        yield mnt


def _fill_disk(directory: Path) -> Path:
    """Write a filler file until the file system reports ENOSPC."""
    filler = directory / "filler"
    with filler.open("wb") as f:
        chunk = b"\0" * 65536
        while True:
            try:
                f.write(chunk)
                f.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError):  # leave a sliver, so that the store can still be read
        os.truncate(filler, max(0, filler.stat().st_size - 16384))
    return filler


def test_enospc_fails_the_append_recoverably_and_corrupts_nothing(small_fs: Path) -> None:
    """When the disk fills behind the watermark's back, append raises a recoverable BufferStoreError, the head
    stays, every committed batch stays readable, and the same batch is accepted once space returns."""
    path = small_fs / "buffer.sqlite"
    # The watermark is told the disk is empty, so nothing is evicted and the real ENOSPC is reached.
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0, free_disk=lambda _: 1 << 40)
    q.open()
    chain = ChainMaker()
    committed = []
    for _ in range(50):
        b = chain.next(padding=4000)
        q.append(b)
        committed.append(b)
    filler = _fill_disk(small_fs)
    failed = None
    for _ in range(1000):
        b = chain.next(padding=4000)
        try:
            q.append(b)
        except BufferStoreError as exc:
            failed = (b, exc)
            break
        committed.append(b)
    assert failed is not None, "the disk never filled"
    batch, exc = failed

    assert exc.recoverable
    assert "disk" in str(exc)
    assert q.chain_head() == (committed[-1].seq, committed[-1].hash)
    filler.unlink()
    q.append(batch)  # the very same batch, once space is back
    committed.append(batch)
    q.close()
    reopened = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0)
    reopened.open()
    assert reopened.peek(10_000) == committed
    assert reopened._db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    reopened.close()


def test_free_disk_watermark_on_a_real_small_disk_sheds_data_instead_of_failing(small_fs: Path) -> None:
    """With min_free_bytes set, appending far more than the disk holds never fails: the oldest data is
    evicted as disk_low, and every appended seq is either stored or in a pending drop record."""
    path = small_fs / "buffer.sqlite"
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=1 * MIB)
    q.open()
    chain = ChainMaker()
    n = 1500  # about 8 MiB of frames into an 8 MiB file system
    for _ in range(n):
        q.append(chain.next(padding=5000))

    stored = {b.seq for b in q.peek(n)}
    dropped = {s for d in q.pending_drops() for s in range(d.first_seq, d.last_seq + 1)}
    assert stored | dropped == set(range(1, n + 1))
    assert stored & dropped == set()
    assert q.stats().drops_by_reason == {"disk_low": len(dropped)}
    st = os.statvfs(small_fs)
    assert st.f_bavail * st.f_frsize >= 1 * MIB - 64 * 1024  # the watermark held (within a WAL page group)
    q.close()


def test_sqlite_full_from_a_page_quota_fails_the_append_recoverably(tmp_path: Path) -> None:
    """The same guarantee without root: a PRAGMA max_page_count quota makes SQLite report SQLITE_FULL; the
    append fails recoverably with nothing half-written, and succeeds unchanged once the quota is raised."""
    path = tmp_path / "buffer.sqlite"
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0)
    q.open()
    chain = ChainMaker()
    committed = [chain.next(padding=3000) for _ in range(5)]
    for b in committed:
        q.append(b)
    conn = q._db()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 8}")
    failed = None
    for _ in range(100):
        b = chain.next(padding=3000)
        try:
            q.append(b)
        except BufferStoreError as exc:
            failed = (b, exc)
            break
        committed.append(b)
    assert failed is not None, "the page quota was never reached"
    batch, exc = failed

    assert exc.recoverable
    assert q.chain_head() == (committed[-1].seq, committed[-1].hash)
    assert q.peek(1000) == committed
    assert q.stats().batches == len(committed)
    conn.execute(f"PRAGMA max_page_count = {pages + 1000}")
    q.append(batch)
    assert q.peek(1000) == [*committed, batch]
    q.close()
