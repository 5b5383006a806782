"""Rows in, signed and chained batches out, each committed to the durable buffer before anything sends it.

The batcher is the only writer of the chain: it reads the chain head (last sequence number and batch hash)
from the buffer once at start, and every batch it makes is appended with ``seq = head + 1`` and
``prev = hash(head)`` in the buffer's own transaction, so the sequence can neither repeat nor go back, across
restarts and crashes. If an append fails (disk full, I/O error) the rows stay in memory and are tried again
on the next flush with the same sequence number; nothing is signed twice under different content because
the head did not move.

Rows are packed in the column orders of :mod:`agent.protocol.tables`, with the per-batch tag dictionary and
millisecond offsets from ``t0`` described in :mod:`agent.protocol.wire`. A batch never holds more than
``max_rows`` rows; a flush with more rows makes several.

The **tag catalogue** (each tag's unit, type, description, scaling, plausible range and location, table
``catalog``) travels as a signed batch of kind ``catalog``, made whenever the catalogue differs from the one
last committed: at start (the last one's digest and seq are kept in a small file in the state directory) and
after a reload that changes it. Every batch's header ``cat`` names the seq of the catalogue in force, so a
backend reads units from the gateway instead of its own files. Rejected: catalogue fields in every batch
(most bodies would repeat them, and a backend would still not know when they changed).

Batches evicted from the buffer by its cap come back from ``pending_drops()`` and are declared in a signed
``gap`` batch appended in the same transaction that clears them, so the receiver can tell declared loss
from missing data. Declarations are made at most every ``declare_interval_s`` (and on the final flush):
while the buffer sits at its cap every append evicts something, and declaring on every flush would fill
the buffer with gap batches. Between declarations the buffer merges contiguous drops into one record.
The buffer never evicts a gap batch, so the declarations must not crowd out the data either: while the
buffer is dropping (or refusing) and an earlier gap batch is still queued, the next declaration waits; the
drops stay pending in the buffer, as durable as a gap batch, and keep merging, and the next declaration
covers them all once the earlier one is acknowledged. Rejected: merging queued gap batches into a new one,
which would mean removing a signed, chained batch -- the very thing a receiver must be able to trust never
happens.

A declaration is split over as many gap batches as keep each within the protocol's bounds
(:func:`gap_batches`), each declaring its own drop records: a receiver refuses an oversized batch, never
acknowledges it, and a gap batch is never evicted, so one too large would stay queued for ever with its
declaration never archived. A row lists at most :data:`ROW_TAGS` tag names and counts the others in
``tags_omitted``. Rejected: one gap batch per declaration with no bound (what a long, fragmented outage of a
large gateway broke), and splitting a row's tags over several rows (a receiver would count its batches twice).

A start after an unclean stop (kill -9, power cut: the buffer's ``previous_run()`` says so) lost the samples
the agent held in memory. The first gap batch of the new run declares that collection gap in an ``outage``
row, made at the new run's first flush: from the ``t1`` of the last batch committed before the stop to the time
of the first new sample (the time of that flush if no sample is waiting yet: starting up is not an outage),
reason ``unclean_stop``, naming the configured tags (``outage_tags``).
Signed and chained like every batch, it lets a regulator tell "the agent was not collecting" from "data was
removed". Rows discarded from memory because the buffer refused appends for too long are declared the same
way once the buffer accepts a gap batch again: one ``outage`` row per reason (the buffer's condition:
``disk_full``, ``buffer_full``, or ``store_error``) spanning the discarded rows' times and naming their tags.
"""

from __future__ import annotations

__all__ = ["ROW_TAGS", "Batcher", "BatcherStats", "GapBatch", "catalog_rows", "gap_batches"]

import hashlib
import json
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import add, itemgetter, sub
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import structlog

