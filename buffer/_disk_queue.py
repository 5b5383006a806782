"""DiskQueue: the SQLite implementation of the store-and-forward queue (spec in ``buffer/__init__.py``)."""

from __future__ import annotations

__all__ = ["ROW_OVERHEAD", "DiskQueue"]

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from agent.core.errors import BufferCorruption, BufferFull, BufferStoreError, WireFormatError
from buffer._head_file import RESERVE, HeadState, current_boot_id, read_head_file, write_head_file
from buffer._limits import WAL_RESERVE, fit_limits
from buffer._model import (
    EVICTION_ORDER,
    KINDS,
    NEVER_EVICTED,
    BufferStats,
    DropRecord,
    FrameTags,
    PreviousRun,
    QueuedBatch,
)

log = structlog.get_logger(__name__)

# Bytes charged per stored batch on top of its frame: the row's other columns, its b-tree cell and its entry
# in the (kind, seq) index. Measured with bench/buffer_sizing.py; charging it keeps ``max_bytes`` close to the
# file's real size for small frames.
ROW_OVERHEAD = 96
_SYNC = {"full": "FULL", "normal": "NORMAL"}
# Every commit goes to the WAL first; SQLite copies it into the database at a checkpoint and then reuses the
# WAL from its start. Checkpointing every 256 pages (1 MiB) and truncating the WAL back to 1 MiB bounds the
# WAL to about 1 MiB plus the largest transaction. The free-disk rule reserves WAL_RESERVE for it, because a
# WAL that cannot grow makes even deletes (acks, evictions) fail on a full disk.
_WAL_AUTOCHECKPOINT_PAGES = 256
_WAL_SIZE_LIMIT = 1 << 20
_EVICT_CHUNK = 32  # rows read per eviction step: bounds memory, since their frames are decoded for tag names
RECORD_TAGS = 4096  # tag names one drop record collects before the next evicted batch starts another record
# The chain head of a store that never held a batch: 32 zero bytes, the hash the first batch links to.
_NO_HASH = bytes(32)
_COUNTERS = ("appended", "acked", "dropped_batches", "dropped_records", "set_aside", "quarantined",
             "head_file_errors")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    seq        INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    t0_ms      INTEGER NOT NULL,
    t1_ms      INTEGER NOT NULL,
    records    INTEGER NOT NULL,
    hash       BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    crc        INTEGER NOT NULL,
    frame      BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_by_kind ON batches (kind, seq);
