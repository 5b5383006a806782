"""The reference receiver: verify every batch, store it durably, account for every sequence number.

This is the backend side of docs/protocol.md, written to be read next to it. Two parts:

* :class:`ReceiverStore` is the system of record: synchronous, no network, one SQLite file in WAL mode with
  ``synchronous=FULL`` (a batch it has acknowledged survives a power cut of the backend). It opens and
  checks each frame (bounds, topic, kind, the key registry of :mod:`backend.registry`, the signature),
  decides *stored* / *duplicate* / *rejected*, and answers "what do we have, what is missing, what did the
  gateway declare lost, what did we refuse, from whom and why" (:meth:`ReceiverStore.report`).
* :class:`Receiver` subscribes to ``<prefix>/+/batch/#`` (QoS 1, persistent session) and feeds the store.
  Only after the store's commit does it send the MQTT PUBACK for every message (manual acknowledgement, so a
  receiver crash before the commit makes the broker deliver again; a refused frame is decided and recorded,
  so the broker may forget it too) and, given the archive key, the signed ack on ``<prefix>/<gw>/ack``
  (:mod:`agent.protocol.acks`) that lets the gateway delete batches from its buffer: for stored and
  duplicate batches only, never for a refused frame. An ack names hash-linked runs of batches, so it can
  only be produced from what the store holds. A retained message on a batch topic is counted and
  acknowledged unread: no gateway publishes batches retained, and the broker would hand it over again at
  every subscribe.

Chain verification works with batches in any order, because they do not arrive in order: alarm batches
overtake data batches, and a backlog drained after an outage arrives after live data. When seq ``n`` is
stored, the store checks ``n.prev == hash(n-1)`` if ``n-1`` is present and ``hash(n) == (n+1).prev`` if
``n+1`` is present; each pair of neighbours is therefore checked exactly once, whichever came second. Seq 1
must point at the genesis hash. A mismatch is recorded as a chain break (the batch itself is still stored:
its signature is valid, and the break is evidence to keep, not to throw away).

Why a refused frame is never acknowledged: an ack means "the archive durably holds this exact batch". Acking a
refusal let a forger's frame in gateway B's name make B delete its genuine batch. A refused frame is kept
once (bytes, cause, signer, a short reason), so one refused for an unknown key can be checked again once the
key is registered (:meth:`ReceiverStore.reverify`); its seq stays ``missing`` until a valid copy arrives.

Why each frame is decided in a savepoint of its own: one frame nobody foresaw (a value out of range, a body
that breaks a decoder) must not abort the frames committed with it, nor, by being redelivered, the receiver.
Only a failure of the database itself aborts the commit group, and then nothing of it is acknowledged.

Why ``missing`` counts only stored batches: the highest seq is taken from batches whose signature verified,
so a forged frame claiming seq 10**9 cannot invent a billion missing batches.
"""

from __future__ import annotations

__all__ = [
    "CAUSES",
    "REFUSED_BYTES_PER_GATEWAY",
    "REFUSED_BYTES_TOTAL",
    "Arrival",
    "BrokerAddress",
    "IngestResult",
    "Receiver",
    "ReceiverStats",
    "ReceiverStore",
    "TlsFiles",
    "coalesce",
    "parse_broker_url",
]

import asyncio
import hashlib
import json
import math
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from agent.core.backoff import Backoff
from agent.core.cancellation import TaskGroup, cancellable
from agent.core.clock import Clock, SystemClock
from agent.core.errors import AgentError, WireBoundsError, WireFormatError
from agent.protocol import acks, wire
from agent.protocol.limits import (
    MAX_FRAME_BYTES,
    MAX_ID_CHARS,
    MAX_REASON_CHARS,
    MAX_SEQ,
    MAX_STRING_CHARS,
    MAX_TIME_MS,
)
from agent.protocol.mqtt import (
    BrokerAddress,
    BrokerSettings,
    TlsFiles,
    ack_message,
    create_client,
    parse_broker_url,
)
from agent.protocol.signing import BatchSigner
from agent.protocol.tables import (
    CATALOG_COLUMNS,
    CATALOG_TABLE,
    GAP_COLUMNS,
    GAP_TABLE,
    OFFSET_COLUMNS,
    OUTAGE_TABLE,
    ROW_TIME_COLUMNS,
    TAG_COLUMN,
)
from backend.registry import KeyRefused, KeyRegistry

log = structlog.get_logger(__name__)

UNKNOWN_GATEWAY = "unknown"

# Of a refused frame the archive keeps its first 64 KiB (with its SHA-256 and full length), except a frame refused
# for its key or signature, which reverify() needs whole (at most MAX_FRAME_BYTES, or it would not have opened).
# Distinct refused frames of up to 16 MiB each would otherwise fill the archive's disk. Even those are kept whole
# only within a budget (the bytes of such frames over 64 KiB): per gateway of the topic, every name with no
# registered key sharing one, and in all; beyond it they are cut like the others, and reverify() cannot restore
# them. Without the budget, anyone who can publish fills the disk with distinct 16 MiB frames in a bad signature.
_KEPT_REFUSED_BYTES = 65_536
_KEPT_WHOLE: frozenset[str] = frozenset({"unknown_key", "wrong_gateway", "signature"})
REFUSED_BYTES_PER_GATEWAY = 256 * 2**20
REFUSED_BYTES_TOTAL = 2 * 2**30

# Why a frame was refused: the fixed list of docs/protocol.md §6.
CAUSES = ("format", "bounds", "topic", "kind", "unknown_key", "wrong_gateway", "key_not_valid", "revoked",
          "signature", "seq_reused", "body", "benched")
Cause = Literal["format", "bounds", "topic", "kind", "unknown_key", "wrong_gateway", "key_not_valid",
                "revoked", "signature", "seq_reused", "body", "benched"]