from agent.core.clock import Clock, SystemClock
from agent.core.errors import BufferFull, BufferStoreError
from agent.pipeline.column_rows import ColumnRows
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol import wire
from agent.protocol.limits import MAX_BODY_CELLS, MAX_ROWS_PER_BATCH, MAX_SEQ, MAX_STRING_CHARS
from agent.protocol.signing import BatchSigner
from agent.protocol.tables import (
    ALARM_COLUMNS,
    ALARM_TABLE,
    CATALOG_COLUMNS,
    CATALOG_TABLE,
    GAP_COLUMNS,
    GAP_TABLE,
    OUTAGE_COLUMNS,
    OUTAGE_TABLE,
    RAW_COLUMNS,
    RAW_TABLE,
    WIN_COLUMNS,
    WIN_TABLE,
)

if TYPE_CHECKING:
    from buffer import AsyncDiskQueue, DropRecord
    from config.schema import AgentConfig

log = structlog.get_logger(__name__)

_COLUMNS = {WIN_TABLE: WIN_COLUMNS, RAW_TABLE: RAW_COLUMNS, ALARM_TABLE: ALARM_COLUMNS}  # the row tables packed
_MAX_PENDING_ROWS = 2_000_000  # rows kept in memory while the buffer refuses appends (~200 MB worst case)


@dataclass(slots=True)
class BatcherStats:
    batches: int = 0
    rows: int = 0
    bytes: int = 0
    gap_batches: int = 0
    catalog_batches: int = 0
    append_failures: int = 0
    rows_dropped_unbuffered: int = 0  # rows discarded because the buffer refused appends for too long
    declarations_postponed: int = 0  # declarations left pending: an earlier gap batch waits, the buffer drops
    outages_declared: int = 0  # collection gaps (outage rows) declared, e.g. after an unclean stop