CREATE TABLE IF NOT EXISTS drops (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    batches   INTEGER NOT NULL,
    records   INTEGER NOT NULL,
    from_ms   INTEGER NOT NULL,
    to_ms     INTEGER NOT NULL,
    bytes     INTEGER NOT NULL,
    reason    TEXT    NOT NULL,
    tags      TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS set_aside (
    seq    INTEGER NOT NULL,
    kind   TEXT    NOT NULL,
    reason TEXT    NOT NULL,
    at_ms  INTEGER NOT NULL,
    frame  BLOB    NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
"""
_COLS = "seq, kind, created_ms, t0_ms, t1_ms, records, hash, size, crc, frame"


@dataclass(slots=True)
class _Row:
    seq: int
    kind: str
    created_ms: int
    t0_ms: int
    t1_ms: int
    records: int
    hash: bytes
    size: int
    crc: int
    frame: bytes
    tags: frozenset[str] = frozenset()  # filled in for evicted rows, whose frame is then released

    def queued(self) -> QueuedBatch:
        return QueuedBatch(self.seq, self.kind, self.created_ms, self.t0_ms, self.t1_ms, self.records,
                           self.hash, self.frame)


def _free_disk_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _disk_size_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_blocks * st.f_frsize


def _runs(rows: list[_Row]) -> list[tuple[list[_Row], set[str]]]:
    """Split rows sorted by seq into runs of consecutive sequence numbers, each with the union of its rows'
    tag names; a run is also cut before a row that would take that union beyond RECORD_TAGS (a single row
    may hold more: its frame bounds it)."""
    runs: list[tuple[list[_Row], set[str]]] = []
    for row in rows:
        if runs and runs[-1][0][-1].seq + 1 == row.seq and _within(runs[-1][1], row.tags):
            runs[-1][0].append(row)
            runs[-1][1].update(row.tags)
        else:
            runs.append(([row], set(row.tags)))
    return runs


def _within(tags: Collection[str], more: Collection[str]) -> bool:
    """``tags`` and ``more`` together name at most RECORD_TAGS tags."""
    return len(tags) + len(more) <= RECORD_TAGS or len(set(tags).union(more)) <= RECORD_TAGS


class DiskQueue:
    """The durable queue of signed frames. Synchronous; use it from one thread only (see AsyncDiskQueue)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        frame_tags: FrameTags,
        sync: str = "full",
        min_free_bytes: int = 64 << 20,
        free_disk: Callable[[Path], int] | None = None,
        disk_size: Callable[[Path], int] | None = None,
    ) -> None:
        if sync not in _SYNC:
            raise BufferStoreError(f"unknown sync policy {sync!r}", key="buffer.sync",
                              hint="use 'full' or 'normal'")
        if max_bytes <= 0 or min_free_bytes < 0:
            raise BufferStoreError(f"max_bytes must be > 0 and min_free_bytes >= 0, got {max_bytes} and "
                              f"{min_free_bytes}", key="buffer.max_bytes")
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.sync = sync
        self._free_disk = free_disk or _free_disk_bytes
        self._disk_size = disk_size or _disk_size_bytes
        self._configured = (max_bytes, min_free_bytes)  # as given; fitted to the file system at every open
        self._clamped: list[str] = []
        self._cap_from_disk = False  # max_bytes was clamped to what the file system holds
        self._condition: str | None = None
        self._refused = 0
        self._previous = PreviousRun(clean=True, last_t1_ms=None)
        self._frame_tags = frame_tags
        self._conn: sqlite3.Connection | None = None
        self._head: tuple[int, bytes] = (0, _NO_HASH)
        self._bytes_by_kind: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._count_by_kind: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._counters: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._drops_by_reason: dict[str, int] = {}
        self._reported_drops: set[int] = set()  # ids handed out by pending_drops(): never extended afterwards
        self._page_size = 4096
        self._reserved = 0  # durable upper bound of appended seqs in the state file (see _head_file)
        self._boot = current_boot_id()
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ open / close

    def open(self) -> None:
        """Create or recover the store (see "Recovery" in the spec). Never refuses to start on a bad file."""
        if self._conn is not None:
            raise BufferStoreError("the buffer is already open", path=str(self.path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BufferStoreError(f"cannot create the buffer's directory: {exc.strerror}",
                              path=str(self.path.parent), hint="check gateway.state_dir / buffer.path",
                              recoverable=True) from exc
        self._lock()
        try:
            self._open_locked()
        except BaseException:
            self._unlock()
            raise

    def _fit_limits(self) -> None:
        """Clamp limits the file system cannot honour (buffer/_limits.py says why clamp, not refuse)."""
        try:
            fs_bytes = self._disk_size(self.path.parent)
        except OSError as exc:
            log.warning("buffer_statvfs_failed", path=str(self.path), error=str(exc))
            return
        max_bytes, min_free_bytes = self._configured
        fit = fit_limits(fs_bytes, max_bytes=max_bytes, min_free_bytes=min_free_bytes)
        if fit.notes:
            log.warning("buffer_limits_clamped", path=str(self.path), fs_bytes=fs_bytes, max_bytes=fit.max_bytes,
                        min_free_bytes=fit.min_free_bytes, error="; ".join(fit.notes))
        self._cap_from_disk = fit.max_bytes < max_bytes
        self.max_bytes, self.min_free_bytes = fit.max_bytes, fit.min_free_bytes
        self._clamped = list(fit.notes)

    def _open_locked(self) -> None:
        self._fit_limits()
        file_head = read_head_file(self.head_path)
        bad: Path | None = None
        try:
            conn = self._connect_checked()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):  # locked, unreadable, no space: not the file's fault, do not move it
                raise BufferStoreError(f"cannot open the buffer: {exc}", path=str(self.path), recoverable=True,
                                  hint="check permissions and free space of the state directory") from exc
            bad = self._quarantine(exc)
        except BufferCorruption as exc:
            bad = self._quarantine(exc)
        if bad is not None:
            try:
                conn = self._connect_checked()
            except (sqlite3.Error, BufferCorruption) as exc2:
                raise BufferStoreError(f"cannot create a new buffer: {exc2}", path=str(self.path),
                                  hint="check that the state directory is writable and not full") from exc2
        self._conn = conn
        try:
            salvaged_head = None
            if bad is not None:
                salvaged_head = self._salvage(bad)
                self._bump_counter_now("quarantined", 1)
            self._load()
            db_head = self._head[0]
            self._reconcile_head(file_head, salvaged_head, quarantined=bad is not None)
            self._previous = PreviousRun(clean=file_head.clean if file_head is not None else db_head == 0,
                                         last_t1_ms=self._last_t1())
            self._verify_rows(self._verify_from(file_head, quarantined=bad is not None))
        except sqlite3.Error as exc:
            self._conn = None
            conn.close()
            raise BufferStoreError(f"cannot read the buffer: {exc}", path=str(self.path),
                              recoverable=True) from exc
        try:
            self._write_head_file(reserve=True)
        except OSError as exc:
            self._reserved = 0  # the next append retries the reservation
            log.warning("buffer_head_file_write_failed", path=str(self.head_path), seq=self._head[0],
                        error=str(exc))
        log.info("buffer_opened", path=str(self.path), seq=self._head[0],
                 batches=sum(self._count_by_kind.values()), bytes=sum(self._bytes_by_kind.values()))

    def _lock(self) -> None:
        """Hold ``<path>.lock`` exclusively while open: two agents appending to one chain would fork it."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise BufferStoreError(f"cannot create the lock file: {exc.strerror}", path=str(lock_path),
                              hint="check gateway.state_dir / buffer.path", recoverable=True) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise BufferStoreError("the buffer is in use by another process", path=str(self.path),
                              hint="another mine-agent runs with the same state_dir; stop it first") from exc
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            self._write_head_file(clean=True)
        except (OSError, sqlite3.Error) as exc:  # the next open then treats the stop as unclean: still safe
            log.warning("buffer_head_file_write_failed", path=str(self.head_path), seq=self._head[0],
                        error=str(exc))
        conn, self._conn = self._conn, None
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("buffer_checkpoint_failed", path=str(self.path), error=str(exc))
        conn.close()
        self._unlock()

    def _connect_checked(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0, check_same_thread=False)
        try:
            # auto_vacuum only takes effect before the first table exists; on an existing file it is a no-op.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute(f"PRAGMA synchronous={_SYNC[self.sync]}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            conn.execute(f"PRAGMA wal_autocheckpoint={_WAL_AUTOCHECKPOINT_PAGES}")
            self._require_healthy(mode, [r[0] for r in conn.execute("PRAGMA quick_check")])
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR IGNORE INTO meta (k, v) VALUES (?, ?)",
                             [("format", 1), ("head_seq", 0), ("head_hash", _NO_HASH),
                              *((f"n:{c}", 0) for c in _COUNTERS)])
            conn.execute("COMMIT")
            self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        return conn

    def _require_healthy(self, journal_mode: str, quick_check: list[str]) -> None:
        if journal_mode != "wal":
            raise BufferCorruption(f"cannot switch the store to WAL mode (got {journal_mode!r})",
                                   path=str(self.path))
        if quick_check != ["ok"]:
            raise BufferCorruption(f"integrity check failed: {'; '.join(map(str, quick_check[:5]))}",
                                   path=str(self.path))

    def _quarantine(self, exc: BaseException) -> Path:
        """Move an unusable store aside (never delete it: it may be forensically needed) and start afresh."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.bad-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.bad-{stamp}-{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            if src.exists():
                os.replace(src, target.with_name(target.name + suffix))
        log.error("buffer_quarantined", path=str(self.path), moved_to=str(target), error=str(exc))
        return target

    def _salvage(self, bad: Path) -> tuple[int, bytes] | None:
        """Copy every row of the quarantined store that still reads back with a good CRC, and its pending
        drop records, into the new store; rows listed but unreadable are counted as set aside (they stay in
        the quarantined file). Returns the bad store's chain head if its meta table was readable."""
        conn = self._db()
        try:
            src = sqlite3.connect(f"file:{bad}?mode=ro", uri=True)
        except sqlite3.Error:
            return None
        head: tuple[int, bytes] | None = None
        seqs: list[int] = []
        copied = 0
        try:
            with contextlib.suppress(sqlite3.Error, TypeError, ValueError):
                meta = dict(src.execute("SELECT k, v FROM meta WHERE k IN ('head_seq', 'head_hash')"))
                head = (int(meta["head_seq"]), bytes(meta["head_hash"]))
            with contextlib.suppress(sqlite3.Error):
                for (seq,) in src.execute("SELECT seq FROM batches ORDER BY seq"):
                    seqs.append(int(seq))
            conn.execute("BEGIN IMMEDIATE")
            for seq in seqs:
                try:
                    r = src.execute(f"SELECT {_COLS} FROM batches WHERE seq = ?", (seq,)).fetchone()  # noqa: S608
                except sqlite3.Error:
                    continue
                if r is None or zlib.crc32(r[9]) != r[8]:
                    continue
                conn.execute(f"INSERT OR IGNORE INTO batches ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                             r)
                copied += 1
            with contextlib.suppress(sqlite3.Error):
                cols = "first_seq, last_seq, batches, records, from_ms, to_ms, bytes, reason, tags"
                conn.executemany(f"INSERT INTO drops ({cols}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                                 src.execute(f"SELECT {cols} FROM drops ORDER BY id").fetchall())  # noqa: S608
            self._bump_meta(conn, {"n:set_aside": len(seqs) - copied})
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        finally:
            src.close()
        self._counters["set_aside"] += len(seqs) - copied
        log.warning("buffer_salvaged", path=str(self.path), batches=copied, unreadable=len(seqs) - copied)
        return head

    def _load(self) -> None:
        conn = self._db()
        meta = dict(conn.execute("SELECT k, v FROM meta"))
        self._head = (int(meta["head_seq"]), bytes(meta["head_hash"]))
        self._counters = {c: int(meta.get(f"n:{c}", 0)) for c in _COUNTERS}
        self._drops_by_reason = {k[5:]: int(v) for k, v in meta.items() if k.startswith("drop:")}
        self._count_by_kind = dict.fromkeys(KINDS, 0)
        self._bytes_by_kind = dict.fromkeys(KINDS, 0)
        for kind, count, size in conn.execute("SELECT kind, count(*), sum(size) FROM batches GROUP BY kind"):
            self._count_by_kind[kind] = count
            self._bytes_by_kind[kind] = size

    def _last_t1(self) -> int | None:
        """The largest t1 of every data, alarm and gap batch ever appended (stores older than this meta key:
        of those still stored)."""
        conn = self._db()
        row = conn.execute("SELECT v FROM meta WHERE k = 'last_t1_ms'").fetchone()
        if row is not None:
            return int(row[0])
        row = conn.execute("SELECT max(t1_ms) FROM batches WHERE kind != 'catalog'").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def previous_run(self) -> PreviousRun:
        """How the previous run on this store ended (clean close or not) and the last t1 it committed."""
        self._db()
        return self._previous

    @property
    def condition(self) -> str | None:
        """What the last append found: None (stored, nothing evicted) or one of ``buffer.CONDITIONS``."""
        return self._condition

    def _reconcile_head(self, file_head: HeadState | None, salvaged_head: tuple[int, bytes] | None, *,
                        quarantined: bool) -> None:
        """Take the highest of (db meta, stored rows, state file, quarantined store's meta) as the head, and
        declare every seq it proves committed that is neither stored nor already in a pending drop."""
        conn = self._db()
        candidates = [self._head]
        row = conn.execute("SELECT seq, hash FROM batches ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            candidates.append((int(row[0]), bytes(row[1])))
        if salvaged_head is not None:
            candidates.append(salvaged_head)
        db_head = max(candidates, key=lambda c: c[0])
        db_known = db_head[0]
        top = self._trusted_file_head(file_head, db_known, quarantined=quarantined)
        # Above the best-known batch (db or file) the hash is unknown; the next batch links to the best-known
        # one across the declared gap.
        if file_head is not None and file_head.seq > db_known:
            head = (max(top, file_head.seq), file_head.hash)
        else:
            head = (max(top, db_known), db_head[1])
        if quarantined:
            # Which batches were still unacked is only known from the state file's ``low``.
            if file_head is not None:
                lost_from = max(1, file_head.low)
            else:
                lowest = conn.execute("SELECT min(seq) FROM batches").fetchone()[0]
                lost_from = head[0] + 1 if lowest is None else int(lowest)
                log.error("buffer_loss_unknown", path=str(self.path), seq=head[0],
                          error="quarantined, no state file: losses before the salvaged rows are unknown")
        else:
            lost_from = db_known + 1
        runs = self._unaccounted(lost_from, head[0])
        reason = "quarantine" if quarantined else "lost"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE meta SET v = ? WHERE k = 'head_seq'", (head[0],))
            conn.execute("UPDATE meta SET v = ? WHERE k = 'head_hash'", (head[1],))
            for first, last in runs:
                conn.execute(
                    "INSERT INTO drops (first_seq, last_seq, batches, records, from_ms, to_ms, bytes, reason,"
                    " tags) VALUES (?, ?, ?, 0, 0, 0, 0, ?, '[]')", (first, last, last - first + 1, reason))
            lost = sum(last - first + 1 for first, last in runs)
            if lost:
                self._bump_meta(conn, {"n:dropped_batches": lost, f"drop:{reason}": lost})
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        if lost:
            self._counters["dropped_batches"] += lost
            self._drops_by_reason[reason] = self._drops_by_reason.get(reason, 0) + lost
            log.error("buffer_batches_lost", path=str(self.path), first_seq=runs[0][0], seq=runs[-1][1],
                      batches=lost, reason=reason)
        self._head = head

    def _trusted_file_head(self, f: HeadState | None, db_known: int, *, quarantined: bool) -> int:
        """The highest seq the state file proves may have been appended (0 without a file).

        ``f.seq`` is exact after a clean close or within the same boot (a process crash keeps the page cache);
        after a reboot only the durable ``f.reserved`` bound is certain. It is used when the database is
        known to be incomplete: quarantined, behind the file, or (with sync=normal) possibly rolled back.
        """
        if f is None:
            return 0
        exact = f.clean or (f.boot != "" and f.boot == self._boot)
        if exact:
            return f.seq
        if quarantined or f.seq > db_known or self.sync == "normal":
            log.warning("buffer_head_from_reservation", path=str(self.path), seq=f.seq, reserved=f.reserved)
            return f.reserved
        return f.seq

    def _unaccounted(self, first: int, last: int) -> list[tuple[int, int]]:
        """Runs of seqs in [first, last] that are neither stored nor covered by a pending drop record."""
        if first > last:
            return []
        conn = self._db()
        covered = [(int(a), int(b)) for a, b in conn.execute(
            "SELECT seq, seq FROM batches WHERE seq BETWEEN ? AND ? UNION ALL"
            " SELECT first_seq, last_seq FROM drops WHERE last_seq >= ? AND first_seq <= ? ORDER BY 1",
            (first, last, first, last))]
        runs: list[tuple[int, int]] = []
        nxt = first
        for a, b in covered:
            if a > nxt:
                runs.append((nxt, min(a - 1, last)))
            nxt = max(nxt, b + 1)
        if nxt <= last:
            runs.append((nxt, last))
        return runs

    def _verify_from(self, f: HeadState | None, *, quarantined: bool) -> int | None:
        """The lowest seq whose CRC open() rechecks, or None for none.

        Reading a whole backlog at every start would cost tens of seconds per GiB on SD cards, and peek()
        rechecks every row before serving it anyway. So open() checks only what a crash can have torn: the
        rows appended since the state file was last exact (all rows if that is unknown), none after a clean
        close. Damage elsewhere (flash decay) is found by peek() and handled the same way.
        """
        if f is None or quarantined:
            return 0
        if f.clean:
            return None
        return max(0, min(f.seq, self._head[0]) - RESERVE)

    def _verify_rows(self, from_seq: int | None) -> None:
        """Recheck the CRC of rows from ``from_seq`` on (one row in memory at a time); set aside failures."""
        if from_seq is None:
            return
        conn = self._db()
        bad: list[_Row] = []
        for r in conn.execute(f"SELECT {_COLS} FROM batches WHERE seq >= ? ORDER BY seq",  # noqa: S608
                              (from_seq,)):
            row = _Row(*r)
            if zlib.crc32(row.frame) != row.crc:
                bad.append(row)
        if bad:
            self._set_aside(bad, "corrupt")

    # ------------------------------------------------------------------ chain head

    def chain_head(self) -> tuple[int, bytes]:
        """The last sequence number and batch hash ever appended; ``(0, 32 zero bytes)`` for a new store."""
        self._db()
        return self._head

    # ------------------------------------------------------------------ write

    def append(self, batch: QueuedBatch, *, declares: Sequence[int] = ()) -> None:
        """Store ``batch`` durably (per ``sync``) and advance the chain head, in one transaction.

        ``declares`` lists DropRecord ids this (gap) batch declares; they are deleted in the same transaction.
        Then the limits are enforced by evicting the oldest data, then alarm, batches, recorded as drops; gap
        and catalog batches are never evicted. Raises BufferStoreError: not recoverable for a wrong
        seq/kind/size (a caller bug), recoverable for I/O failures such as a full disk, and :class:`BufferFull`
        (recoverable) when the batches never evicted leave no room for this one. Whatever is raised, nothing
        of the append is stored and the declared records stay pending (and may grow again).
        """
        conn = self._db()
        head_seq, _ = self._head
        if batch.seq != head_seq + 1:
            raise BufferStoreError(f"batch seq {batch.seq} does not follow the chain head {head_seq}",
                              hint="take chain_head() again: a batch was appended or the store recovered")
        if batch.kind not in KINDS:
            raise BufferStoreError(f"unknown batch kind {batch.kind!r}; expected one of {', '.join(KINDS)}")
        if len(batch.hash) != 32:
            raise BufferStoreError(f"batch hash must have 32 bytes, got {len(batch.hash)}")
        size = len(batch.frame) + ROW_OVERHEAD
        try:
            if size > self.max_bytes:
                raise BufferStoreError(f"batch seq {batch.seq} ({size} bytes) is larger than buffer.max_bytes "
                                       f"({self.max_bytes})", key="buffer.max_bytes", hint="raise buffer.max_bytes")
            evicted, reason = self._append_now(conn, batch, size, declares)
        except BufferStoreError as exc:
            # The records this batch would have declared are pending again and may be extended: a refused
            # declaration must not leave them frozen, or every later eviction would start a record of its own.
            self._reported_drops.difference_update(declares)
            if isinstance(exc, BufferFull):
                self._refused += 1
                self._set_condition(exc.condition, seq=batch.seq)
            elif exc.recoverable:
                self._set_condition(_failure_condition(exc), seq=batch.seq)
            raise
        # Committed: now the in-memory mirror may change.
        self._head = (batch.seq, batch.hash)
        self._counters["appended"] += 1
        self._count_by_kind[batch.kind] += 1
        self._bytes_by_kind[batch.kind] += size
        self._reported_drops.difference_update(declares)
        for row in evicted:
            self._count_by_kind[row.kind] -= 1
            self._bytes_by_kind[row.kind] -= row.size
        if evicted:
            self._counters["dropped_batches"] += len(evicted)
            self._counters["dropped_records"] += sum(r.records for r in evicted)
            self._drops_by_reason[reason] = self._drops_by_reason.get(reason, 0) + len(evicted)
            log.warning("buffer_evicted", path=str(self.path), reason=reason, first_seq=evicted[0].seq,
                        seq=evicted[-1].seq, batches=len(evicted))
        self._set_condition("dropping" if evicted else None, seq=batch.seq)
        self._write_head_file()

    def _append_now(self, conn: sqlite3.Connection, batch: QueuedBatch, size: int,
                    declares: Sequence[int]) -> tuple[list[_Row], str]:
        """The append's transaction; returns the rows it evicted and why. Raises BufferStoreError (rolled back)."""
        try:
            cap, reason = self._effective_cap()
            if batch.seq > self._reserved:
                try:
                    self._write_head_file(reserve=True, seq_floor=batch.seq)
                except OSError as exc:
                    raise BufferStoreError(f"cannot reserve seq {batch.seq} in the state file: {exc.strerror}",
                                      path=str(self.head_path), recoverable=True,
                                      hint="free disk space in the state directory") from exc
            kept = sum(self._bytes_by_kind[k] for k in NEVER_EVICTED) + size
            if kept > cap:
                # Evicting every data and alarm batch would not make room: refuse this one instead of evicting
                # a declaration or the catalogue. Checked before the transaction: nothing to roll back.
                full = "disk_full" if reason == "disk_low" else "buffer_full"
                raise BufferFull(f"no room for batch seq {batch.seq}: the gap and catalog batches, which are "
                                 f"never evicted, and this one need {kept} bytes; the limit is {cap} ({reason})",
                                 condition=full, path=str(self.path),
                                 hint="free disk space in the state directory" if full == "disk_full"
                                 else "let the uplink deliver the queued gap batches, or raise buffer.max_bytes")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(f"INSERT INTO batches ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                             (batch.seq, batch.kind, batch.created_ms, batch.t0_ms, batch.t1_ms,
                              batch.records, batch.hash, size, zlib.crc32(batch.frame), batch.frame))
                conn.execute("UPDATE meta SET v = ? WHERE k = 'head_seq'", (batch.seq,))
                conn.execute("UPDATE meta SET v = ? WHERE k = 'head_hash'", (batch.hash,))
                if batch.kind != "catalog":
                    conn.execute("INSERT INTO meta (k, v) VALUES ('last_t1_ms', ?) ON CONFLICT (k) DO UPDATE"
                                 " SET v = max(v, excluded.v)", (batch.t1_ms,))
                self._bump_meta(conn, {"n:appended": 1})
                if declares:
                    self._delete_declared(conn, declares)
                live = sum(self._bytes_by_kind.values()) + size
                evicted = self._evict(conn, live - cap, reason) if live > cap else []
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        except sqlite3.Error as exc:
            log.warning("buffer_append_failed", path=str(self.path), seq=batch.seq, error=str(exc))
            raise BufferStoreError(f"cannot store batch seq {batch.seq}: {exc}", path=str(self.path),
                              hint="free disk space in the state directory" if _is_full(exc) else None,
                              recoverable=True) from exc
        return evicted, reason

    def _set_condition(self, condition: str | None, *, seq: int) -> None:
        """Remember what the last append found; log changes only (an append per second must not log each)."""
        if condition == self._condition:
            return
        previous, self._condition = self._condition, condition
        if condition is None:
            log.info("buffer_condition_changed", path=str(self.path), seq=seq, condition=None, previous=previous)
        else:
            log.warning("buffer_condition_changed", path=str(self.path), seq=seq, condition=condition,
                        previous=previous)

    def _effective_cap(self) -> tuple[int, str]:
        """The bytes the queue may hold now, and which limit binds: ``max_bytes`` or the free-disk watermark.

        Free pages inside the file are reused before the file grows, so they count as available; the part of
        WAL_RESERVE the WAL file does not occupy yet does not.
        """
        try:
            free = self._free_disk(self.path.parent)
            wal = self._wal_path().stat().st_size if self._wal_path().exists() else 0
        except OSError as exc:
            log.warning("buffer_statvfs_failed", path=str(self.path), error=str(exc))
            return self.max_bytes, self._cap_reason()
        freelist = self._db().execute("PRAGMA freelist_count").fetchone()[0] * self._page_size
        headroom = free - self.min_free_bytes - max(0, WAL_RESERVE - wal)
        disk_cap = sum(self._bytes_by_kind.values()) + freelist + headroom
        if disk_cap < self.max_bytes:
            return max(0, disk_cap), "disk_low"
        return self.max_bytes, self._cap_reason()

    def _cap_reason(self) -> str:
        """``max_bytes`` binds: "cap", or "disk_low" when it was clamped at open because the disk is small."""
        return "disk_low" if self._cap_from_disk else "cap"

    def _delete_declared(self, conn: sqlite3.Connection, declares: Sequence[int]) -> None:
        ids = list(dict.fromkeys(declares))
        found = conn.execute("SELECT count(*) FROM drops WHERE id IN (SELECT value FROM json_each(?))",
                             (json.dumps(ids),)).fetchone()[0]
        if found != len(ids):
            raise BufferStoreError(f"the gap batch declares drop ids {ids} but only {found} of them are pending",
                              hint="declare exactly the ids returned by pending_drops()")
        conn.execute("DELETE FROM drops WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(ids),))

    def _evict(self, conn: sqlite3.Connection, need: int, reason: str) -> list[_Row]:
        """Delete the oldest rows of the lowest priority until ``need`` bytes are freed; record the drops."""
        evicted: list[_Row] = []
        for kind in EVICTION_ORDER:
            after = 0
            while need > 0:
                rows = [_Row(*r) for r in conn.execute(
                    f"SELECT {_COLS} FROM batches WHERE kind = ? AND seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
                    (kind, after, _EVICT_CHUNK))]
                if not rows:
                    break
                taken = []
                for row in rows:
                    if need <= 0:
                        break
                    taken.append(row)
                    need -= row.size
                conn.executemany("DELETE FROM batches WHERE seq = ?", [(r.seq,) for r in taken])
                # Keep only the metadata; decode tags now so frames do not pile up in memory.
                for row in taken:
                    row.tags = self._tags_of(row.frame)
                    row.frame = b""
                evicted.extend(taken)
                after = rows[-1].seq
        evicted.sort(key=lambda r: r.seq)
        self._record_drops(conn, evicted, reason)
        return evicted

    def _tags_of(self, frame: bytes) -> frozenset[str]:
        """The tag names of an evicted frame; none for a frame that does not decode (its loss is still counted)."""
        try:
            return frozenset(self._frame_tags(frame))
        except WireFormatError:
            return frozenset()

    def _record_drops(self, conn: sqlite3.Connection, rows: list[_Row], reason: str) -> None:
        """Turn removed rows into drop records, one per run of consecutive seqs.

        A run that continues the newest pending record of the same reason extends it, unless that record was
        already handed to the batcher (it may be declaring it right now) or the two together would name more
        than RECORD_TAGS tags: a record stays bounded however long the outage and however often the tags
        change.
        """
        if not rows:
            return
        for run, tags in _runs(rows):
            first, last = run[0].seq, run[-1].seq
            records = sum(r.records for r in run)
            size = sum(r.size for r in run)
            t0 = min(r.t0_ms for r in run)
            t1 = max(r.t1_ms for r in run)
            prev = conn.execute("SELECT id, last_seq, from_ms, to_ms, tags FROM drops WHERE reason = ?"
                                " ORDER BY id DESC LIMIT 1", (reason,)).fetchone()
            extend = prev is not None and prev[1] + 1 == first and prev[0] not in self._reported_drops
            prev_tags = json.loads(prev[4]) if extend else []
            if extend and _within(prev_tags, tags):
                tags.update(prev_tags)
                conn.execute("UPDATE drops SET last_seq = ?, batches = batches + ?, records = records + ?,"
                             " from_ms = ?, to_ms = ?, bytes = bytes + ?, tags = ? WHERE id = ?",
                             (last, len(run), records, min(prev[2], t0), max(prev[3], t1), size,
                              json.dumps(sorted(tags)), prev[0]))
            else:
                conn.execute("INSERT INTO drops (first_seq, last_seq, batches, records, from_ms, to_ms,"
                             " bytes, reason, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (first, last, len(run), records, t0, t1, size, reason, json.dumps(sorted(tags))))
        records = sum(r.records for r in rows)
        self._bump_meta(conn, {"n:dropped_batches": len(rows), "n:dropped_records": records,
                               f"drop:{reason}": len(rows)})

    # ------------------------------------------------------------------ read

    def peek(self, limit: int, *, kinds: Collection[str] | None = None, newest_first: bool = False,
             exclude: Collection[int] = ()) -> list[QueuedBatch]:
        """Up to ``limit`` stored batches, oldest first (or newest first), optionally of some kinds only and
        skipping the seqs in ``exclude`` (those in flight). Nothing is removed: only :meth:`ack` removes."""
        conn = self._db()
        if limit <= 0:
            return []
        where: list[str] = []
        params: list[object] = []
        if kinds is not None:
            kinds = list(kinds)
            if not kinds:
                return []
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        if exclude:
            where.append("seq NOT IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(list(exclude)))
        sql = f"SELECT {_COLS} FROM batches"  # noqa: S608 - only constant fragments are formatted in
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        params.append(limit)
        try:
            rows = [_Row(*r) for r in conn.execute(sql, params)]
        except sqlite3.Error as exc:
            raise BufferStoreError(f"cannot read the buffer: {exc}", path=str(self.path),
                              recoverable=True) from exc
        bad = [r for r in rows if zlib.crc32(r.frame) != r.crc]
        if bad:
            self._set_aside(bad, "corrupt")
            return self.peek(limit, kinds=kinds, newest_first=newest_first, exclude=exclude)
        return [r.queued() for r in rows]

    # ------------------------------------------------------------------ ack / delete

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged batches; returns how many were present (acking twice is harmless).

        Seqs are deleted as runs of consecutive numbers, one statement per run, so acking
        ``range(first, last + 1)`` (an end-to-end ack range) costs one statement, whatever its size.
        """
        conn = self._db()
        if isinstance(seqs, range) and seqs.step == 1:
            runs = [(seqs.start, seqs.stop - 1)] if len(seqs) else []
        else:
            runs = []
            for s in sorted(set(seqs)):
                if runs and runs[-1][1] + 1 == s:
                    runs[-1] = (runs[-1][0], s)
                else:
                    runs.append((s, s))
        if not runs:
            return 0
        gone: list[tuple[str, int]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for first, last in runs:
                    gone.extend(conn.execute(
                        "DELETE FROM batches WHERE seq BETWEEN ? AND ? RETURNING kind, size", (first, last)))
                if gone:
                    self._bump_meta(conn, {"n:acked": len(gone)})
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise
        except sqlite3.Error as exc:
            raise BufferStoreError(f"cannot delete acknowledged batches: {exc}", path=str(self.path),
                              recoverable=True) from exc
        for kind, size in gone:
            self._count_by_kind[kind] -= 1
            self._bytes_by_kind[kind] -= size
        self._counters["acked"] += len(gone)
        return len(gone)

    def pending_drops(self) -> list[DropRecord]:
        """Losses not yet declared in a signed gap batch, oldest first.

        Records returned here are frozen: later evictions start new records instead of extending them, so a
        gap batch built from this list declares exactly what it says. An append that declares them and fails
        (refused or rolled back) thaws them again.
        """
        conn = self._db()
        out = [DropRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], json.loads(r[9])) for r in conn.execute(
            "SELECT id, first_seq, last_seq, batches, records, from_ms, to_ms, bytes, reason, tags"
            " FROM drops ORDER BY id")]
        self._reported_drops.update(d.id for d in out)
        return out

    # ------------------------------------------------------------------ corruption

    def _set_aside(self, rows: list[_Row], reason: str) -> None:
        """Move rows that failed their CRC out of the queue (kept for forensics); record them as dropped."""
        conn = self._db()
        now = int(time.time() * 1000)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT INTO set_aside (seq, kind, reason, at_ms, frame) VALUES (?, ?, ?, ?, ?)",
                             [(r.seq, r.kind, reason, now, r.frame) for r in rows])
            conn.executemany("DELETE FROM batches WHERE seq = ?", [(r.seq,) for r in rows])
            self._bump_meta(conn, {"n:set_aside": len(rows)})
            # The frames cannot be trusted, so neither can their tag lists: the loss is recorded without tags.
            self._record_drops(conn, rows, "corrupt")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        for r in rows:
            self._count_by_kind[r.kind] -= 1
            self._bytes_by_kind[r.kind] -= r.size
        self._counters["set_aside"] += len(rows)
        self._counters["dropped_batches"] += len(rows)
        self._counters["dropped_records"] += sum(r.records for r in rows)
        self._drops_by_reason["corrupt"] = self._drops_by_reason.get("corrupt", 0) + len(rows)
        log.error("buffer_rows_set_aside", path=str(self.path), seqs=[r.seq for r in rows], reason=reason)

    # ------------------------------------------------------------------ maintenance

    def compact(self, max_pages: int = 256) -> int:
        """Give up to ``max_pages`` free pages back to the file system and truncate the WAL when possible.

        Bounded so that it can run between other work when the queue is idle; returns the pages released.
        """
        conn = self._db()
        try:
            before = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if before:
                # execute() steps this pragma once (one page freed); executescript runs it to the end.
                conn.executescript(f"PRAGMA incremental_vacuum({int(max_pages)});")
            after = conn.execute("PRAGMA freelist_count").fetchone()[0]
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            raise BufferStoreError(f"cannot compact the buffer: {exc}", path=str(self.path),
                              recoverable=True) from exc
        return int(before - after)

    def stats(self) -> BufferStats:
        conn = self._db()
        oldest_row = conn.execute("SELECT created_ms FROM batches ORDER BY seq LIMIT 1").fetchone()
        oldest = None if oldest_row is None else int(oldest_row[0])  # seq order is creation order
        pending, pending_batches = conn.execute("SELECT count(*), coalesce(sum(batches), 0) FROM drops").fetchone()
        file_bytes = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                file_bytes += os.stat(self.path.with_name(self.path.name + suffix)).st_size
        c = self._counters
        return BufferStats(
            batches=sum(self._count_by_kind.values()), bytes=sum(self._bytes_by_kind.values()),
            oldest_created_ms=oldest, by_kind=dict(self._count_by_kind),
            bytes_by_kind=dict(self._bytes_by_kind),
            appended=c["appended"], acked=c["acked"], dropped_batches=c["dropped_batches"],
            dropped_records=c["dropped_records"], drops_by_reason=dict(self._drops_by_reason),
            pending_drops=pending, set_aside=c["set_aside"], quarantined=c["quarantined"],
            head_seq=self._head[0], file_bytes=file_bytes, head_file_errors=c["head_file_errors"],
            pending_drop_batches=int(pending_batches), refused=self._refused, condition=self._condition,
            max_bytes=self.max_bytes, min_free_bytes=self.min_free_bytes, clamped=list(self._clamped))

    # ------------------------------------------------------------------ helpers

    def _wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BufferStoreError("the buffer is not open", path=str(self.path), hint="call open() first")
        return self._conn

    @staticmethod
    def _bump_meta(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
        for key, delta in deltas.items():
            conn.execute("INSERT INTO meta (k, v) VALUES (?, ?)"
                         " ON CONFLICT (k) DO UPDATE SET v = v + excluded.v", (key, delta))

    def _bump_counter_now(self, name: str, delta: int) -> None:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        self._bump_meta(conn, {f"n:{name}": delta})
        conn.execute("COMMIT")
        self._counters[name] += delta

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the connection is unusable; the next open() recovers from disk
            log.error("buffer_rollback_failed", path=str(self.path), error=str(exc))

    def _write_head_file(self, *, reserve: bool = False, clean: bool = False, seq_floor: int = 0) -> None:
        """Rewrite ``<path>.head``.

        ``reserve``: durably move the reservation RESERVE past max(head, seq_floor); ``clean``: durably record
        the exact head at close (both raise OSError); otherwise a cheap non-durable update of ``seq`` after an
        append, whose failure is only counted."""
        conn = self._db()
        seq, hash_ = self._head
        lows = [v for (v,) in conn.execute(
            "SELECT min(seq) FROM batches UNION ALL SELECT min(first_seq) FROM drops") if v is not None]
        low = min(lows) if lows else seq + 1
        if clean:
            reserved = seq
        elif reserve:
            reserved = max(seq, seq_floor) + RESERVE
        else:
            reserved = max(self._reserved, seq)
        state = HeadState(seq, hash_, int(low), reserved, self._boot, clean)
        if clean or reserve:
            write_head_file(self.head_path, state, durable=True)
            self._reserved = reserved
            return
        try:
            write_head_file(self.head_path, state, durable=False)
        except OSError as exc:
            # The database already has the head; the file is the second copy. Count, warn, carry on.
            self._counters["head_file_errors"] += 1
            log.warning("buffer_head_file_write_failed", path=str(self.head_path), seq=seq, error=str(exc))


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "not a database" in str(exc) or "malformed" in str(exc)
    return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _failure_condition(exc: BufferStoreError) -> str:
    """Why a recoverable append failure happened: the disk is full, or some other I/O error."""
    cause = exc.__cause__
    if isinstance(cause, sqlite3.Error) and _is_full(cause):
        return "disk_full"
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        return "disk_full"
    return "store_error"


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)
