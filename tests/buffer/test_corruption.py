"""Crash and corruption recovery on real files: torn WAL, flipped bytes, stale state files, broken stores.

Each test damages the files the way a power cut or failing flash would, reopens, and asserts exactly which
batches come back, which are declared lost (and why), and that the chain head never goes backwards.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from agent.core.errors import BufferStoreError
from agent.protocol import wire
from buffer import DiskQueue, QueuedBatch
from buffer._head_file import RESERVE, HeadState, read_head_file, write_head_file
from tests.buffer.frames import ChainMaker

N = 40


def _open(path: Path) -> DiskQueue:
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0)
    q.open()
    return q


def _write(path: Path, n: int = N, chain: ChainMaker | None = None) -> tuple[DiskQueue, list[QueuedBatch]]:
    q = _open(path)
    chain = chain or ChainMaker()
    batches = [chain.next(padding=1000) for _ in range(n)]
    for b in batches:
        q.append(b)
    return q, batches


def _power_cut_copy(src: Path, dst_dir: Path) -> Path:
    """The files as a power cut would leave them: db, WAL and state file, copied while the store is open."""
    dst_dir.mkdir()
    for suffix in ("", "-wal", ".head"):
        f = src.with_name(src.name + suffix)
        if f.exists():
            shutil.copyfile(f, dst_dir / (src.name + suffix))
    return dst_dir / src.name


def _accounting(q: DiskQueue) -> tuple[list[int], list[tuple[int, int, str]]]:
    stored = [b.seq for b in q.peek(10_000)]
    drops = [(d.first_seq, d.last_seq, d.reason) for d in q.pending_drops()]
    return stored, drops


def test_truncated_wal_tail_is_declared_lost_and_head_does_not_go_back(tmp_path: Path) -> None:
    """A WAL cut mid-way loses the commits after the cut; the state file proves them, so exactly those seqs
    are declared lost and the sequence continues after the last one ever appended."""
    q, batches = _write(tmp_path / "a" / "b.sqlite")
    copy = _power_cut_copy(q.path, tmp_path / "cut")
    q.close()
    wal = copy.with_name(copy.name + "-wal")
    wal.write_bytes(wal.read_bytes()[: wal.stat().st_size // 2])

    r = _open(copy)
    stored, drops = _accounting(r)
    k = len(stored)
    assert stored == list(range(1, k + 1))
    assert k < N
    assert drops == [(k + 1, N, "lost")]
    assert r.chain_head() == (N, batches[-1].hash)
    assert r.stats().drops_by_reason == {"lost": N - k}
    assert r.peek(k) == batches[:k]


def test_flipped_byte_in_wal_drops_that_commit_and_later_ones_only(tmp_path: Path) -> None:
    """A corrupted WAL frame invalidates it and everything after (SQLite's WAL checksums); the rest is
    served and the missing tail is declared lost."""
    q, _ = _write(tmp_path / "a" / "b.sqlite")
    copy = _power_cut_copy(q.path, tmp_path / "cut")
    q.close()
    wal = copy.with_name(copy.name + "-wal")
    data = bytearray(wal.read_bytes())
    data[len(data) * 2 // 3] ^= 0xFF
    wal.write_bytes(bytes(data))

    r = _open(copy)
    stored, drops = _accounting(r)
    k = len(stored)
    assert stored == list(range(1, k + 1))
    assert drops == ([(k + 1, N, "lost")] if k < N else [])
    assert r.chain_head()[0] == N


def test_flipped_byte_in_a_stored_frame_is_set_aside_and_the_rest_served(tmp_path: Path) -> None:
    """A row whose frame fails its CRC is moved to set_aside and declared corrupt; all others are served."""
    path = tmp_path / "b.sqlite"
    q, batches = _write(path)
    q.close()
    data = bytearray(path.read_bytes())
    victim = batches[4].frame
    at = data.find(victim)
    assert at > 0
    while at >= 0:  # every copy, in case a stale one sits in unused page space
        data[at + len(victim) // 2] ^= 0x01
        at = data.find(victim, at + 1)
    path.write_bytes(bytes(data))

    r = _open(path)
    stored, drops = _accounting(r)
    assert stored == [s for s in range(1, N + 1) if s != 5]
    assert drops == [(5, 5, "corrupt")]
    assert r.stats().set_aside == 1
    assert r._db().execute("SELECT seq, reason FROM set_aside").fetchall() == [(5, "corrupt")]


def test_corruption_found_by_peek_is_set_aside_not_served(tmp_path: Path) -> None:
    """A frame damaged after open is caught by the CRC check on peek and never handed to the uplink."""
    q, batches = _write(tmp_path / "b.sqlite", n=3)
    damaged = bytearray(batches[1].frame)
    damaged[-1] ^= 0xFF  # always a change (overwriting with a constant byte is a no-op 1 time in 256)
    q._db().execute("UPDATE batches SET frame = ? WHERE seq = 2", (bytes(damaged),))

    assert [b.seq for b in q.peek(10)] == [1, 3]
    assert [(d.first_seq, d.reason) for d in q.pending_drops()] == [(2, "corrupt")]


def test_state_file_older_than_the_data_does_not_lower_the_head(tmp_path: Path) -> None:
    """An old state file (e.g. restored from backup) loses against the database: no loss, head = newest."""
    path = tmp_path / "b.sqlite"
    chain = ChainMaker()
    q, _ = _write(path, n=5, chain=chain)
    old_state = path.with_name(path.name + ".head").read_bytes()
    for _ in range(5):
        q.append(chain.next())
    head = q.chain_head()
    q.close()
    path.with_name(path.name + ".head").write_bytes(old_state)

    r = _open(path)
    assert r.chain_head() == head
    assert r.pending_drops() == []


def test_database_older_than_the_state_file_declares_the_missing_seqs(tmp_path: Path) -> None:
    """A database restored from an older copy: the state file keeps the head, the gap is declared lost."""
    path = tmp_path / "b.sqlite"
    chain = ChainMaker()
    q, _ = _write(path, n=5, chain=chain)
    old_db = _power_cut_copy(path, tmp_path / "old")
    later = [chain.next() for _ in range(5)]
    for b in later:
        q.append(b)
    q.close()
    for suffix in ("", "-wal"):
        shutil.copyfile(old_db.with_name(old_db.name + suffix), path.with_name(path.name + suffix))

    r = _open(path)
    assert r.chain_head() == (10, later[-1].hash)
    assert _accounting(r) == ([1, 2, 3, 4, 5], [(6, 10, "lost")])
    r.append(chain.next())  # seq 11: the sequence continues, it does not repeat 6..10


def test_unreadable_store_is_quarantined_and_losses_declared_from_the_state_file(tmp_path: Path) -> None:
    """A file SQLite cannot open is renamed .bad-<time>, a new store starts at the old head, and the seqs
    that were unacked (from the state file's low mark) are declared lost by quarantine."""
    path = tmp_path / "b.sqlite"
    q, batches = _write(path, n=10)
    q.ack([1, 2, 3])
    q.append(ChainMaker(10, batches[-1].hash).next())  # rewrites the state file with low = 4
    q.close()
    with path.open("r+b") as f:
        f.write(b"this is not a database" * 5)

    r = _open(path)
    assert len(list(tmp_path.glob("b.sqlite.bad-*"))) == 1
    assert r.stats().quarantined == 1
    assert r.chain_head()[0] == 11
    assert _accounting(r) == ([], [(4, 11, "quarantine")])


def test_quarantine_salvages_every_row_that_still_reads(tmp_path: Path) -> None:
    """When only an index page is broken, the store is quarantined but every row is copied into the new
    store, so nothing is declared lost."""
    path = tmp_path / "b.sqlite"
    q, batches = _write(path)
    q.close()
    conn = sqlite3.connect(path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'batches_by_kind'").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * page + 8)
        f.write(b"\xff" * 64)

    r = _open(path)
    assert r.stats().quarantined == 1
    assert r.peek(10_000) == batches
    assert r.pending_drops() == []
    assert r.chain_head() == (N, batches[-1].hash)


def test_quarantine_with_a_broken_table_page_accounts_for_every_seq(tmp_path: Path) -> None:
    """A destroyed table page loses the rows on it; every seq is then either served or declared, never both
    and never neither."""
    path = tmp_path / "b.sqlite"
    q, batches = _write(path)
    q.close()
    data = bytearray(path.read_bytes())
    at = data.find(batches[N // 2].frame)
    page = 4096
    start = at - at % page
    data[start:start + page] = b"\xa5" * page
    path.write_bytes(bytes(data))

    r = _open(path)
    assert r.stats().quarantined == 1
    stored, drops = _accounting(r)
    declared = [s for a, b, _ in drops for s in range(a, b + 1)]
    assert sorted(stored + declared) == list(range(1, N + 1))
    assert N // 2 + 1 not in stored
    for b in r.peek(10_000):
        assert b == batches[b.seq - 1]
    assert r.chain_head()[0] == N


def test_store_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    """A state directory that is a file gives an error naming the path, not a traceback from sqlite."""
    blocker = tmp_path / "state"
    blocker.write_text("")
    q = DiskQueue(blocker / "b.sqlite", max_bytes=1 << 20, frame_tags=wire.frame_tags)

    with pytest.raises(BufferStoreError, match="cannot create the buffer's directory") as info:
        q.open()
    assert info.value.path == str(blocker)


def _crash(q: DiskQueue) -> None:
    """Abandon an open queue the way a crash does: no close(), so no clean state file and no checkpoint."""
    q._conn = None
    q._unlock()  # the kernel releases a dead process's flock


def _pretend_reboot(path: Path) -> HeadState:
    """Rewrite the state file as if it had been written before the last reboot (another boot id)."""
    head_path = path.with_name(path.name + ".head")
    state = read_head_file(head_path)
    assert state is not None
    state = state._replace(boot="an-earlier-boot")
    write_head_file(head_path, state, durable=True)
    return state


def test_after_a_reboot_a_truncated_wal_moves_the_head_past_the_durable_reservation(tmp_path: Path) -> None:
    """After a power cut the state file's seq may itself be stale, so only its durable reservation bounds
    what was appended: the head jumps there and everything above the surviving rows is declared lost."""
    q, _ = _write(tmp_path / "a" / "b.sqlite")
    copy = _power_cut_copy(q.path, tmp_path / "cut")
    q.close()
    wal = copy.with_name(copy.name + "-wal")
    wal.write_bytes(wal.read_bytes()[: wal.stat().st_size // 2])
    state = _pretend_reboot(copy)

    r = _open(copy)
    stored, drops = _accounting(r)
    k = len(stored)
    assert state.reserved > N
    assert drops == [(k + 1, state.reserved, "lost")]
    assert r.chain_head()[0] == state.reserved


def test_sync_normal_after_a_reboot_declares_the_seqs_a_rolled_back_wal_may_have_held(tmp_path: Path) -> None:
    """With sync=normal a power cut can roll back commits without trace, so after a reboot without a clean
    close the head moves to the reservation and the seqs above the stored ones are declared lost."""
    path = tmp_path / "b.sqlite"
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0, sync="normal")
    q.open()
    chain = ChainMaker()
    for _ in range(5):
        q.append(chain.next())
    state = _pretend_reboot(path)  # and no close(): the stop was unclean
    _crash(q)

    r = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0, sync="normal")
    r.open()
    assert _accounting(r) == ([1, 2, 3, 4, 5], [(6, state.reserved, "lost")])


def test_sync_full_trusts_its_database_after_a_reboot(tmp_path: Path) -> None:
    """With sync=full every commit is durable: an unclean reboot with an intact database declares nothing."""
    path = tmp_path / "b.sqlite"
    q, batches = _write(path, n=5)
    _pretend_reboot(path)
    _crash(q)

    r = _open(path)
    assert _accounting(r) == ([1, 2, 3, 4, 5], [])
    assert r.chain_head() == (5, batches[-1].hash)


def test_the_reservation_is_always_ahead_of_the_head(tmp_path: Path) -> None:
    """Every appended seq is covered by the durable reservation, also across several reservations."""
    path = tmp_path / "b.sqlite"
    q = DiskQueue(path, max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0, sync="normal")
    q.open()
    chain = ChainMaker()
    seen = set()
    for _ in range(2 * RESERVE + 10):
        b = chain.next()
        q.append(b)
        state = read_head_file(path.with_name(path.name + ".head"))
        assert state is not None
        assert (state.seq, state.hash) == (b.seq, b.hash)
        assert state.reserved >= b.seq
        seen.add(state.reserved)

    assert len(seen) == 3


def test_clean_close_records_the_exact_head(tmp_path: Path) -> None:
    """close() writes the state file durably with reserved == seq, so a later reopen declares nothing."""
    path = tmp_path / "b.sqlite"
    q, _ = _write(path, n=3)
    q.close()
    state = read_head_file(path.with_name(path.name + ".head"))

    assert state is not None
    assert (state.seq, state.reserved, state.clean, state.low) == (3, 3, True, 1)


def test_a_second_process_cannot_open_a_buffer_in_use(tmp_path: Path) -> None:
    """Two agents on one state directory would fork the chain, so the second open is refused, clearly."""
    path = tmp_path / "b.sqlite"
    first = _open(path)

    with pytest.raises(BufferStoreError, match="in use by another process"):
        _open(path)
    first.close()
    _open(path).close()  # released by close()


def _damage_row(path: Path, seq: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE batches SET crc = crc + 1 WHERE seq = ?", (seq,))  # as if the frame had changed
    conn.commit()
    conn.close()


def test_after_a_crash_open_rechecks_recent_rows_before_serving(tmp_path: Path) -> None:
    """After an unclean stop the rows a crash may have torn are checked at open, before any peek."""
    path = tmp_path / "b.sqlite"
    q, _ = _write(path, n=5)
    _crash(q)
    _damage_row(path, 4)

    r = _open(path)
    assert r.stats().set_aside == 1
    assert [d.first_seq for d in r.pending_drops()] == [4]


def test_after_a_clean_close_open_skips_the_scan_and_peek_still_catches_damage(tmp_path: Path) -> None:
    """A clean close makes the open-time scan unnecessary; damage found later is still set aside by peek."""
    path = tmp_path / "b.sqlite"
    q, _ = _write(path, n=5)
    q.close()
    _damage_row(path, 4)

    r = _open(path)
    assert r.stats().set_aside == 0
    assert [b.seq for b in r.peek(10)] == [1, 2, 3, 5]
    assert r.stats().set_aside == 1