class Batcher:
    def __init__(
        self,
        gateway_id: str,
        signer: BatchSigner,
        queue: AsyncDiskQueue,
        *,
        compression: str = "zstd",
        max_rows: int = 20000,
        declare_interval_s: float = 60.0,
        max_pending_rows: int = _MAX_PENDING_ROWS,
        outage_tags: Collection[str] = (),
        catalog_state: Path | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        self.signer = signer
        self.queue = queue
        self.compression = compression
        self.max_rows = max_rows
        self.clock = clock or SystemClock()
        self.stats = BatcherStats()
        self.declare_interval_s = declare_interval_s
        self.max_pending_rows = max_pending_rows
        self._next_declare = 0.0  # monotonic time of the next check for drops to declare
        self._seq = 0
        self._prev = wire.GENESIS_HASH
        # (kind, table, rows) not yet stored; rows are lists of lists, or ColumnRows (agent.pipeline.column_rows).
        self._pending: list[tuple[str, str, Sequence[list[Any]]]] = []
        self.outage_tags = sorted(outage_tags)
        # Start of a collection gap not yet declared (the previous run stopped uncleanly), Unix ms.
        self._outage_from: int | None = None
        # Rows discarded unbuffered, not yet declared: reason -> [from_ms, to_ms, tags].
        self._discarded: dict[str, list[Any]] = {}
        self._failing = False  # appends are failing: logged once, not on every flush
        # The tag catalogue: the seq and digest of the one in force, and one waiting to be stored (set_catalog).
        self.catalog_state = catalog_state
        self.cat = 0
        self._cat_digest: str | None = None
        self._cat_pending: tuple[list[list[Any]], str] | None = None

    async def open(self) -> None:
        self._seq, self._prev = await self.queue.chain_head()
        previous = await self.queue.previous_run()
        if not previous.clean and previous.last_t1_ms is not None:
            self._outage_from = previous.last_t1_ms
            log.warning("batcher_unclean_stop", seq=self._seq, from_ms=previous.last_t1_ms,
                        error="the previous run did not stop cleanly; its unbatched samples are declared lost")
        self.cat, self._cat_digest = _read_catalog_state(self.catalog_state, self._seq)
        # A catalogue batch the buffer lost before delivery (a damaged or truncated store) never reaches a
        # backend: send the catalogue again rather than name a batch that will only be declared lost.
        if self.cat and any(d.first_seq <= self.cat <= d.last_seq for d in await self.queue.pending_drops()):
            self.cat, self._cat_digest = 0, None

    def set_catalog(self, rows: list[list[Any]]) -> None:
        """Make ``rows`` (:func:`catalog_rows`) the tag catalogue. If it differs from the one in force, it is
        stored as a ``catalog`` batch by the next flush, ahead of any rows, and names itself in the ``cat`` of
        every later batch."""
        digest = _catalog_digest(rows)
        if digest == self._cat_digest:
            self._cat_pending = None
        else:
            self._cat_pending = (rows, digest)

    @property
    def head(self) -> tuple[int, bytes]:
        return self._seq, self._prev

    async def submit(self, output: PipelineOutput, *, kind: str = "data", final: bool = False) -> None:
        """Queue the pipeline's rows and try to store them now. Alarm rows always become batches of kind
        "alarm", queued ahead of any other rows still pending (so a buffer hiccup cannot hold them behind
        data)."""
        if output.alarm:
            first_other = next((i for i, (k, _, _) in enumerate(self._pending) if k != "alarm"), len(self._pending))
            self._pending.insert(first_other, ("alarm", ALARM_TABLE, output.alarm))
        if output.win:
            self._pending.append((kind, WIN_TABLE, output.win))
        self._pending.extend((kind, WIN_TABLE, rows) for rows in output.win_blocks if rows)
        if output.raw:
            self._pending.append((kind, RAW_TABLE, output.raw))
        await self.flush(final=final)

    async def flush(self, *, final: bool = False) -> None:
        """Store everything pending, as few batches as ``max_rows`` allows; declare buffer drops first
        (when ``declare_interval_s`` has passed since the last check, or on the ``final`` flush).

        On a buffer failure the rows stay pending (bounded; the excess is counted and logged) and the next
        call tries again.
        """
        try:
            now = self.clock.monotonic()
            if self._outage_from is not None or self._discarded or final or now >= self._next_declare:
                self._next_declare = now + self.declare_interval_s
                await self._declare_drops()
            if self._cat_pending is not None:
                await self._store_catalog(*self._cat_pending)
            while self._pending:
                kind = self._pending[0][0]
                tables: dict[str, list[Sequence[list[Any]]]] = {}  # per table, its runs of rows in order
                taken = 0
                while self._pending and self._pending[0][0] == kind and taken < self.max_rows:
                    _, name, rows = self._pending[0]
                    room = self.max_rows - taken
                    if len(rows) > room:
                        chunk, rest = rows[:room], rows[room:]
                        self._pending[0] = (kind, name, rest)
                    else:
                        chunk = rows
                        self._pending.pop(0)
                    tables.setdefault(name, []).append(chunk)
                    taken += len(chunk)
                try:
                    await self._append(kind, tables)
                except BufferStoreError:
                    # Put the rows back in front, in order, for the next attempt.
                    self._pending[:0] = [(kind, name, rows) for name, runs in tables.items() for rows in runs]
                    raise
        except BufferStoreError as exc:
            self.stats.append_failures += 1
            self._bound_pending(exc.condition if isinstance(exc, BufferFull) else "store_error")
            # Once per streak of failures: a buffer refusing appends for hours would otherwise log every flush.
            (log.debug if self._failing else log.warning)(
                "buffer_append_failed", error=str(exc), seq=self._seq + 1,
                pending_rows=sum(len(r) for _, _, r in self._pending))
            self._failing = True
        else:
            if self._failing:
                log.info("batcher_appends_resumed", seq=self._seq, failures=self.stats.append_failures)
            self._failing = False

    def _bound_pending(self, reason: str) -> None:
        """Keep at most ``max_pending_rows`` in memory while the buffer refuses appends: the oldest data rows
        go first, alarm rows only when nothing else is left, because alarms are what a regulator asks about
        first. What is discarded is counted in ``rows_dropped_unbuffered``, logged, and kept as an outage of
        ``reason`` to declare (module docstring)."""
        total = sum(len(r) for _, _, r in self._pending)
        while total > self.max_pending_rows and self._pending:
            i = next((i for i, (k, _, _) in enumerate(self._pending) if k != "alarm"), 0)
            kind, name, rows = self._pending[i]
            excess = total - self.max_pending_rows
            dropped, kept = rows[:excess], rows[excess:]
            if kept:
                self._pending[i] = (kind, name, kept)
            else:
                self._pending.pop(i)
            total -= len(dropped)
            self._note_discarded(reason, name, dropped)
            self.stats.rows_dropped_unbuffered += len(dropped)
            log.error("batcher_rows_dropped", rows=len(dropped), kind=kind,
                      error="the buffer refused appends for too long; oldest unbuffered rows discarded")

    def _note_discarded(self, reason: str, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Widen the pending outage of ``reason`` to cover ``rows`` (their times and tags)."""
        starts = list(_column(rows, 1))
        if not starts:
            return
        ends = list(map(add, starts, _column(rows, 2))) if table == WIN_TABLE else starts
        span = self._discarded.setdefault(reason, [min(starts), max(ends), set()])
        span[0], span[1] = min(span[0], *starts), max(span[1], *ends)
        span[2].update(_column(rows, 0))

    async def _declare_drops(self) -> None:
        """Gap batches with the pending drops and the undeclared collection gaps, if any; postponed while an
        earlier gap batch is queued and the buffer is dropping (module docstring). Each gap batch stays
        within every bound of :mod:`agent.protocol.limits` (:func:`gap_batches`) and declares its own drop
        records, so a refused one leaves exactly its records pending and every record is declared once."""
        outages = self._outage_rows()
        if not outages and await self._earlier_declaration_waits():
            self.stats.declarations_postponed += 1
            return
        drops = await self.queue.pending_drops()
        for part in gap_batches(drops, outages):
            body = wire.encode_body([], part.tables, part.t0, self.compression)
            await self._store("gap", body, part.t0, part.t1, part.rows, declares=part.declares)
            self.stats.gap_batches += 1
            for row in part.outages:
                if row[2] == "unclean_stop":
                    self._outage_from = None
                else:
                    self._discarded.pop(row[2], None)
                self.stats.outages_declared += 1
                log.warning("batcher_outage_declared", seq=self._seq, from_ms=row[0], to_ms=row[1], reason=row[2])
            if part.drops:
                log.warning("batcher_gap_declared", seq=self._seq, batches=sum(d.batches for d in part.drops),
                            records=sum(d.records for d in part.drops),
                            reasons=sorted({d.reason for d in part.drops}))

    def _outage_rows(self) -> list[list[Any]]:
        """The ``outage`` rows still to declare: the collection gap of an unclean stop (up to the first sample
        waiting to be stored, or up to now when none is yet), then the rows discarded unbuffered, by reason."""
        rows: list[list[Any]] = []
        if self._outage_from is not None:
            firsts = [min(_column(rows, 1)) for _, _, rows in self._pending if len(rows)]
            to_ms = min(firsts) if firsts else int(self.clock.time() * 1000)
            rows.append([self._outage_from, max(self._outage_from, to_ms), "unclean_stop", list(self.outage_tags)])
        for reason, (from_ms, to_ms, tags) in sorted(self._discarded.items()):
            rows.append([from_ms, to_ms, reason, sorted(tags)])
        return rows

    async def _earlier_declaration_waits(self) -> bool:
        """An earlier gap batch is still queued while the buffer drops or refuses: declaring now would only
        add a gap batch the buffer can never evict."""
        if self.queue.condition is None:  # no I/O: the common case costs nothing
            return False
        return (await self.queue.stats()).by_kind.get("gap", 0) > 0

    async def _store_catalog(self, rows: list[list[Any]], digest: str) -> None:
        """Store the catalogue as a batch of kind ``catalog`` (tag names through the batch's dictionary, as in
        every table); it covers no time, so ``t0 = t1 =`` now, and holds no records (rows of data: the buffer's
        and the statistics' count). Then remember it (seq, digest) on disk."""
        now = int(self.clock.time() * 1000)
        tags = [row[0] for row in rows]
        table = wire.Table(CATALOG_COLUMNS, [[i, *row[1:]] for i, row in enumerate(rows)])
        body = wire.encode_body(tags, {CATALOG_TABLE: table}, now, self.compression)
        await self._store("catalog", body, now, now, 0)
        self.cat, self._cat_digest, self._cat_pending = self._seq, digest, None
        self.stats.catalog_batches += 1
        log.info("batcher_catalog_stored", seq=self._seq, tags=len(rows))
        _write_catalog_state(self.catalog_state, self._seq, digest)

    async def _append(self, kind: str, tables: dict[str, list[Sequence[list[Any]]]]) -> None:
        runs = [(name, rows) for name, parts in tables.items() for rows in parts]
        spans = [_span(name, rows) for name, rows in runs]
        t0 = min(lo for lo, _ in spans)
        t1 = max(hi for _, hi in spans)
        # The per-batch tag dictionary, built with C-level dict operations rather than a per-row branch.
        tags = list(dict.fromkeys(chain.from_iterable(_column(rows, 0) for _, rows in runs)))
        index = {tag: i for i, tag in enumerate(tags)}
        packed: dict[str, tuple[list[str], int, Iterable[Sequence[Any]]]] = {}
        n = 0
        for name, parts in tables.items():
            cols = _COLUMNS.get(name)
            if cols is None:
                raise ValueError(f"unknown table {name!r}")
            count = sum(map(len, parts))
            packed[name] = (cols, count, chain.from_iterable(_wire_rows(rows, index, t0) for rows in parts))
            n += count
        body = wire.encode_body_rows(tags, packed, self.compression)
        await self._store(kind, body, t0, t1, n)

    async def _store(self, kind: str, body: bytes, t0: int, t1: int, records: int,
                     *, declares: Sequence[int] = ()) -> None:
        from buffer import QueuedBatch  # the buffer package imports nothing of ours but agent.core

        seq = self._seq + 1
        created = int(self.clock.time() * 1000)
        batch = wire.encode_frame(self.signer, gw=self.gateway_id, seq=seq, prev=self._prev, created=created,
                                  t0=t0, t1=t1, kind=kind, enc=self.compression, body=body, cat=self.cat)
        await self.queue.append(
            QueuedBatch(seq=seq, kind=kind, created_ms=created, t0_ms=t0, t1_ms=t1, records=records,
                        hash=batch.hash, frame=batch.frame),
            declares=declares,
        )
        self._seq, self._prev = seq, batch.hash
        self.stats.batches += 1
        self.stats.rows += records
        self.stats.bytes += len(batch.frame)


_DETECTED = ALARM_COLUMNS.index("detected_ms")

ROW_TAGS = 4096
"""Tag names one ``gap`` or ``outage`` row lists at most; the rest are counted in its ``tags_omitted``
(docs/protocol.md §8). A row then stays below about 4 MiB even of the longest names, so it always fits a
gap batch alone."""
_GAP_BODY_BYTES = 256 * 1024
"""Packed rows of one gap batch (before compression) beyond which the next row starts another gap batch:
far inside every bound of agent.protocol.limits, and small next to the smallest buffer (1 MiB), which never
evicts gap batches."""
_GAP_BODY_CELLS = MAX_BODY_CELLS // 2  # values (rows, cells, tag names): never binds before the bytes do
_GAP_ROWS = MAX_ROWS_PER_BATCH // 2


@dataclass(frozen=True, slots=True)
class GapBatch:
    """One gap batch to make: its tables, times and row count, the drop records it declares (their ids in
    ``declares``) and the outage rows (as :meth:`Batcher._outage_rows` made them) it carries."""

    tables: dict[str, wire.Table]
    t0: int
    t1: int
    rows: int
    drops: tuple[DropRecord, ...]
    outages: tuple[list[Any], ...]

    @property
    def declares(self) -> list[int]:
        return [d.id for d in self.drops]


def gap_batches(drops: Sequence[DropRecord], outages: Sequence[list[Any]]) -> list[GapBatch]:
    """The gap batches declaring ``drops`` and ``outages`` (rows ``[from_ms, to_ms, reason, tags]``), outages
    first (an unclean stop's gap must precede the new run's data), in order, each record in exactly one.

    Each batch's packed rows stay within ``_GAP_BODY_BYTES`` (a longer row goes alone) and far inside the
    row and value bounds, so a receiver never refuses a gap batch for its size: a refused gap batch is never
    acknowledged and, never evicted, would stay queued for ever. A row's tag list is cut to
    :data:`ROW_TAGS` names (the first, sorted), the cut ones counted in ``tags_omitted``."""
    items: list[tuple[str, list[Any], Any]] = [
        (OUTAGE_TABLE, [row[0], row[1], row[2], *_bounded_tags(row[3])], row) for row in outages]
    items += [(GAP_TABLE, [d.first_seq, d.last_seq, d.batches, d.records, d.from_ms, d.to_ms, d.reason,
                           *_bounded_tags(d.tags)], d) for d in drops]
    parts: list[list[tuple[str, list[Any], Any]]] = []
    size = cells = 0
    for item in items:
        row = item[1]
        row_size = len(msgpack.packb(row, use_bin_type=True))
        row_cells = len(row) + len(row[-2]) + 3  # its place in rows, the row list, its tag list
        if not parts or (size + row_size > _GAP_BODY_BYTES or cells + row_cells > _GAP_BODY_CELLS
                         or len(parts[-1]) >= _GAP_ROWS):
            parts.append([])
            size = cells = 0
        parts[-1].append(item)
        size += row_size
        cells += row_cells
    return [_gap_batch(part) for part in parts]


def _bounded_tags(tags: Collection[str]) -> tuple[list[str], int]:
    names = sorted(tags)
    return names[:ROW_TAGS], max(0, len(names) - ROW_TAGS)


def _gap_batch(part: list[tuple[str, list[Any], Any]]) -> GapBatch:
    drops: tuple[DropRecord, ...] = tuple(src for name, _, src in part if name == GAP_TABLE)
    outages: tuple[list[Any], ...] = tuple(src for name, _, src in part if name == OUTAGE_TABLE)
    tables: dict[str, wire.Table] = {}
    for name, row, _ in part:
        tables.setdefault(name, wire.Table(_GAP_TABLES[name], [])).rows.append(row)
    starts = [d.from_ms for d in drops if d.from_ms > 0] + [o[0] for o in outages]  # unknown content: times 0
    ends = [d.to_ms for d in drops] + [o[1] for o in outages]
    t0 = min(starts) if starts else min(d.from_ms for d in drops)
    return GapBatch(tables, t0, max(t0, *ends), len(part), drops, outages)


_GAP_TABLES = {GAP_TABLE: GAP_COLUMNS, OUTAGE_TABLE: OUTAGE_COLUMNS}


def catalog_rows(config: AgentConfig) -> list[list[Any]]:
    """The tag catalogue of ``config``, one row per tag in :data:`CATALOG_COLUMNS` order with the full tag name
    first, sorted by name (so equal catalogues have equal digests). ``type`` is the data type a driver
    decodes (Modbus), ``scale``/``offset`` the configured ``raw * scale + offset`` (Modbus, serial); nil where
    a driver has no such setting (OPC UA servers report their own types and units, calculated tags are
    defined by their operation)."""
    rows = []
    for device, dev in config.devices.items():
        for tag in dev.tags:
            rows.append([f"{device}.{tag.name}", _text(tag.unit), getattr(tag, "type", None), tag.description,
                         getattr(tag, "scale", None), getattr(tag, "offset", None), tag.low, tag.high,
                         tag.location])
    for calc in config.calculated:
        rows.append([f"calc.{calc.name}", _text(calc.unit), None, calc.description, None, None, calc.low,
                     calc.high, calc.location])
    rows.sort(key=itemgetter(0))
    return rows


def _text(value: str | None) -> str | None:
    return value[:MAX_STRING_CHARS] if value is not None else None  # receivers refuse longer strings


def _catalog_digest(rows: list[list[Any]]) -> str:
    return hashlib.sha256(msgpack.packb(rows, use_bin_type=True)).hexdigest()


def _read_catalog_state(path: Path | None, head: int) -> tuple[int, str | None]:
    """The catalogue in force from ``path`` as ``(seq, digest)``, or ``(0, None)`` when there is none to trust:
    no file, an unreadable one, or a seq this buffer's chain has not reached (a buffer replaced or reset), in
    which case the catalogue is sent again."""
    if path is None:
        return 0, None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        seq, digest = state["seq"], state["digest"]
    except FileNotFoundError:
        return 0, None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("batcher_catalog_state_unreadable", path=str(path), error=str(exc))
        return 0, None
    if type(seq) is not int or not 1 <= seq <= min(head, MAX_SEQ) or not isinstance(digest, str):
        return 0, None
    return seq, digest


def _write_catalog_state(path: Path | None, seq: int, digest: str) -> None:
    """Remember the catalogue just committed, atomically (temp file, fsync, rename). A failure is logged and
    costs only a repeated catalogue batch at the next start."""
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump({"seq": seq, "digest": digest}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        log.warning("batcher_catalog_state_unwritable", path=str(path), seq=seq, error=str(exc))


def _span(name: str, rows: Sequence[Sequence[Any]]) -> tuple[int, int]:
    """The earliest and latest time ``rows`` of table ``name`` cover, which the batch's ``t0`` and ``t1`` must
    enclose: every row's own time (column 1, after the tag), a window's end (``start + dur_ms``; its other
    times lie inside the window), an alarm's ``detected_ms`` (the gateway's clock, which may be behind or
    ahead of a device's timestamps)."""
    lo = min(_column(rows, 1))
    if name == WIN_TABLE:
        return lo, max(map(add, _column(rows, 1), _column(rows, 2)))
    hi = max(_column(rows, 1))
    if name == ALARM_TABLE:
        detected = list(_column(rows, _DETECTED))
        lo, hi = min(lo, *detected), max(hi, *detected)
    return lo, hi


# Window rows come as lists of lists or as the pipeline's ColumnRows; the exact type test, once per batch,
# is the cheapest way to tell them apart.
def _column(rows: Sequence[Sequence[Any]], j: int) -> Iterable[Any]:
    """Field ``j`` of every row."""
    if type(rows) is ColumnRows:
        return rows.columns[j]
    return map(itemgetter(j), rows)


def _wire_rows(rows: Sequence[Sequence[Any]], index: dict[str, int], t0: int) -> Iterable[Sequence[Any]]:
    """The rows as packed: every table starts with (tag, time), the tag becomes its index in the batch's
    dictionary and the time an offset from ``t0``. Made one row at a time while packing, so the wire rows
    never all exist next to the pipeline's (from ColumnRows: C-level, as tuples, which pack alike)."""
    if type(rows) is ColumnRows:
        tags, times, *rest = rows.columns
        return zip(map(index.__getitem__, tags), map(sub, times, repeat(t0)), *rest, strict=True)
    return ([index[r[0]], r[1] - t0, *r[2:]] for r in rows)
