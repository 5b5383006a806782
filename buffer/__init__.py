"""The durable store-and-forward queue of signed batches. This docstring is its specification.

Data flows drivers -> pipeline -> batcher -> **buffer** -> uplink. The batcher appends each signed frame
here *before* anything is published; the uplink peeks, publishes, and acks; only an ack deletes.

Invariants
----------
I1. A batch whose ``append`` returned is committed: with ``sync="full"`` it survives kill -9 and a power cut
    (on storage that honours flushes); with ``sync="normal"`` it survives kill -9, and a power cut may roll
    back the last commits, which the next open declares as lost (see R2).
I2. A batch leaves the queue only by (a) ``ack`` of its seq, after the broker's PUBACK or the backend's
    end-to-end ack, or (b) an eviction or set-aside that is recorded as a DropRecord in the same transaction.
    Nothing disappears uncounted. Only ``data`` and ``alarm`` batches are ever evicted: a ``gap`` batch (a
    declaration of loss) and a ``catalog`` batch (the tag catalogue later batches refer to) leave only by ack
    (or, if their stored bytes rot, by set-aside, R3).
I3. The chain head (last seq, last hash) advances in the same transaction as the append, by exactly one
    (``batch.seq == head + 1``, else BufferStoreError), and never goes backwards: not after acks, not after a
    crash, not after the store is quarantined or its WAL is lost (R1, R2).
I4. The queue holds at most ``max_bytes`` (frames plus ROW_OVERHEAD each) and does not push the free space of
    its file system below ``min_free_bytes``; when either limit binds, the oldest batches of the lowest
    priority are evicted: ``data`` first, then ``alarm``; never ``gap`` or ``catalog``. When those alone and
    the new batch exceed the limit, the append is refused (``BufferFull``, recoverable, counted in
    ``refused``): nothing is stored or evicted, the head does not move, and the caller keeps the batch's rows
    and retries. Both limits are fitted to the file system at open (Limits, below). The file itself stays within about
    1.03 x max_bytes (b-tree packing of ~38 KB frames, bench/buffer_sizing.py) + the WAL (<= 1 MiB + one
    transaction) + free pages not yet returned by ``compact``.
I5. A DropRecord stays pending until a gap batch that declares it is appended (``append(gap,
    declares=[ids])``): that append deletes the records in its own transaction, so a loss is declared exactly
    once, and a crash cannot leave it both declared and pending or neither. The gap batch is then never
    evicted (I2), so a declaration, once made, is delivered or still queued. If the gap batch is refused
    (I4) its records stay pending and may be extended again (coalescing, below): pending records are as durable
    as the gap batch would have been, and the next declaration covers them all.
I6. Open never refuses to start: an unreadable store is quarantined (renamed, never deleted) and a new one is
    created; corrupted rows are set aside; every loss becomes a DropRecord; limits the file system cannot
    honour are clamped, not refused.
I7. Open tells how the previous run ended (``previous_run()``): ``clean`` is False when the state file was
    not written by ``close()`` (kill -9, power cut, crash), and ``last_t1_ms`` is the largest ``t1`` of every
    data, alarm and gap batch ever appended (meta ``last_t1_ms``, advanced in the append's transaction). The
    caller declares the collection gap (protocol §8, ``outage``); the store only knows where it stopped.

The frame-tags function
-----------------------
The store does not know the wire format: a frame is opaque bytes plus the header fields the caller copied
into ``QueuedBatch``. The one thing it needs from inside a frame is the tag names of a batch it evicts, so a
DropRecord (and the gap batch that declares it) can say whose readings were lost. Whoever opens the queue
passes ``frame_tags: Callable[[bytes], Iterable[str]]`` (``FrameTags``) to ``DiskQueue`` /
``AsyncDiskQueue``; the agent passes ``agent.protocol.wire.frame_tags``. Its contract:

* it is called with a frame exactly as appended, in the queue's thread, inside the eviction's transaction;
* it is pure: no I/O, no state, the same names for the same bytes, and it keeps nothing of the frame;
* it returns the full tag names the frame's rows carry (in any order, duplicates allowed);
* for a frame it cannot decode it raises ``agent.core.errors.WireFormatError``; the buffer then records the
  eviction without tag names (the batch, its records and its bytes are still counted). Any other exception
  is a bug: the append that was evicting is rolled back (nothing of it is stored, the head does not move)
  and the exception propagates unchanged.

Why: the store's job is to keep bytes durably and account for every loss, not to read them; with the body
format outside it, the format can change without touching the store, and the store holds any frames its
caller can describe (a lint-imports contract keeps ``buffer`` from importing ``agent.protocol``). Rejected:
importing the protocol's decoder here: the store would depend on the protocol package and change whenever
the body format does.

On disk
-------
Files next to each other (``<path>`` defaults to ``<state_dir>/buffer.sqlite``)::

    <path>              SQLite, journal_mode=WAL, auto_vacuum=INCREMENTAL (set before the first table),
                        synchronous=FULL|NORMAL from ``buffer.sync``, wal_autocheckpoint 256 pages,
                        journal_size_limit 1 MiB
    <path>-wal, -shm    SQLite's write-ahead log and its index
    <path>.head         chain-head state file, replaced by rename (buffer/_head_file.py explains why):
                        {"head": {"seq":      int,   head when written (after every commit, no fsync)
                                  "hash":     hex,   hash of batch seq
                                  "low":      int,   lowest seq stored or pending as a drop (head+1 if none)
                                  "reserved": int,   durable bound: no seq above it was ever appended
                                  "boot":     str,   kernel boot id at the write
                                  "clean":    bool}, written by close(): seq exact, reserved == seq
                         "crc": crc32(canonical head json)}
    <path>.bad-<UTC>    a quarantined store (and its -wal/-shm), kept for forensics

    table batches                      the queue
        seq        INTEGER PRIMARY KEY the frame's sequence number (1, 2, 3, ... per gateway)
        kind       TEXT                "data" | "alarm" | "gap" | "catalog"    index batches_by_kind (kind, seq)
        created_ms, t0_ms, t1_ms       INTEGER Unix ms, copied from the frame header
        records    INTEGER             rows in the body (for loss accounting without decoding)
        hash       BLOB(32)            SHA-256 of the frame's signed part (the chain link)
        size       INTEGER             len(frame) + ROW_OVERHEAD: what the cap counts
        crc        INTEGER             CRC32 of frame, rechecked at open and on every peek
        frame      BLOB                the signed frame, byte for byte as published (last column, so the
                                       fixed columns stay in the row's first page)
    table drops                        pending DropRecords
        id INTEGER PRIMARY KEY AUTOINCREMENT (never reused: gap batches name them), first_seq, last_seq,
        batches, records, from_ms, to_ms, bytes, reason TEXT, tags TEXT (JSON list of full tag names)
    table set_aside                    rows that failed their CRC: seq, kind, reason, at_ms, frame
    table meta (k TEXT PRIMARY KEY, v) format=1, head_seq, head_hash, last_t1_ms, and persistent counters
        n:appended, n:acked, n:dropped_batches, n:dropped_records, n:set_aside, n:quarantined,
        drop:<reason> (batches dropped per reason)

Write
-----
``append(batch, declares=ids)`` first makes sure ``batch.seq <= reserved``: if not, the state file is
rewritten durably (tmp -> fsync -> rename -> fsync(dir)) with ``reserved = seq + 100`` *before* anything is
committed (failure: recoverable BufferStoreError). Then ``BEGIN IMMEDIATE``; INSERT the row; set
head_seq/head_hash; bump n:appended; delete the declared drop ids (all must be pending, else BufferStoreError and
nothing changes); then, if the stored bytes exceed the effective cap, evict (below); ``COMMIT``. Only after
the commit does the in-memory mirror change and ``<path>.head`` get its new ``seq`` (rename without fsync,
about 1 ms; a failure is counted in ``head_file_errors`` and logged, never raised: the batch is committed).
So one durable state-file write is paid per 100 appends instead of per append (7 ms here).

Any SQLite error (SQLITE_FULL, ENOSPC as SQLITE_IOERR, ...) rolls the transaction back and raises a
*recoverable* BufferStoreError: nothing of that append is stored, the head did not move, and the caller retries the
same batch later. A wrong seq, unknown kind, or a frame larger than ``max_bytes`` is a caller bug:
non-recoverable BufferStoreError.

Eviction. effective cap = min(max_bytes, stored bytes + free pages in the file + free disk - min_free_bytes
- the part of WAL_RESERVE (4 MiB) the WAL file does not occupy yet); the reason is ``"disk_low"`` when the
disk term binds (or ``max_bytes`` binds after it was clamped to the file system), else ``"cap"``. The WAL
reserve matters: on a full disk a WAL that cannot grow makes even deletes fail, so acks and evictions would
stop too. Before the transaction: if the stored gap and catalog bytes plus the new batch exceed the cap, the
append is refused with ``BufferFull`` (``condition`` "disk_full" when the disk term binds, else
"buffer_full"); evicting data then would lose it without making room. A new ``data`` batch may still be
evicted by its own append when older data and alarms cannot all be kept (alarms outrank data); the head
then advances and the loss is declared. Rows are taken oldest first from
``data``, then ``alarm``, 32 at a time (their frames are passed to ``frame_tags``, below, only to
collect tag names, then released), and deleted. The evicted seqs are grouped into runs of consecutive seqs;
each run becomes a DropRecord (seq range, batches, records, min t0 .. max t1, bytes, reason, sorted tag
union). A run that directly continues the newest pending record of the same reason extends it -- unless that
record was already returned by ``pending_drops()``, because the batcher may be declaring it right now. So a
long outage at the cap yields one growing record, not one per append; poll ``pending_drops()`` at a slow
pace (e.g. every minute) to keep gap batches few. An eviction can remove a batch that is in flight; its
later PUBACK then acks nothing (``ack`` returns 0 for it) and the receiver may see it both delivered and
declared lost.

Coalescing. A run is never merged with one it does not touch (a gap row's range must hold only lost seqs),
nor so that a record would name more than ``RECORD_TAGS`` (4096) tags: an eviction whose run would take a
record beyond that starts a new record at the batch that would (one batch of more tags than that makes a
record of its own, bounded by its frame). A record therefore stays bounded however long the outage lasts
and however often the configured tags change, and its gap row within the protocol's bounds.
Declarations stay few because (a) a record returned by ``pending_drops()`` whose gap batch is then refused or
fails is thawed and extended again, and (b) the caller does not make another gap batch while one is still
queued and the store is dropping (the batcher's rule): drops then accumulate in one growing record per
reason, bounded by the number of runs, not by time. A gap batch once appended is signed and chained and is
never merged or removed.

Condition. ``condition`` (also in ``stats()``) is what the last append found: None (stored, nothing evicted),
"dropping" (stored, unsent batches evicted), "buffer_full" or "disk_full" (refused, or failed with
SQLITE_FULL/ENOSPC) or "store_error" (failed otherwise). A change is logged once (``buffer_condition_changed``),
not per append. The uplink puts it in the retained status; health and metrics report it.

Limits. At open, ``fit_limits`` (buffer/_limits.py) fits the limits to the size of the file system holding
the store: ``min_free_bytes`` at most half of it, ``max_bytes`` at most what is left after that and the WAL
reserve (at least 1 MiB). Each clamp is logged (``buffer_limits_clamped``) and listed in ``stats().clamped``;
``mine-agent validate`` applies the same rule when it can see the file system. Clamped, not refused: a
gateway that will not start collects nothing.

Read
----
``peek(limit, kinds=None, newest_first=False, exclude=())`` returns at most ``limit`` batches in seq order
(one SELECT using the primary key or the (kind, seq) index; ``exclude`` is passed as one JSON array), so
memory is bounded by ``limit``, not by the backlog. Rows whose CRC does not match are set aside (below) and
the peek is repeated without them. Peek never removes anything.

Ack / delete
------------
``ack(seqs)`` deletes the listed seqs in one transaction, one ``DELETE ... WHERE seq BETWEEN ? AND ?
RETURNING kind, size`` per run of consecutive seqs (pass a ``range`` for the backend's ack ranges), bumps
n:acked, and returns how many were present; unknown or already-acked seqs are ignored (at-least-once delivery
acks twice). The chain head is untouched. Deleted pages go to SQLite's free list and are reused;
``compact(max_pages)`` returns up to ``max_pages`` of them to the file system (``PRAGMA
incremental_vacuum``) and truncates the WAL (``wal_checkpoint(TRUNCATE)``). ``AsyncDiskQueue.wait_for_data``
runs one such bounded step whenever it times out, i.e. when the queue is idle, so the file shrinks again after
a drained backlog.

Recovery (``open``)
-------------------
R1. Connect, set the pragmas, run ``PRAGMA quick_check``. If SQLite cannot open the file ("file is not a
    database") or the check fails, the store and its -wal/-shm are renamed ``<path>.bad-<UTC>`` (never
    deleted), counted in n:quarantined, logged as ``buffer_quarantined``, and a new store is created. Every
    row of the bad store that still reads back with a good CRC, and its pending drop records, are copied
    into the new one; rows listed but unreadable count as set_aside (they stay in the .bad file).
R2. The head is the highest of: the database (meta head, highest stored row, the bad store's meta) and what
    the state file F can vouch for. F.seq is exact after a clean close or within the same boot (a process
    crash keeps the page cache); after a reboot only F.reserved is certain. The database counts as
    incomplete when quarantined, when F.seq is above it, or with sync=normal after an unclean reboot (the
    WAL tail may have rolled back without trace); then the head moves to F.seq (exact) or F.reserved.
    Every seq from the database head + 1 (after R1: from F.low) up to the head that is neither stored nor
    already pending becomes a DropRecord with reason ``"lost"`` (``"quarantine"`` after R1). Content is
    unknown: records, from_ms, to_ms = 0, tags empty; seqs between the last used one and F.reserved may
    never have existed, and batches acked after F was written may be declared too: over-declared, never
    under-declared. The head hash is that of the best-known batch, so the next batch links across the
    declared gap.
R3. The CRC32 of the rows a crash can have torn is rechecked (one row in memory at a time): all rows after
    R1 or without a state file, none after a clean close, else those from F.seq - 100 on. Rows that fail are
    moved to ``set_aside`` with reason "corrupt", counted in n:set_aside, and declared by a DropRecord with
    reason ``"corrupt"``. Every other row is rechecked by ``peek`` before it is served, so reading a whole
    GiB backlog at start (tens of seconds on an SD card) is never needed.
R4. The state file is rewritten durably with ``reserved = head + 100`` and ``clean = false``.
SQLite itself discards a torn WAL tail (frame checksums), which is the usual power-cut damage; R2 is what
turns that silent rollback into a declared loss. ``close()`` writes F with ``clean = true`` and checkpoints.

How losses are counted
----------------------
Every batch that leaves other than by ack adds to n:dropped_batches (and n:dropped_records with its
``records`` when known) and to ``drop:<reason>``, and is covered by exactly one pending DropRecord until a
gap batch declares it. ``stats()`` reports all of these plus the backlog (batches, bytes, oldest
created_ms, per-kind counts and bytes), appended/acked totals, set_aside, quarantined, the head seq, the
store's bytes on disk (db + WAL), the batches still pending declaration (``pending_drop_batches``), the
appends refused since open, the condition, and the limits in force with any clamp notes. An append refused
with ``BufferFull`` adds nothing to the queue's counters but ``refused``: its batch never existed (the
seq is reused by the retry), and the rows the caller could not keep are the caller's to count.
"""

from __future__ import annotations

__all__ = [
    "CONDITIONS",
    "EVICTION_ORDER",
    "KINDS",
    "NEVER_EVICTED",
    "ROW_OVERHEAD",
    "WAL_RESERVE",
    "AsyncDiskQueue",
    "BufferStats",
    "DiskQueue",
    "DropRecord",
    "FrameTags",
    "Limits",
    "PreviousRun",
    "QueuedBatch",
    "fit_limits",
]

from buffer._async_queue import AsyncDiskQueue
from buffer._disk_queue import ROW_OVERHEAD, DiskQueue
from buffer._limits import WAL_RESERVE, Limits, fit_limits
from buffer._model import (
    CONDITIONS,
    EVICTION_ORDER,
    KINDS,
    NEVER_EVICTED,
    BufferStats,
    DropRecord,
    FrameTags,
    PreviousRun,
    QueuedBatch,
)
