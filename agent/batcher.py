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

Batches evicted from the buffer by its cap come back from ``pending_drops()`` and are declared in a signed
``gap`` batch appended in the same transaction that clears them, so the receiver can tell declared loss
from missing data. Declarations are made at most every ``declare_interval_s`` (and on the final flush):
while the buffer sits at its cap every append evicts something, and declaring on every flush would fill
the buffer with gap batches. Between declarations the buffer merges contiguous drops into one record.
The buffer never evicts a gap batch, so the declarations must not crowd out the data either: while the
buffer is dropping (or refusing) and an earlier gap batch is still queued, the next declaration waits; the
drops stay pending in the buffer, as durable as a gap batch, and keep merging, and one gap batch declares
them all once the earlier one is acknowledged. Rejected: merging queued gap batches into a new one, which
would mean removing a signed, chained batch -- the very thing a receiver must be able to trust never happens.

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

__all__ = ["Batcher", "BatcherStats"]

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import add, itemgetter, sub
from typing import TYPE_CHECKING, Any

import structlog

from agent.core.clock import Clock, SystemClock
from agent.core.errors import BufferFull, BufferStoreError
from agent.pipeline.column_rows import ColumnRows
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from agent.protocol.tables import (
    ALARM_COLUMNS,
    ALARM_TABLE,
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
    from buffer import AsyncDiskQueue

log = structlog.get_logger(__name__)

_COLUMNS = {WIN_TABLE: WIN_COLUMNS, RAW_TABLE: RAW_COLUMNS, ALARM_TABLE: ALARM_COLUMNS}  # the row tables packed
_MAX_PENDING_ROWS = 2_000_000  # rows kept in memory while the buffer refuses appends (~200 MB worst case)


@dataclass(slots=True)
class BatcherStats:
    batches: int = 0
    rows: int = 0
    bytes: int = 0
    gap_batches: int = 0
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

    async def open(self) -> None:
        self._seq, self._prev = await self.queue.chain_head()
        previous = await self.queue.previous_run()
        if not previous.clean and previous.last_t1_ms is not None:
            self._outage_from = previous.last_t1_ms
            log.warning("batcher_unclean_stop", seq=self._seq, from_ms=previous.last_t1_ms,
                        error="the previous run did not stop cleanly; its unbatched samples are declared lost")

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
        """One gap batch with the pending drops and the undeclared collection gaps, if any; postponed while an
        earlier gap batch is queued and the buffer is dropping (module docstring)."""
        outages = self._outage_rows()
        if not outages and await self._earlier_declaration_waits():
            self.stats.declarations_postponed += 1
            return
        drops = await self.queue.pending_drops()
        if not drops and not outages:
            return
        tables: dict[str, wire.Table] = {}
        if drops:
            tables[GAP_TABLE] = wire.Table(GAP_COLUMNS, [
                [d.first_seq, d.last_seq, d.batches, d.records, d.from_ms, d.to_ms, d.reason, list(d.tags)]
                for d in drops])
        starts = [d.from_ms for d in drops if d.from_ms > 0]  # a drop of unknown content has times 0
        ends = [d.to_ms for d in drops]
        if outages:
            tables[OUTAGE_TABLE] = wire.Table(OUTAGE_COLUMNS, outages)
            starts.extend(row[0] for row in outages)
            ends.extend(row[1] for row in outages)
        t0 = min(starts) if starts else min(d.from_ms for d in drops)
        t1 = max(t0, *ends)
        body = wire.encode_body([], tables, t0, self.compression)
        await self._store("gap", body, t0, t1, sum(len(t.rows) for t in tables.values()),
                          declares=[d.id for d in drops])
        self.stats.gap_batches += 1
        self._outage_from = None
        self._discarded.clear()
        for row in outages:
            self.stats.outages_declared += 1
            log.warning("batcher_outage_declared", seq=self._seq, from_ms=row[0], to_ms=row[1], reason=row[2])
        if drops:
            log.warning("batcher_gap_declared", seq=self._seq, batches=sum(d.batches for d in drops),
                        records=sum(d.records for d in drops), reasons=sorted({d.reason for d in drops}))

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

    async def _append(self, kind: str, tables: dict[str, list[Sequence[list[Any]]]]) -> None:
        runs = [(name, rows) for name, parts in tables.items() for rows in parts]
        # Columns of every table start with (tag, time); windows also carry their length third.
        t0 = min(min(_column(rows, 1)) for _, rows in runs)
        t1 = max(max(map(add, _column(rows, 1), _column(rows, 2))) if name == WIN_TABLE else max(_column(rows, 1))
                 for name, rows in runs)
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
                                  t0=t0, t1=t1, kind=kind, enc=self.compression, body=body)
        await self.queue.append(
            QueuedBatch(seq=seq, kind=kind, created_ms=created, t0_ms=t0, t1_ms=t1, records=records,
                        hash=batch.hash, frame=batch.frame),
            declares=declares,
        )
        self._seq, self._prev = seq, batch.hash
        self.stats.batches += 1
        self.stats.rows += records
        self.stats.bytes += len(batch.frame)


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