REPORT_REFUSALS = 100  # refusals listed per gateway in the report (all are counted)
REPORT_UNREGISTERED = 20  # topic names with no registered key listed in the report (all are counted)
SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    gw          TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    hash        BLOB    NOT NULL,   -- SHA-256 of the signed bytes
    prev        BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    t0          INTEGER NOT NULL,
    t1          INTEGER NOT NULL,
    created     INTEGER NOT NULL,
    kid         TEXT    NOT NULL,
    received_at INTEGER NOT NULL,   -- Unix ms, receiver clock
    records     INTEGER NOT NULL,   -- rows of measurement tables (every table but gap, outage and catalog)
    frame       BLOB    NOT NULL,   -- the frame exactly as received: the evidence, verifiable by anyone
    cat         INTEGER NOT NULL DEFAULT 0,   -- the seq of the tag catalogue the batch refers to (0: none)
    PRIMARY KEY (gw, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS records (
    id    INTEGER PRIMARY KEY,
    gw    TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    tbl   TEXT    NOT NULL,         -- body table: win, raw, alarm, gap, or one added later
    tag   TEXT,                     -- full tag name "<device>.<tag>" when the table has a tag column
    ts    INTEGER,                  -- Unix ms: the ts, start or from_ms column, else the batch t0
    data  TEXT    NOT NULL          -- the row as a JSON object {column: value}
);
CREATE INDEX IF NOT EXISTS records_by_tag ON records (tag, ts);
CREATE INDEX IF NOT EXISTS records_by_batch ON records (gw, seq);
CREATE TABLE IF NOT EXISTS rejected (
    id          INTEGER PRIMARY KEY,
    gw          TEXT    NOT NULL,   -- the gateway of the topic it came on, else the one it names, else "unknown"
    claimed_gw  TEXT,               -- the gateway the frame names, if it could be read
    claimed_seq INTEGER,            -- the seq it claims, if a valid one could be read
    signer_kid  TEXT,               -- the key id it names, if it could be read
    cause       TEXT    NOT NULL,   -- one of CAUSES
    reason      TEXT    NOT NULL,   -- at most 200 characters, never the frame's content
    received_at INTEGER NOT NULL,   -- first arrival
    times       INTEGER NOT NULL DEFAULT 1,   -- how often this exact frame arrived
    frame_hash  BLOB    NOT NULL UNIQUE,      -- SHA-256 of the whole frame
    frame       BLOB    NOT NULL,   -- the whole frame if refused for its key or signature, else its first 64 KiB
    frame_length INTEGER NOT NULL DEFAULT 0   -- the whole frame's length in bytes
);
CREATE TABLE IF NOT EXISTS chain_breaks (
    gw          TEXT    NOT NULL,
    seq         INTEGER NOT NULL,   -- the later batch of the pair that does not link
    reason      TEXT    NOT NULL,
    detected_at INTEGER NOT NULL,
    PRIMARY KEY (gw, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS declared_gaps (
    gw        TEXT    NOT NULL,
    gap_seq   INTEGER NOT NULL,     -- the gap batch that declared it
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    batches   INTEGER NOT NULL,
    records   INTEGER NOT NULL,
    from_ms   INTEGER,
    to_ms     INTEGER,
    reason    TEXT    NOT NULL,
    tags      TEXT    NOT NULL,     -- JSON list of full tag names
    tags_omitted INTEGER NOT NULL DEFAULT 0  -- tags the row covers beyond those listed (column tags_omitted)
);
CREATE INDEX IF NOT EXISTS declared_gaps_by_gw ON declared_gaps (gw, first_seq);
CREATE TABLE IF NOT EXISTS declared_outages (  -- time the gateway declared it was not collecting (outage rows)
    gw        TEXT    NOT NULL,
    gap_seq   INTEGER NOT NULL,     -- the gap batch that declared it
    from_ms   INTEGER NOT NULL,
    to_ms     INTEGER NOT NULL,
    reason    TEXT    NOT NULL,
    tags      TEXT    NOT NULL,     -- JSON list of full tag names
    tags_omitted INTEGER NOT NULL DEFAULT 0  -- tags the row covers beyond those listed (column tags_omitted)
);
CREATE INDEX IF NOT EXISTS declared_outages_by_gw ON declared_outages (gw, from_ms);
CREATE TABLE IF NOT EXISTS refused_kept (  -- per topic gateway: bytes of refused frames over 64 KiB kept whole
    gw    TEXT    PRIMARY KEY,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gateway_counters (
    gw         TEXT PRIMARY KEY,
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS catalog (  -- each gateway's signed tag catalogues, one version per catalog batch
    gw          TEXT    NOT NULL,
    cat_seq     INTEGER NOT NULL,   -- the seq of the batch that carried this version
    tag         TEXT    NOT NULL,   -- full tag name
    unit        TEXT,
    type        TEXT,
    description TEXT,
    scale       REAL,
    "offset"    REAL,
    low         REAL,               -- the plausible range, or NULL
    high        REAL,
    location    TEXT,
    PRIMARY KEY (gw, cat_seq, tag)
) WITHOUT ROWID;
"""
# What a database of an older format (1 or 2) lacks; added in place when it is opened (docs/protocol.md §6).
_ADDED_COLUMNS = {
    "batches": [("cat", "INTEGER NOT NULL DEFAULT 0")],
    "rejected": [("claimed_gw", "TEXT"), ("claimed_seq", "INTEGER"), ("signer_kid", "TEXT"),
                 ("frame_length", "INTEGER NOT NULL DEFAULT 0")],
    "declared_gaps": [("tags_omitted", "INTEGER NOT NULL DEFAULT 0")],
    "declared_outages": [("tags_omitted", "INTEGER NOT NULL DEFAULT 0")],
}
# Columns appended to the gap and outage tables after version 2 was first written: a row may lack them.
TAGS_OMITTED_COLUMN = "tags_omitted"
_REQUIRED_GAP_COLUMNS = frozenset(GAP_COLUMNS) - {TAGS_OMITTED_COLUMN}
_INDEXES = "CREATE INDEX IF NOT EXISTS rejected_by_gw ON rejected (gw, cause);"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What the store decided about one frame.

    ``ackable`` says whether ``(gw, seq)`` may be acknowledged to the gateway: true exactly when the archive
    durably holds this batch (stored now, or a duplicate of a stored one); never for a refusal.
    ``chain_breaks`` lists the breaks this frame revealed, as (seq, reason). For a refusal, ``gw`` is the
    gateway it is accounted under (the topic's), ``seq`` the seq it claims if valid, ``cause`` one of
    :data:`CAUSES` and ``signer`` the key id it names.
    """

    status: Literal["stored", "duplicate", "rejected"]
    gw: str
    seq: int | None
    reason: str | None = None
    kind: str | None = None
    records: int = 0
    chain_breaks: tuple[tuple[int, str], ...] = ()
    ackable: bool = False
    hash: bytes | None = None  # the batch hash and its prev, for stored and duplicate batches: what a signed
    prev: bytes | None = None  # ack names (agent.protocol.acks.linked_ranges)
    cause: Cause | None = None
    signer: str | None = None


# (frame, the <gw> level of its topic, the <kind> level of its topic); None where there was no topic.
Arrival = tuple[bytes, str | None, str | None]


@dataclass(frozen=True, slots=True)
class _Claims:
    """What a frame says about itself, each value type- and range-checked, None where unreadable."""

    gw: str | None = None
    seq: int | None = None
    kid: str | None = None


class _Refusal(AgentError):
    """One frame is refused; raised inside the store and turned into a ``rejected`` row, never further."""

    def __init__(self, cause: Cause, reason: str, claims: _Claims) -> None:
        super().__init__(_reason(reason))
        self.cause: Cause = cause
        self.claims = claims


def _reason(text: str) -> str:
    """A stored or logged reason: one line, at most MAX_REASON_CHARS characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS - 1] + "…"


def _wire_cause(exc: WireFormatError, malformed: Cause) -> Cause:
    """``bounds`` for a value beyond a bound of agent.protocol.limits, else ``malformed`` (``format`` for the
    frame, ``body`` for its body)."""
    return "bounds" if isinstance(exc, WireBoundsError) else malformed


def _wire_reason(exc: WireFormatError) -> str:
    """The frame code's reason, unless it wraps another library's error: that one's text may quote the
    frame's or body's bytes (a repr of the data it choked on), so only the error's kind is kept."""
    cause = exc.__cause__
    return exc.message if cause is None else f"{exc.message.split(':', 1)[0]} ({type(cause).__name__})"


def _is_int(v: object, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is_id(v: object) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_ID_CHARS


def _peek(frame: bytes) -> _Claims:
    """The gateway, seq and key a frame that did not open claims, each only if readable and within its bound
    (:func:`agent.protocol.wire.claimed_identity`, which never raises)."""
    return _Claims(*wire.claimed_identity(frame))


def _claims(batch: wire.Batch) -> _Claims:
    return _Claims(batch.gw, batch.seq, batch.kid)


class _Throttle:
    """At most one log line per key per ``period_s``; the lines held back are counted into the next one."""

    def __init__(self, clock: Clock, period_s: float = 60.0, max_keys: int = 1000) -> None:
        self.clock = clock
        self.period_s = period_s
        self.max_keys = max_keys
        self._seen: dict[tuple[str, ...], list[float]] = {}  # key -> [last logged at, held back since]

    def allow(self, *key: str) -> int | None:
        """None to hold this line back, else how many were held back before it."""
        now = self.clock.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.period_s:
            seen[1] += 1
            return None
        if seen is None and len(self._seen) >= self.max_keys:
            self._seen.clear()
        held = int(seen[1]) if seen is not None else 0
        self._seen[key] = [now, 0]
        return held


class _Bench:
    """Fairness between gateways on the store's one thread. A signed body at the bounds costs seconds of CPU
    to decode and check before it can be refused, and every gateway's frames wait behind it; only a gateway's
    key can sign one, so the key holder is whom to slow down. After ``strikes`` signed frames of a gateway in a
    row were refused for their body, its signed frames are refused before their body (cause ``benched``) for
    ``first_s``, doubling up to ``max_s`` while it goes on; a batch of it stored ends that. A genuine batch
    refused meanwhile is sent again by its gateway (no ack came) and stored once the bench is over.

    Rejected: a time budget per gateway measured on the thread, which depends on the machine's load and
    cannot stop a decode in progress; and benching on unsigned refusals, which anyone could cause."""

    def __init__(self, clock: Clock, *, strikes: int = 3, first_s: float = 30.0, max_s: float = 600.0) -> None:
        self.clock = clock
        self.strikes = strikes
        self.first_s = first_s
        self.max_s = max_s
        self._state: dict[str, list[float]] = {}  # gw -> [refused in a row, benched until, next bench seconds]

    def remaining(self, gw: str) -> float:
        """Seconds ``gw`` stays benched (0 when it is not)."""
        state = self._state.get(gw)
        return max(0.0, state[1] - self.clock.monotonic()) if state else 0.0

    def refused(self, gw: str) -> float:
        """A signed frame of ``gw`` was refused for its body; the seconds of the bench this starts, or 0."""
        state = self._state.setdefault(gw, [0, 0.0, self.first_s])
        state[0] += 1
        if state[0] < self.strikes:
            return 0.0
        seconds = state[2]
        state[:] = [0, self.clock.monotonic() + seconds, min(seconds * 2, self.max_s)]
        return seconds

    def stored(self, gw: str) -> None:
        self._state.pop(gw, None)


def coalesce(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted, merged ``[first, last]`` ranges covering ``seqs``: ``{1,2,3,7}`` -> ``[[1,3],[7,7]]``."""
    ranges: list[list[int]] = []
    for s in sorted(set(seqs)):
        if ranges and s == ranges[-1][1] + 1:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
    return ranges


def _json_value(v: Any) -> Any:
    """Row values as JSON can carry them: bytes as hex, non-finite floats as their names."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, bytes | bytearray):
        return bytes(v).hex()
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return v


def _bytes_as_hex(v: object) -> str:
    if isinstance(v, bytes | bytearray):
        return bytes(v).hex()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


_ROW_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_bytes_as_hex)


def _row_json(cols: list[str], row: list[Any]) -> str:
    """A row as a JSON object. Fast path for the common case; NaN/Infinity (not JSON) take the slow path."""
    try:
        return _ROW_ENCODER.encode(dict(zip(cols, row, strict=False)))
    except ValueError:
        return _ROW_ENCODER.encode({c: _json_value(v) for c, v in zip(cols, row, strict=False)})


def _short(h: bytes) -> str:
    return h.hex()[:16]


def _subtract(ranges: list[list[int]], holes: list[tuple[int, int]]) -> list[list[int]]:
    """``ranges`` minus the union of ``holes`` (both inclusive ranges), in one sweep over both sorted lists:
    a gateway's report stays linear in its ranges and declarations, whatever a gap batch declares (one signed
    batch of 20,000 single-seq gap rows once made a nested loop take a minute)."""
    merged: list[list[int]] = []
    for h_first, h_last in sorted(holes):
        if merged and h_first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], h_last)
        else:
            merged.append([h_first, h_last])
    out: list[list[int]] = []
    i = 0
    for first, last in sorted(ranges):
        while i < len(merged) and merged[i][1] < first:
            i += 1
        a, j = first, i
        while j < len(merged) and merged[j][0] <= last:
            if a < merged[j][0]:
                out.append([a, merged[j][0] - 1])
            a = max(a, merged[j][1] + 1)
            j += 1
        if a <= last:
            out.append([a, last])
    return out


class ReceiverStore:
    """Verified batches and their accounting in one SQLite file. Synchronous; one thread at a time.

    ``registry`` (:class:`backend.registry.KeyRegistry`) holds the keys in the same file.
    """

    def __init__(self, db_path: Path | str, *, clock: Clock | None = None,
                 max_refused_bytes: int = REFUSED_BYTES_PER_GATEWAY,
                 max_refused_bytes_total: int = REFUSED_BYTES_TOTAL) -> None:
        self.path = Path(db_path)
        self.clock = clock or SystemClock()
        # The budget for refused frames kept whole (see _KEPT_WHOLE): per topic gateway, and in all.
        self.max_refused_bytes = max_refused_bytes
        self.max_refused_bytes_total = max_refused_bytes_total
        self._throttle = _Throttle(self.clock)
        self._bench = _Bench(self.clock)
        try:
            # check_same_thread=False: the async Receiver runs every call in one dedicated worker thread,
            # which is not the thread that opened the file. Calls are never concurrent.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # the system of record: survive a power cut
            self._db.execute("PRAGMA busy_timeout=10000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise AgentError(f"the receiver database is of a newer format ({version})", path=str(self.path),
                                 hint="open it with the mine-backend version that wrote it")
            self._db.executescript(_SCHEMA)
            if version < SCHEMA_VERSION:
                self._migrate()
            self._db.executescript(_INDEXES)
            self.registry = KeyRegistry(self._db)
        except sqlite3.Error as exc:
            raise AgentError(f"cannot open the receiver database: {exc}", path=str(self.path),
                             hint="check the path, its permissions and free disk space") from exc

    def _migrate(self) -> None:
        """Bring a database of format version 1 to this one in place: add the new columns and fill them
        from what version 1 kept (its ``content`` refusals were all reused seqs)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, decl in columns:
                    if name not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
            rows = self._db.execute("SELECT id, frame FROM rejected WHERE claimed_gw IS NULL AND "
                                    "claimed_seq IS NULL AND signer_kid IS NULL").fetchall()
            for row_id, frame in rows:
                claims = _peek(bytes(frame))
                self._db.execute("UPDATE rejected SET claimed_gw = ?, claimed_seq = ?, signer_kid = ? WHERE id = ?",
                                 (claims.gw, claims.seq, claims.kid, row_id))
            self._db.execute("UPDATE rejected SET cause = 'seq_reused' WHERE cause = 'content'")
            # Older formats kept refused frames whole (format 2: all but unparsable ones, cut to 64 KiB).
            self._db.execute("UPDATE rejected SET frame_length = length(frame) WHERE frame_length = 0")
            # Format 3 and older kept refused frames whole with no budget: what they keep counts against it.
            self._db.execute("DELETE FROM refused_kept")
            self._db.execute("INSERT INTO refused_kept (gw, bytes) SELECT gw, SUM(frame_length) FROM rejected "
                             "WHERE frame_length > ? AND length(frame) = frame_length GROUP BY gw",
                             (_KEPT_REFUSED_BYTES,))
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReceiverStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ ingest

    def ingest(self, frame: bytes, *, topic_gw: str | None = None, topic_kind: str | None = None) -> IngestResult:
        """Check, decide and durably record one frame (one transaction)."""
        return self.ingest_many([(frame, topic_gw, topic_kind)])[0]

    def ingest_many(self, frames: Sequence[Arrival]) -> list[IngestResult]:
        """Check and record several frames in one transaction (one fsync), in order.

        Each item is ``(frame, topic_gw, topic_kind)``: the ``<gw>`` and ``<kind>`` levels of the MQTT topic
        the frame came on, or None when there was no topic (then the frame's own are taken). Each frame is
        decided in a savepoint of its own, so no frame can abort another; only a failure of the database
        raises (:class:`AgentError`, nothing committed). Nothing is acknowledged by the caller before this
        returns, so a crash inside it only causes redelivery.
        """
        now = int(self.clock.time() * 1000)
        results: list[IngestResult] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for frame, topic_gw, topic_kind in frames:
                    results.append(self._decide(frame, topic_gw, topic_kind, now))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AgentError(f"cannot store batches: {exc}", path=str(self.path),
                             hint="check free disk space and that no other program locks the file",
                             recoverable=True) from exc
        self._log(results)
        return results

    def _log(self, results: list[IngestResult]) -> None:
        """Refusals and chain breaks, at most one line per gateway and cause a minute (a flood of forged
        frames must not become a flood of log lines). Refusals under topic names with no registered key make
        at most one line a minute all together: throttled per name, made-up names would each log a line."""
        for r in results:
            if r.status == "rejected":
                unregistered = self._unregistered(r.gw)
                held = self._throttle.allow(*(("", "unregistered") if unregistered else (r.gw, r.cause or "")))
                if held is not None:
                    log.warning("receiver_unregistered_rejected" if unregistered else "receiver_batch_rejected",
                                gateway=r.gw, seq=r.seq, error=r.cause, reason=r.reason, signer=r.signer,
                                suppressed=held)
            for seq, reason in r.chain_breaks:
                if (held := self._throttle.allow(r.gw, "chain_break")) is not None:
                    log.error("receiver_chain_break", gateway=r.gw, seq=seq, error=reason, suppressed=held)

    def _decide(self, frame: bytes, topic_gw: str | None, topic_kind: str | None, now: int) -> IngestResult:
        """One frame in a savepoint of its own: stored, duplicate, or refused and recorded."""
        self._db.execute("SAVEPOINT frame")
        try:
            result = self._ingest_one(frame, topic_gw, topic_kind, now)
        except _Refusal as refusal:
            self._db.execute("ROLLBACK TO frame")
            result = self._refuse(frame, topic_gw, refusal, now)
        except (sqlite3.OperationalError, sqlite3.InternalError):
            raise  # the database itself (disk full, I/O, lock): the whole group fails, nothing is acked
        except Exception as exc:  # a frame no check foresaw must not stop the others
            self._db.execute("ROLLBACK TO frame")
            unforeseen = _Refusal("format", f"frame not understood ({type(exc).__name__})", _peek(frame))
            result = self._refuse(frame, topic_gw, unforeseen, now)
        self._db.execute("RELEASE frame")
        return result

    def _ingest_one(self, frame: bytes, topic_gw: str | None, topic_kind: str | None,
                    arrival: int, *, bench: bool = True) -> IngestResult:
        # Size, parse and every header value's type and bound (steps 1 to 3 of docs/protocol.md §6) are the
        # frame code's: open_frame refuses a frame beyond a bound with WireBoundsError, anything else
        # malformed with WireFormatError, and checks the kind against the protocol's list.
        try:
            batch = wire.open_frame(frame)
        except WireFormatError as exc:
            raise _Refusal(_wire_cause(exc, "format"), _wire_reason(exc), _peek(frame)) from exc
        claims = _claims(batch)
        if topic_gw is not None and batch.gw != topic_gw:
            raise _Refusal("topic", f"frame of gateway {batch.gw!r} on the topic of gateway "
                                    f"{topic_gw[:MAX_ID_CHARS]!r}", claims)
        if topic_kind is not None and batch.kind != topic_kind:
            raise _Refusal("kind", f"signed kind {batch.kind!r} on the topic kind "
                                   f"{(topic_kind or '')[:MAX_ID_CHARS]!r}", claims)
        try:
            self.registry.verify(gw=batch.gw, kid=batch.kid, alg=batch.alg, created_ms=batch.created,
                                 arrival_ms=arrival, signed=batch.signed, sig=batch.sig)
        except KeyRefused as exc:
            raise _Refusal(exc.cause, exc.message, claims) from exc

        row = self._db.execute("SELECT hash FROM batches WHERE gw=? AND seq=?",
                               (batch.gw, batch.seq)).fetchone()
        if row is not None:
            if bytes(row[0]) == batch.hash:
                self._db.execute("INSERT INTO gateway_counters (gw, duplicates) VALUES (?, 1) "
                                 "ON CONFLICT (gw) DO UPDATE SET duplicates = duplicates + 1", (batch.gw,))
                return IngestResult("duplicate", batch.gw, batch.seq, kind=batch.kind, ackable=True,
                                    hash=batch.hash, prev=batch.prev)
            raise _Refusal("seq_reused", f"seq reused with different content (stored hash "
                                         f"{_short(bytes(row[0]))}, this hash {_short(batch.hash)})", claims)
        if bench and (wait := self._bench.remaining(batch.gw)) > 0:
            raise _Refusal("benched", f"gateway benched for {wait:.0f} s more: its last signed frames were "
                                      "refused for their body", claims)
        try:
            records = self._body(batch, claims)
        except _Refusal as refusal:
            if bench and (seconds := self._bench.refused(batch.gw)):
                log.warning("receiver_gateway_benched", gateway=batch.gw, seq=batch.seq, error=refusal.cause,
                            seconds=seconds)
            raise
        self._bench.stored(batch.gw)
        self._db.execute(
            "INSERT INTO batches (gw, seq, hash, prev, kind, t0, t1, created, kid, received_at, records, "
            "frame, cat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (batch.gw, batch.seq, batch.hash, batch.prev, batch.kind, batch.t0, batch.t1, batch.created,
             batch.kid, arrival, records, frame, batch.cat),
        )
        breaks = self._check_links(batch, arrival)
        return IngestResult("stored", batch.gw, batch.seq, kind=batch.kind, records=records,
                            chain_breaks=breaks, ackable=True, hash=batch.hash, prev=batch.prev)

    def _body(self, batch: wire.Batch, claims: _Claims) -> int:
        """Decode the body and store its rows (:meth:`_store_rows`), or refuse it (``bounds``, ``body``)."""
        try:
            return self._store_rows(batch, wire.decode_body(batch))
        except WireFormatError as exc:
            raise _Refusal(_wire_cause(exc, "body"), _wire_reason(exc), claims) from exc
        except (_Refusal, sqlite3.OperationalError, sqlite3.InternalError):
            raise
        except Exception as exc:  # a body the decoder did not foresee
            raise _Refusal("body", f"body not understood ({type(exc).__name__})", claims) from exc

    def _store_rows(self, batch: wire.Batch, body: wire.Body) -> int:
        """Insert every row of every table; record gap and outage rows as declared loss and catalog rows as a
        catalogue version. Returns the measurement rows (those of every other table).

        decode_body has checked the rows' count, the table, column and tag names, each tag index and each time
        offset (``ts``, ``start``). Two checks remain here, because the decoder does not make them: string
        values in characters (it bounds their UTF-8 bytes, on the length prefix, before decoding), and the
        absolute time that places a row (``from_ms``), which a stored row's ``ts`` column is taken from."""
        claims = _claims(batch)
        measurements = 0
        out: list[tuple[str, int, str, str | None, int, str]] = []
        for name, table in body.tables.items():
            cols = table.cols
            tag_i = cols.index(TAG_COLUMN) if TAG_COLUMN in cols else -1
            time_i = [i for i, c in enumerate(cols) if c in ROW_TIME_COLUMNS]
            ts_i = time_i[0] if time_i else -1
            absolute_i = [i for i in time_i if cols[i] not in OFFSET_COLUMNS]
            for r in table.rows:
                data = _row_json(cols, r)
                if len(data) > MAX_STRING_CHARS:  # a shorter row cannot hold a string over the limit
                    _check_strings(r, name, claims)
                for i in absolute_i:
                    v = r[i]
                    if v is not None and not (type(v) is int and 0 <= v <= MAX_TIME_MS):
                        raise _Refusal("bounds", f"a time in table {name!r} is not an integer in [0, 2**53]",
                                       claims)
                tag = r[tag_i] if tag_i >= 0 else None
                ts = r[ts_i] if ts_i >= 0 and type(r[ts_i]) is int else batch.t0
                out.append((batch.gw, batch.seq, name, tag, ts, data))
            if name == GAP_TABLE:
                self._declare_gaps(batch, table)
            elif name == OUTAGE_TABLE:
                self._declare_outages(batch, table)
            elif name == CATALOG_TABLE:
                self._store_catalog(batch, table)
            else:
                measurements += len(table.rows)
        self._db.executemany("INSERT INTO records (gw, seq, tbl, tag, ts, data) VALUES (?, ?, ?, ?, ?, ?)",
                             out)
        return measurements

    def _declare_gaps(self, batch: wire.Batch, table: wire.Table) -> None:
        """Each ``gap`` row as a declared gap. A row is well formed when it has every column of GAP_COLUMNS
        with its type: ``first_seq`` <= ``last_seq`` seqs before this batch's own, ``batches`` and ``records``
        non-negative ints, ``from_ms`` and ``to_ms`` ints in [0, 2**53], a text ``reason`` and a list of tag
        names, and ``tags_omitted`` a non-negative int where the row has it (it was appended; a row without it
        lists every tag); anything else is a malformed body (a missing or mistyped count must not become a 0 in
        the declared loss)."""
        claims = _claims(batch)
        if not set(table.cols) >= _REQUIRED_GAP_COLUMNS:
            raise _Refusal("body", f"gap table in batch seq {batch.seq} lacks a column", claims)
        for r in table.rows:
            g = dict(zip(table.cols, r, strict=False))
            first, last = g["first_seq"], g["last_seq"]
            counts = [g["batches"], g["records"]]
            times = [g["from_ms"], g["to_ms"]]
            reason, tags, omitted = g["reason"], g["tags"], g.get(TAGS_OMITTED_COLUMN, 0)
            if not (_is_int(first, 1, MAX_SEQ) and _is_int(last, 1, MAX_SEQ)
                    and all(_is_int(c, 0, MAX_SEQ) for c in counts)
                    and all(_is_int(t, 0, MAX_TIME_MS) for t in times) and _is_int(omitted, 0, MAX_SEQ)
                    and type(reason) is str and type(tags) is list and all(type(t) is str for t in tags)):
                raise _Refusal("body", f"malformed gap row in batch seq {batch.seq}", claims)
            if last < first or last >= batch.seq:
                raise _Refusal("body", f"gap row in batch seq {batch.seq} declares an impossible range "
                                       f"{first}..{last} (a gap batch declares only earlier seqs)", claims)
            self._db.execute(
                "INSERT INTO declared_gaps (gw, gap_seq, first_seq, last_seq, batches, records, from_ms, "
                "to_ms, reason, tags, tags_omitted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (batch.gw, batch.seq, first, last, *counts, *times, reason, json.dumps(tags), omitted))

    def _declare_outages(self, batch: wire.Batch, table: wire.Table) -> None:
        """Each ``outage`` row as a declared collection gap: a time, not seqs, so it never changes ``missing``.
        A row that is not ``from_ms <= to_ms`` (ints in [0, 2**53]), a text reason, a list of tag names and,
        where the row has it, a non-negative int ``tags_omitted`` is a malformed body."""
        rows = []
        for r in table.rows:
            o = dict(zip(table.cols, r, strict=False))
            start, end, reason, tags = o.get("from_ms"), o.get("to_ms"), o.get("reason"), o.get("tags")
            omitted = o.get(TAGS_OMITTED_COLUMN, 0)
            if not (type(start) is int and type(end) is int and 0 <= start <= end <= MAX_TIME_MS
                    and isinstance(reason, str) and isinstance(tags, list) and _is_int(omitted, 0, MAX_SEQ)
                    and all(isinstance(t, str) for t in tags)):
                raise _Refusal("body", f"malformed outage row in batch seq {batch.seq}", _claims(batch))
            rows.append((batch.gw, batch.seq, start, end, reason, json.dumps(tags), omitted))
        self._db.executemany("INSERT INTO declared_outages (gw, gap_seq, from_ms, to_ms, reason, tags, "
                             "tags_omitted) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def _store_catalog(self, batch: wire.Batch, table: wire.Table) -> None:
        """One catalogue version: this batch's seq names it. A value of the wrong type is kept as NULL here
        (the row itself is in ``records`` as sent); a row without a tag is a malformed body."""
        rows = []
        for r in table.rows:
            c = dict(zip(table.cols, r, strict=False))
            tag = c.get(TAG_COLUMN)
            # The body decoder resolved the index to one of the body's tag names, each within MAX_TAG_CHARS.
            if not isinstance(tag, str) or not tag:
                raise _Refusal("body", f"a catalogue row in batch seq {batch.seq} has no tag",
                               _claims(batch))
            rows.append((batch.gw, batch.seq, *(_catalog_value(col, c.get(col)) for col in CATALOG_COLUMNS)))
        self._db.executemany(  # the columns of CATALOG_COLUMNS, in its order ("offset" is an SQL keyword)
            'INSERT OR REPLACE INTO catalog (gw, cat_seq, tag, unit, type, description, scale, "offset", low, '
            "high, location) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _check_links(self, batch: wire.Batch, now: int) -> tuple[tuple[int, str], ...]:
        """Check the links to whichever neighbours are already present (see the module docstring)."""
        breaks: list[tuple[int, str]] = []
        if batch.seq == 1:
            if batch.prev != wire.GENESIS_HASH:
                breaks.append((1, f"seq 1 must have prev = 32 zero bytes, has {_short(batch.prev)}"))
        else:
            before = self._db.execute("SELECT hash FROM batches WHERE gw=? AND seq=?",
                                      (batch.gw, batch.seq - 1)).fetchone()
            if before is not None and bytes(before[0]) != batch.prev:
                breaks.append((batch.seq, f"prev {_short(batch.prev)} is not the hash of seq {batch.seq - 1} "
                                          f"({_short(bytes(before[0]))})"))
        if batch.seq < MAX_SEQ:
            after = self._db.execute("SELECT prev FROM batches WHERE gw=? AND seq=?",
                                     (batch.gw, batch.seq + 1)).fetchone()
            if after is not None and bytes(after[0]) != batch.hash:
                breaks.append((batch.seq + 1, f"prev {_short(bytes(after[0]))} is not the hash of seq "
                                              f"{batch.seq} ({_short(batch.hash)})"))
        self._db.executemany(
            "INSERT OR IGNORE INTO chain_breaks (gw, seq, reason, detected_at) VALUES (?, ?, ?, ?)",
            [(batch.gw, seq, reason, now) for seq, reason in breaks],
        )
        return tuple(breaks)

    def _refuse(self, frame: bytes, topic_gw: str | None, refusal: _Refusal, now: int) -> IngestResult:
        """Record a refused frame once (by its SHA-256) under the topic's gateway; the same bytes again only
        bump ``times``. Never ackable."""
        claims = refusal.claims
        gw = (topic_gw if topic_gw is not None else claims.gw or UNKNOWN_GATEWAY)[:MAX_ID_CHARS] or UNKNOWN_GATEWAY
        result = IngestResult("rejected", gw, claims.seq, reason=refusal.message, cause=refusal.cause,
                              signer=claims.kid)
        digest = hashlib.sha256(frame).digest()
        if self._db.execute("UPDATE rejected SET times = times + 1 WHERE frame_hash = ?", (digest,)).rowcount:
            return result
        # Only a frame refused for its key or signature can turn out genuine later (reverify); of any other, a
        # prefix with the whole frame's hash and length is evidence enough of what it was.
        kept = frame[:_KEPT_REFUSED_BYTES]
        if refusal.cause in _KEPT_WHOLE and _KEPT_REFUSED_BYTES < len(frame) <= MAX_FRAME_BYTES:
            if self._keep_whole(gw, len(frame)):
                kept = frame
            elif (held := self._throttle.allow("refusal_budget")) is not None:
                log.warning("receiver_refusal_budget_spent", gateway=gw, error=refusal.cause, suppressed=held,
                            per_gateway=self.max_refused_bytes, total=self.max_refused_bytes_total)
        self._db.execute(
            "INSERT INTO rejected (gw, claimed_gw, claimed_seq, signer_kid, cause, reason, received_at, "
            "frame_hash, frame, frame_length) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (gw, claims.gw, claims.seq, claims.kid, refusal.cause, refusal.message, now, digest, kept, len(frame)),
        )
        return result

    def _keep_whole(self, gw: str, size: int) -> bool:
        """Whether a refused frame of ``size`` bytes fits the budget for frames kept whole, and if so charge it
        to ``gw`` (the topic gateway). Every gateway with no registered key shares one gateway's budget, so
        made-up topic names cannot spend the budget of the registered ones."""
        total, mine = self._db.execute(
            "SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(CASE WHEN gw = ? OR (? AND "
            "NOT EXISTS (SELECT 1 FROM gateway_keys k WHERE k.gw = r.gw) AND "
            "NOT EXISTS (SELECT 1 FROM batches b WHERE b.gw = r.gw)) THEN bytes END), 0) FROM refused_kept r",
            (gw, self._unregistered(gw))).fetchone()
        if mine + size > self.max_refused_bytes or total + size > self.max_refused_bytes_total:
            return False
        self._db.execute("INSERT INTO refused_kept (gw, bytes) VALUES (?, ?) "
                         "ON CONFLICT (gw) DO UPDATE SET bytes = bytes + excluded.bytes", (gw, size))
        return True

    def _unregistered(self, gw: str) -> bool:
        """True for a gateway with neither a registered key nor a stored batch (see :meth:`report`)."""
        return self._db.execute("SELECT NOT EXISTS (SELECT 1 FROM gateway_keys WHERE gw = ?1) AND "
                                "NOT EXISTS (SELECT 1 FROM batches WHERE gw = ?1)", (gw,)).fetchone()[0] == 1

    def reverify(self) -> list[IngestResult]:
        """Decide again every frame refused for its key or signature (``unknown_key``, ``wrong_gateway``,
        ``signature``) against the registry as it is now, as of the frame's first arrival. Frames that now
        pass move out of ``rejected`` into the archive; the others stay, with their cause brought up to date
        (for example ``unknown_key`` becoming ``key_not_valid``). A frame that was refused once the budget
        for frames kept whole was spent kept only its first 64 KiB, so it cannot be decided again: it stays
        as it is (the report counts such frames as ``not_kept_whole``)."""
        rows = self._db.execute("SELECT id, gw, received_at, frame, frame_length FROM rejected WHERE cause IN "
                                "('unknown_key', 'wrong_gateway', 'signature') AND length(frame) = frame_length "
                                "ORDER BY id").fetchall()
        results = []
        for row_id, gw, received_at, frame, length in rows:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("SAVEPOINT frame")
                try:
                    result = self._ingest_one(bytes(frame), gw, None, received_at, bench=False)
                except _Refusal as refusal:
                    self._db.execute("ROLLBACK TO frame")
                    self._db.execute("UPDATE rejected SET cause = ?, reason = ?, signer_kid = "
                                     "COALESCE(signer_kid, ?) WHERE id = ?",
                                     (refusal.cause, refusal.message, refusal.claims.kid, row_id))
                    result = IngestResult("rejected", gw, refusal.claims.seq, reason=refusal.message,
                                          cause=refusal.cause, signer=refusal.claims.kid)
                else:
                    self._db.execute("DELETE FROM rejected WHERE id = ?", (row_id,))
                    if length > _KEPT_REFUSED_BYTES:  # it was charged to the budget for frames kept whole
                        self._db.execute("UPDATE refused_kept SET bytes = MAX(bytes - ?, 0) WHERE gw = ?",
                                         (length, gw))
                self._db.execute("RELEASE frame")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            results.append(result)
        return results

    def audit(self, gw: str | None = None) -> dict[str, Any]:
        """Verify every stored batch again from its stored bytes: hash, and signature by a key that the
        registry, as it is now, lets sign for that gateway at the batch's creation and arrival. A revoked
        key's batches that arrived before the revocation pass; ``failed`` lists those that no longer do."""
        sql = "SELECT gw, seq, hash, received_at, frame FROM batches"
        rows = self._db.execute(sql + " WHERE gw = ? ORDER BY gw, seq" if gw else sql + " ORDER BY gw, seq",
                                (gw,) if gw else ())
        checked, failed = 0, []
        for b_gw, seq, stored_hash, received_at, frame in rows:
            checked += 1
            try:
                batch = wire.open_frame(bytes(frame))
                if batch.hash != bytes(stored_hash) or (batch.gw, batch.seq) != (b_gw, seq):
                    raise _Refusal("format", "stored bytes do not match the stored batch", _Claims())
                self.registry.verify(gw=batch.gw, kid=batch.kid, alg=batch.alg, created_ms=batch.created,
                                     arrival_ms=received_at, signed=batch.signed, sig=batch.sig)
            except (KeyRefused, _Refusal, WireFormatError) as exc:
                cause = exc.cause if isinstance(exc, KeyRefused | _Refusal) else "format"
                failed.append({"gw": b_gw, "seq": seq, "cause": cause, "reason": _reason(exc.message)})
        return {"checked": checked, "failed": failed}

    # ------------------------------------------------------------------ queries

    def gateways(self) -> list[str]:
        """The gateways the archive knows: those with a registered key or a stored batch. A topic name that has
        neither is not one, whatever was refused under it (see :meth:`report`)."""
        rows = self._db.execute(
            "SELECT gw FROM batches UNION SELECT gw FROM gateway_counters UNION SELECT gw FROM gateway_keys "
            "ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def report(self) -> dict[str, Any]:
        """Per gateway: what was stored, duplicated, refused (and by whose key), broken, missing, declared
        lost (batches) and declared not collected (time), and the status of its registered keys.

        ``missing`` is every seq from 1 to the highest stored seq that is neither stored nor inside a declared
        gap; a refused seq is therefore also missing until a valid copy arrives.

        Frames refused under a topic gateway with neither a registered key nor a stored batch are not a
        gateway's: they are summed up in ``unregistered`` (frames, deliveries, bytes, by cause, how many
        names, and the :data:`REPORT_UNREGISTERED` names with the most frames), so junk published under
        thousands of made-up names makes one entry, not thousands of gateways.
        """
        now = int(self.clock.time() * 1000)
        return {"gateways": {gw: self._gateway_report(gw, now) for gw in self.gateways()},
                "unregistered": self._unregistered_report()}

    def _unregistered_report(self) -> dict[str, Any]:
        where = ("FROM rejected r WHERE NOT EXISTS (SELECT 1 FROM gateway_keys k WHERE k.gw = r.gw) "
                 "AND NOT EXISTS (SELECT 1 FROM batches b WHERE b.gw = r.gw)")
        frames, deliveries, sent, kept, names = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(times), 0), COALESCE(SUM(frame_length), 0), "
            "COALESCE(SUM(length(frame)), 0), COUNT(DISTINCT gw) " + where).fetchone()
        by_cause = dict(self._db.execute("SELECT cause, COUNT(*) " + where + " GROUP BY cause ORDER BY 1"))
        sample = [{"gw": gw, "frames": n} for gw, n in self._db.execute(
            "SELECT gw, COUNT(*) " + where + " GROUP BY gw ORDER BY 2 DESC, 1 LIMIT ?", (REPORT_UNREGISTERED,))]
        return {"frames": frames, "deliveries": deliveries, "bytes": sent, "kept_bytes": kept,
                "by_cause": by_cause, "gateways": names, "sample": sample}

    def _gateway_report(self, gw: str, now: int) -> dict[str, Any]:
        db = self._db
        batches, records, last_seq = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(records), 0), MAX(seq) FROM batches WHERE gw=?", (gw,)).fetchone()
        dup = db.execute("SELECT duplicates FROM gateway_counters WHERE gw=?", (gw,)).fetchone()
        rejected = [{"seq": s, "cause": c, "reason": r, "claimed_gw": g, "signer": k, "times": n}
                    for s, c, r, g, k, n in reversed(db.execute(
                        "SELECT claimed_seq, cause, reason, claimed_gw, signer_kid, times FROM rejected "
                        "WHERE gw=? ORDER BY id DESC LIMIT ?", (gw, REPORT_REFUSALS)).fetchall())]
        frames, deliveries, sent, kept, cut = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(times), 0), COALESCE(SUM(frame_length), 0), "
            "COALESCE(SUM(length(frame)), 0), COUNT(*) FILTER (WHERE cause IN ('unknown_key', 'wrong_gateway', "
            "'signature') AND length(frame) < frame_length) FROM rejected WHERE gw=?", (gw,)).fetchone()
        by_cause = dict(db.execute("SELECT cause, COUNT(*) FROM rejected WHERE gw=? GROUP BY cause ORDER BY 1",
                                   (gw,)).fetchall())
        by_signer = dict(db.execute("SELECT signer_kid, COUNT(*) FROM rejected WHERE gw=? AND signer_kid IS NOT "
                                    "NULL GROUP BY signer_kid ORDER BY 1", (gw,)).fetchall())
        breaks = [{"seq": s, "reason": r} for s, r in
                  db.execute("SELECT seq, reason FROM chain_breaks WHERE gw=? ORDER BY seq", (gw,))]
        outages = db.execute("SELECT from_ms, to_ms, reason, json_array_length(tags) + tags_omitted "
                             "FROM declared_outages "
                             "WHERE gw=? ORDER BY from_ms, gap_seq, rowid", (gw,)).fetchall()
        gaps = db.execute("SELECT first_seq, last_seq, batches, records, reason FROM declared_gaps "
                          "WHERE gw=? ORDER BY first_seq, gap_seq", (gw,)).fetchall()
        return {
            "batches": batches,
            "records": records,
            "duplicates": dup[0] if dup else 0,
            "rejected": rejected,
            "refusals": {"frames": frames, "deliveries": deliveries, "bytes": sent, "kept_bytes": kept,
                         "not_kept_whole": cut, "by_cause": by_cause, "by_signer": by_signer},
            "chain_breaks": breaks,
            "missing": _subtract(self._absent(gw), [(g[0], g[1]) for g in gaps]),
            "declared_gaps": [{"first_seq": g[0], "last_seq": g[1], "batches": g[2], "records": g[3],
                               "reason": g[4]} for g in gaps],
            "declared_outages": [{"from_ms": a, "to_ms": b, "reason": r, "tags_count": n} for a, b, r, n in outages],
            "last_seq": last_seq,
            "keys": [{k: v for k, v in e.as_dict(now).items() if k not in ("gw", "key", "alg")}
                     for e in self.registry.entries(gw)],
            "catalog": self._catalog_summary(gw),
        }

    def _catalog_summary(self, gw: str) -> dict[str, Any]:
        """The newest catalogue version (its seq and how many tags it names) and how many stored batches
        refer to a catalogue the archive does not hold (sent, but refused or not arrived yet)."""
        cat_seq, tags = self._db.execute(
            "SELECT cat_seq, COUNT(*) FROM catalog WHERE gw = ? GROUP BY cat_seq ORDER BY cat_seq DESC LIMIT 1",
            (gw,)).fetchone() or (None, 0)
        unknown = self._db.execute(
            "SELECT COUNT(*) FROM batches b WHERE b.gw = ? AND b.cat > 0 AND NOT EXISTS "
            "(SELECT 1 FROM catalog c WHERE c.gw = b.gw AND c.cat_seq = b.cat)", (gw,)).fetchone()[0]
        return {"cat_seq": cat_seq, "tags": tags, "batches_without_catalog": unknown}

    def _absent(self, gw: str) -> list[list[int]]:
        """Seq ranges in [1, max stored seq] with no stored batch, found by SQL without loading every seq."""
        rows = self._db.execute(
            "SELECT prev_seq + 1, seq - 1 FROM ("
            "  SELECT seq, LAG(seq, 1, 0) OVER (ORDER BY seq) AS prev_seq FROM batches WHERE gw=?"
            ") WHERE seq - prev_seq > 1 ORDER BY seq", (gw,)).fetchall()
        return [[a, b] for a, b in rows]

    def records(self, *, tag: str | None = None, gw: str | None = None,
                limit: int = 100) -> Iterator[dict[str, Any]]:
        """Stored rows, newest first, as ``{"gw", "seq", "table", "tag", "ts", **columns}``; a row with a
        tag also has ``unit``: the tag's unit in the catalogue its batch refers to (None if it refers to
        none, or the catalogue does not name the tag), unless the row has a ``unit`` column of its own."""
        where, params = [], []
        if tag is not None:
            where.append("r.tag = ?")
            params.append(tag)
        if gw is not None:
            where.append("r.gw = ?")
            params.append(gw)
        sql = ("SELECT r.gw, r.seq, r.tbl, r.tag, r.ts, r.data, c.unit FROM records r "
               "LEFT JOIN batches b ON b.gw = r.gw AND b.seq = r.seq "
               "LEFT JOIN catalog c ON c.gw = r.gw AND c.cat_seq = b.cat AND c.tag = r.tag")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.ts DESC, r.id DESC LIMIT ?"
        for g, seq, tbl, t, ts, data, unit in self._db.execute(sql, [*params, limit]):
            row = {"gw": g, "seq": seq, "table": tbl, "tag": t, "ts": ts, **json.loads(data)}
            if t is not None:
                row.setdefault("unit", unit)
            yield row

    def catalog(self, gw: str, cat_seq: int | None = None) -> dict[str, dict[str, Any]]:
        """A gateway's tag catalogue, version ``cat_seq`` (default: the newest stored), by full tag name."""
        if cat_seq is None:
            cat_seq = self._db.execute("SELECT MAX(cat_seq) FROM catalog WHERE gw = ?", (gw,)).fetchone()[0]
        rows = self._db.execute('SELECT tag, unit, type, description, scale, "offset", low, high, location '
                                "FROM catalog WHERE gw = ? AND cat_seq = ? ORDER BY tag", (gw, cat_seq))
        return {r[0]: dict(zip(CATALOG_COLUMNS[1:], r[1:], strict=True)) for r in rows}


_CATALOG_NUMBERS = frozenset({"scale", "offset", "low", "high"})


def _catalog_value(column: str, v: object) -> object:
    """A catalogue value of the type its column stores (text or a finite number), else None."""
    if column in _CATALOG_NUMBERS:
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
        return None
    return v if isinstance(v, str) else None


def _check_strings(row: list[Any], table: str, claims: _Claims) -> None:
    """No string in ``row`` (a value, or one at any depth inside a list or map value, map keys included) is
    longer than MAX_STRING_CHARS. The walk is iterative: nesting depth is bounded by the body's value count
    only, which is far deeper than Python's recursion limit."""
    stack: list[Any] = [row]
    while stack:
        v = stack.pop()
        if type(v) is str:
            if len(v) > MAX_STRING_CHARS:
                raise _Refusal("bounds", f"a value in table {table!r} is longer than {MAX_STRING_CHARS} "
                                         "characters", claims)
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v)
            stack.extend(v.values())


# ---------------------------------------------------------------------- network side
# BrokerAddress, parse_broker_url and TlsFiles, which the Receiver takes, are defined with the rest of the MQTT
# connection code in agent.protocol.mqtt and exported here as well.


@dataclass(slots=True)
class ReceiverStats:
    connected: bool = False
    received: int = 0
    retained: int = 0  # retained messages on batch topics, dropped unread (a gateway never sends them)
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks_published: int = 0  # signed ack messages
    reconnects: int = 0
    last_error: str | None = None
    by_gateway: dict[str, int] = field(default_factory=dict)  # batches held (stored or duplicate) per gateway


class Receiver:
    """Subscribe, verify and store, then acknowledge; reconnect with capped backoff until cancelled.

    Use ``await receiver.run()``; cancel the task to stop. The store is used from one worker thread so the
    event loop never waits on an fsync. ``ack_signer`` is the archive key: with it, every batch the store holds
    (stored now or a duplicate of a stored one) is acknowledged to its gateway in signed acks; without it
    (gateways in broker mode) nothing is published on the ack topics.
    """

    def __init__(
        self,
        broker_url: str,
        store: ReceiverStore,
        *,
        prefix: str = "mine",
        ack_signer: BatchSigner | None = None,
        client_id: str = "mine-receiver",
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
        ack_interval_s: float = 0.1,
        max_frames_per_commit: int = 256,
        clock: Clock | None = None,
    ) -> None:
        self.address = parse_broker_url(broker_url)
        if tls is not None and not self.address.tls:
            raise AgentError("TLS files given for a plain mqtt:// broker URL", key="--broker",
                             hint="use mqtts://HOST:PORT to connect with TLS")
        self.store = store
        self.prefix = prefix.rstrip("/")
        self.ack_signer = ack_signer
        self.clock: Clock = clock or SystemClock()
        self.client_id = client_id
        self.username = username
        self.password = password
        self.tls = tls or TlsFiles()
        self.keepalive_s = keepalive_s
        self.timeout_s = timeout_s
        self.ack_interval_s = ack_interval_s
        self.max_frames_per_commit = max_frames_per_commit
        self.stats = ReceiverStats()
        # gw -> seq -> (hash, prev) of batches the store holds and the gateway has not been told about yet.
        self._pending_acks: dict[str, dict[int, tuple[bytes, bytes]]] = {}
        self._ack_wakeup = asyncio.Event()
        self._throttle = _Throttle(self.clock)
        self.subscribed = asyncio.Event()  # set while subscribed; tests wait on it

    @property
    def topic_filter(self) -> str:
        return f"{self.prefix}/+/batch/#"

    def _topic_levels(self, topic: str) -> tuple[str, str]:
        """The ``<gw>`` and ``<kind>`` of ``<prefix>/<gw>/batch/<kind>``; the kind is whatever follows
        ``batch/`` (empty, or several levels, on a malformed topic: the store then refuses the frame)."""
        gw, _, rest = topic[len(self.prefix) + 1:].partition("/")
        return gw, rest.partition("/")[2]

    async def _make_client(self) -> Any:
        settings = BrokerSettings(
            self.address.host, self.address.port, username=self.username, password=self.password,
            tls=self.tls if self.address.tls else None, client_id=self.client_id, clean_session=False,
            keepalive_s=self.keepalive_s, connect_timeout_s=self.timeout_s,
        )
        # PUBACK only after the store's commit (ack_message in _consume).
        return await create_client(settings, manual_ack=True, pending_calls_threshold=1000)

    async def run(self) -> None:
        import aiomqtt

        backoff = Backoff(0.5, 30.0)
        client = await self._make_client()
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-store")
        outage_logged = False
        try:
            while True:
                failed: BaseException | None = None
                try:
                    async with client:
                        await client.subscribe(self.topic_filter, qos=1, timeout=self.timeout_s)
                        self.stats.connected = True
                        self.subscribed.set()
                        backoff.reset()
                        log.info("receiver_connected", broker=f"{self.address.host}:{self.address.port}",
                                 topic=self.topic_filter, recovered=outage_logged)
                        outage_logged = False
                        async with TaskGroup() as tg:
                            tg.create_task(self._consume(client, executor), name="receiver.consume")
                            if self.ack_signer is not None:
                                tg.create_task(self._publish_acks(client), name="receiver.acks")
                except* aiomqtt.MqttError as group:  # connect, subscribe, a lost link or a publish timeout
                    failed = group.exceptions[0]
                except* AgentError as group:
                    # The store refused a commit (disk full, I/O error). Nothing of it was acknowledged, so
                    # leaving the connection makes the broker deliver those frames again when we are back.
                    failed = group.exceptions[0]
                self.stats.connected = False
                self.subscribed.clear()
                if failed is None:  # pragma: no cover - the tasks only end by an error or cancellation
                    continue
                self.stats.reconnects += 1
                self.stats.last_error = str(failed)
                if not outage_logged:
                    store_failed = isinstance(failed, AgentError)
                    event = "receiver_store_failed" if store_failed else "receiver_disconnected"
                    log.warning(event, error=str(failed), broker=f"{self.address.host}:{self.address.port}")
                    outage_logged = True
                await asyncio.sleep(backoff.next())
        finally:
            self.stats.connected = False
            self.subscribed.clear()
            # Wait for a commit in progress: the store must not be closed under it.
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)

    async def _consume(self, client: Any, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        messages = client.messages
        async for first in messages:
            chunk = [first]
            while len(messages) and len(chunk) < self.max_frames_per_commit:
                chunk.append(await anext(messages))
            items = [(bytes(m.payload), *self._topic_levels(m.topic.value)) for m in chunk if not m.retain]
            self._drop_retained([m for m in chunk if m.retain])
            self.stats.received += len(items)
            results = await loop.run_in_executor(executor, self.store.ingest_many, items) if items else []
            # Committed: now the broker may forget them (a crash before this line means redelivery).
            for m in chunk:
                ack_message(client, m)
            for r in results:
                self._count(r)
                if (self.ack_signer is not None and r.ackable and r.seq is not None and r.hash is not None
                        and r.prev is not None):
                    self._pending_acks.setdefault(r.gw, {}).setdefault(r.seq, (r.hash, r.prev))
            if self._pending_acks:
                self._ack_wakeup.set()

    def _drop_retained(self, retained: list[Any]) -> None:
        """Count retained messages on batch topics, which are acknowledged to the broker but never decoded.

        A gateway never publishes a batch retained, so a retained one is not a gateway's; and the broker
        hands every retained message to each new subscription, so a hostile frame planted retained would
        otherwise be paid for again at every receiver start and reconnect."""
        for m in retained:
            self.stats.retained += 1
            if (held := self._throttle.allow("retained")) is not None:
                log.warning("receiver_retained_dropped", gateway=self._topic_levels(m.topic.value)[0][:MAX_ID_CHARS],
                            suppressed=held)

    def _count(self, r: IngestResult) -> None:
        if r.status == "stored":
            self.stats.stored += 1
        elif r.status == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.rejected += 1
        if r.ackable:  # a refusal's gateway is only the topic's name, anyone's to make up
            self.stats.by_gateway[r.gw] = self.stats.by_gateway.get(r.gw, 0) + 1

    async def _publish_acks(self, client: Any) -> None:
        """Every ``ack_interval_s`` at most, signed acks per gateway covering what was decided since: the
        hash-linked runs of :func:`agent.protocol.acks.linked_ranges`, at most ``MAX_ACK_RANGES`` a message."""
        signer = self.ack_signer
        assert signer is not None
        if self._pending_acks:
            self._ack_wakeup.set()  # left over from a connection that failed before publishing them
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            await asyncio.sleep(self.ack_interval_s)  # let a burst coalesce into one message
            pending, self._pending_acks = self._pending_acks, {}
            try:
                for gw in list(pending):
                    runs = acks.linked_ranges((seq, h, p) for seq, (h, p) in pending[gw].items())
                    issued = int(self.clock.time() * 1000)
                    for i in range(0, len(runs), acks.MAX_ACK_RANGES):
                        payload = acks.encode_ack(signer, gw=gw, ranges=runs[i:i + acks.MAX_ACK_RANGES],
                                                  issued=issued)
                        await cancellable(client.publish(f"{self.prefix}/{gw}/ack", payload, qos=1,
                                                         timeout=self.timeout_s))
                        self.stats.acks_published += 1
                    del pending[gw]
            finally:
                # Whatever was not confirmed published goes out again on the next connection; an ack sent
                # twice is harmless, an ack never sent keeps the batch on the gateway until it sends it again.
                for gw, held in pending.items():
                    mine = self._pending_acks.setdefault(gw, {})
                    for seq, links in held.items():
                        mine.setdefault(seq, links)
