"""The reference receiver: verify every batch, store it durably, account for every sequence number.

This is the backend side of docs/protocol.md, written to be read next to it. Two parts:

* :class:`ReceiverStore` is the system of record: synchronous, no network, one SQLite file in WAL mode with
  ``synchronous=FULL`` (a batch it has acknowledged survives a power cut of the backend). It opens and
  verifies each frame, decides *stored* / *duplicate* / *rejected*, and answers "what do we have, what is
  missing, what did the gateway declare lost, what did we refuse and why" (:meth:`ReceiverStore.report`).
* :class:`Receiver` subscribes to ``<prefix>/+/batch/#`` (QoS 1, persistent session), feeds the store and,
  only after the store's commit, acknowledges: the MQTT PUBACK to the broker (manual acknowledgement, so a
  receiver crash before the commit makes the broker deliver again) and, given the archive key, the signed ack
  on ``<prefix>/<gw>/ack`` (:mod:`agent.protocol.acks`) that lets the gateway delete the batch from its
  buffer. An ack names hash-linked runs of batches, so it can only be produced from what the store holds.

Chain verification works with batches in any order, because they do not arrive in order: alarm batches
overtake data batches, and a backlog drained after an outage arrives after live data. When seq ``n`` is
stored, the store checks ``n.prev == hash(n-1)`` if ``n-1`` is present and ``hash(n) == (n+1).prev`` if
``n+1`` is present; each pair of neighbours is therefore checked exactly once, whichever came second. Seq 1
must point at the genesis hash. A mismatch is recorded as a chain break (the batch itself is still stored:
its signature is valid, and the break is evidence to keep, not to throw away).

Why a rejected frame is kept (bytes and reason) and acknowledged: resending it would not change the outcome,
and the gateway must not hold its buffer hostage to a frame we will never accept. Keeping the bytes means a
frame refused for an unknown key can be checked again once the key is trusted
(:meth:`ReceiverStore.reverify`).

Why ``missing`` counts only stored batches: the highest seq is taken from batches whose signature verified,
so a forged frame claiming seq 10**9 cannot invent a billion missing batches.
"""

from __future__ import annotations

__all__ = [
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
import contextlib
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
from agent.core.errors import AgentError, SignatureError, WireFormatError
from agent.protocol import acks, wire
from agent.protocol.mqtt import (
    BrokerAddress,
    BrokerSettings,
    TlsFiles,
    ack_message,
    create_client,
    parse_broker_url,
)
from agent.protocol.signing import BatchSigner, TrustStore
from agent.protocol.tables import GAP_TABLE, ROW_TIME_COLUMNS

log = structlog.get_logger(__name__)

UNKNOWN_GATEWAY = "unknown"

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
    records     INTEGER NOT NULL,   -- rows of measurement tables (every table but "gap")
    frame       BLOB    NOT NULL,   -- the frame exactly as received: the evidence, verifiable by anyone
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
    gw          TEXT    NOT NULL,   -- the gateway the frame names, or "unknown"
    seq         INTEGER,            -- the seq the frame claims, if it could be read
    cause       TEXT    NOT NULL,   -- format | topic | signature | content
    reason      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    times       INTEGER NOT NULL DEFAULT 1,   -- how often this exact frame arrived
    frame_hash  BLOB    NOT NULL UNIQUE,      -- SHA-256 of the whole frame
    frame       BLOB    NOT NULL
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
    tags      TEXT    NOT NULL      -- JSON list of full tag names
);
CREATE INDEX IF NOT EXISTS declared_gaps_by_gw ON declared_gaps (gw, first_seq);
CREATE TABLE IF NOT EXISTS gateway_counters (
    gw         TEXT PRIMARY KEY,
    duplicates INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What the store decided about one frame.

    ``ackable`` says whether ``(gw, seq)`` may be acknowledged to the gateway: the decision is durable and a
    resend would not change it. ``chain_breaks`` lists the breaks this frame revealed, as (seq, reason).
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
    """``ranges`` minus the union of ``holes`` (both inclusive ranges)."""
    out: list[list[int]] = []
    for first, last in ranges:
        pieces = [[first, last]]
        for h_first, h_last in holes:
            nxt: list[list[int]] = []
            for a, b in pieces:
                if h_last < a or h_first > b:
                    nxt.append([a, b])
                    continue
                if a < h_first:
                    nxt.append([a, h_first - 1])
                if h_last < b:
                    nxt.append([h_last + 1, b])
            pieces = nxt
        out.extend(pieces)
    return out


class ReceiverStore:
    """Verified batches and their accounting in one SQLite file. Synchronous; one thread at a time."""

    def __init__(self, db_path: Path | str, *, clock: Clock | None = None) -> None:
        self.path = Path(db_path)
        self.clock = clock or SystemClock()
        try:
            # check_same_thread=False: the async Receiver runs every call in one dedicated worker thread,
            # which is not the thread that opened the file. Calls are never concurrent.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # the system of record: survive a power cut
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise AgentError(f"cannot open the receiver database: {exc}", path=str(self.path),
                             hint="check the path, its permissions and free disk space") from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ReceiverStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ ingest

    def ingest(self, frame: bytes, trust: TrustStore, *, topic_gw: str | None = None) -> IngestResult:
        """Verify, decide and durably record one frame (one transaction)."""
        return self.ingest_many([(frame, topic_gw)], trust)[0]

    def ingest_many(self, frames: Sequence[tuple[bytes, str | None]],
                    trust: TrustStore) -> list[IngestResult]:
        """Verify and record several frames in one transaction (one fsync), in order.

        Each item is ``(frame, topic_gw)``: ``topic_gw`` is the gateway named by the MQTT topic the frame
        came on, or None when unknown; a signed batch of another gateway on that topic is rejected.
        Nothing is acknowledged by the caller before this returns, so a crash inside it only causes
        redelivery.
        """
        now = int(self.clock.time() * 1000)
        results: list[IngestResult] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for frame, topic_gw in frames:
                    results.append(self._ingest_one(frame, trust, topic_gw, now))
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AgentError(f"cannot store batches: {exc}", path=str(self.path),
                             hint="check free disk space and that no other program locks the file",
                             recoverable=True) from exc
        for r in results:
            if r.status == "rejected":
                log.warning("receiver_batch_rejected", gateway=r.gw, seq=r.seq, error=r.reason)
            for seq, reason in r.chain_breaks:
                log.error("receiver_chain_break", gateway=r.gw, seq=seq, error=reason)
        return results

    def _ingest_one(self, frame: bytes, trust: TrustStore, topic_gw: str | None, now: int) -> IngestResult:
        try:
            batch = wire.open_frame(frame)
        except WireFormatError as exc:
            return self._reject(frame, topic_gw or UNKNOWN_GATEWAY, None, exc.message, now, cause="format",
                                ackable=False)
        if topic_gw is not None and topic_gw != batch.gw:
            reason = f"frame of gateway {batch.gw!r} published on the topic of gateway {topic_gw!r}"
            return self._reject(frame, topic_gw, batch.seq, reason, now, cause="topic", ackable=False)
        try:
            trust.verify(batch.alg, batch.kid, batch.signed, batch.sig)
        except SignatureError as exc:
            return self._reject(frame, batch.gw, batch.seq, exc.message, now, cause="signature")

        row = self._db.execute("SELECT hash FROM batches WHERE gw=? AND seq=?",
                               (batch.gw, batch.seq)).fetchone()
        if row is not None:
            if bytes(row[0]) == batch.hash:
                self._db.execute("INSERT INTO gateway_counters (gw, duplicates) VALUES (?, 1) "
                                 "ON CONFLICT (gw) DO UPDATE SET duplicates = duplicates + 1", (batch.gw,))
                return IngestResult("duplicate", batch.gw, batch.seq, kind=batch.kind, ackable=True,
                                    hash=batch.hash, prev=batch.prev)
            return self._reject(frame, batch.gw, batch.seq,
                                f"seq reused with different content (stored hash {_short(bytes(row[0]))}, "
                                f"this hash {_short(batch.hash)})", now, cause="content")

        # A savepoint, so a body found malformed half-way through its rows leaves none of them behind.
        self._db.execute("SAVEPOINT body")
        try:
            records = self._store_rows(batch, wire.decode_body(batch))
        except WireFormatError as exc:
            self._db.execute("ROLLBACK TO body")
            self._db.execute("RELEASE body")
            return self._reject(frame, batch.gw, batch.seq, exc.message, now, cause="format")
        self._db.execute("RELEASE body")
        self._db.execute(
            "INSERT INTO batches (gw, seq, hash, prev, kind, t0, t1, created, kid, received_at, records, "
            "frame) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (batch.gw, batch.seq, batch.hash, batch.prev, batch.kind, batch.t0, batch.t1, batch.created,
             batch.kid, now, records, frame),
        )
        breaks = self._check_links(batch, now)
        return IngestResult("stored", batch.gw, batch.seq, kind=batch.kind, records=records,
                            chain_breaks=breaks, ackable=True, hash=batch.hash, prev=batch.prev)

    def _store_rows(self, batch: wire.Batch, body: wire.Body) -> int:
        """Insert every row of every table; declare gap rows. Returns the measurement rows (not gap rows)."""
        measurements = 0
        out: list[tuple[str, int, str, str | None, int, str]] = []
        for name, table in body.tables.items():
            cols = table.cols
            tag_i = cols.index("tag") if "tag" in cols else -1
            ts_i = next((cols.index(c) for c in ROW_TIME_COLUMNS if c in cols), -1)
            for r in table.rows:
                tag = r[tag_i] if 0 <= tag_i < len(r) else None
                ts = r[ts_i] if 0 <= ts_i < len(r) and isinstance(r[ts_i], int) else batch.t0
                out.append((batch.gw, batch.seq, name, tag if isinstance(tag, str) else None, ts,
                            _row_json(cols, r)))
            if name == GAP_TABLE:
                self._declare_gaps(batch, table)
            else:
                measurements += len(table.rows)
        self._db.executemany("INSERT INTO records (gw, seq, tbl, tag, ts, data) VALUES (?, ?, ?, ?, ?, ?)",
                             out)
        return measurements

    def _declare_gaps(self, batch: wire.Batch, table: wire.Table) -> None:
        for r in table.rows:
            g = dict(zip(table.cols, r, strict=False))
            try:
                values = (batch.gw, batch.seq, int(g["first_seq"]), int(g["last_seq"]),
                          int(g.get("batches") or 0), int(g.get("records") or 0),
                          g.get("from_ms"), g.get("to_ms"), str(g.get("reason") or ""),
                          json.dumps(_json_value(g.get("tags") or [])))
            except (KeyError, TypeError, ValueError) as exc:
                raise WireFormatError(f"malformed gap row in batch seq {batch.seq}: {exc!r}") from exc
            if values[2] < 1 or values[3] < values[2] or values[3] >= batch.seq:
                raise WireFormatError(f"gap row in batch seq {batch.seq} declares an impossible range "
                                      f"{values[2]}..{values[3]}")
            self._db.execute(
                "INSERT INTO declared_gaps (gw, gap_seq, first_seq, last_seq, batches, records, from_ms, "
                "to_ms, reason, tags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values)

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

    def _reject(self, frame: bytes, gw: str, seq: int | None, reason: str, now: int,
                *, cause: str, ackable: bool = True) -> IngestResult:
        """Record a refused frame once (by its SHA-256); the same bytes again only bump ``times``."""
        self._db.execute(
            "INSERT INTO rejected (gw, seq, cause, reason, received_at, frame_hash, frame) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (frame_hash) DO UPDATE SET times = times + 1",
            (gw, seq, cause, reason, now, hashlib.sha256(frame).digest(), frame),
        )
        return IngestResult("rejected", gw, seq, reason=reason, ackable=ackable and seq is not None)

    def reverify(self, trust: TrustStore) -> list[IngestResult]:
        """Ingest again every frame refused for its signature or key (e.g. after a key was added to the trust
        file). Frames that now verify move out of ``rejected``; the others stay as they were."""
        rows = self._db.execute("SELECT id, frame FROM rejected WHERE cause = 'signature' "
                                "ORDER BY id").fetchall()
        results = []
        for row_id, frame in rows:
            try:
                wire.verify_frame(bytes(frame), trust)
            except (WireFormatError, SignatureError):
                continue
            self._db.execute("DELETE FROM rejected WHERE id=?", (row_id,))
            results.append(self.ingest(bytes(frame), trust))
        return results

    # ------------------------------------------------------------------ queries

    def gateways(self) -> list[str]:
        rows = self._db.execute(
            "SELECT gw FROM batches UNION SELECT gw FROM rejected UNION SELECT gw FROM gateway_counters "
            "ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def report(self) -> dict[str, Any]:
        """Per gateway: what was stored, duplicated, refused, broken, missing and declared lost.

        ``missing`` is every seq from 1 to the highest stored seq that is neither stored nor inside a declared
        gap; a rejected seq is therefore also missing until a valid copy arrives.
        """
        return {"gateways": {gw: self._gateway_report(gw) for gw in self.gateways()}}

    def _gateway_report(self, gw: str) -> dict[str, Any]:
        db = self._db
        batches, records, last_seq = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(records), 0), MAX(seq) FROM batches WHERE gw=?", (gw,)).fetchone()
        dup = db.execute("SELECT duplicates FROM gateway_counters WHERE gw=?", (gw,)).fetchone()
        rejected = [{"seq": s, "reason": r} for s, r in
                    db.execute("SELECT seq, reason FROM rejected WHERE gw=? ORDER BY id", (gw,))]
        breaks = [{"seq": s, "reason": r} for s, r in
                  db.execute("SELECT seq, reason FROM chain_breaks WHERE gw=? ORDER BY seq", (gw,))]
        gaps = db.execute("SELECT first_seq, last_seq, batches, records, reason FROM declared_gaps "
                          "WHERE gw=? ORDER BY first_seq, gap_seq", (gw,)).fetchall()
        return {
            "batches": batches,
            "records": records,
            "duplicates": dup[0] if dup else 0,
            "rejected": rejected,
            "chain_breaks": breaks,
            "missing": _subtract(self._absent(gw), [(g[0], g[1]) for g in gaps]),
            "declared_gaps": [{"first_seq": g[0], "last_seq": g[1], "batches": g[2], "records": g[3],
                               "reason": g[4]} for g in gaps],
            "last_seq": last_seq,
        }

    def _absent(self, gw: str) -> list[list[int]]:
        """Seq ranges in [1, max stored seq] with no stored batch, found by SQL without loading every seq."""
        rows = self._db.execute(
            "SELECT prev_seq + 1, seq - 1 FROM ("
            "  SELECT seq, LAG(seq, 1, 0) OVER (ORDER BY seq) AS prev_seq FROM batches WHERE gw=?"
            ") WHERE seq - prev_seq > 1 ORDER BY seq", (gw,)).fetchall()
        return [[a, b] for a, b in rows]

    def records(self, *, tag: str | None = None, gw: str | None = None,
                limit: int = 100) -> Iterator[dict[str, Any]]:
        """Stored rows, newest first, as ``{"gw", "seq", "table", "tag", "ts", **columns}``."""
        where, params = [], []
        if tag is not None:
            where.append("tag = ?")
            params.append(tag)
        if gw is not None:
            where.append("gw = ?")
            params.append(gw)
        sql = "SELECT gw, seq, tbl, tag, ts, data FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?"
        for g, seq, tbl, t, ts, data in self._db.execute(sql, [*params, limit]):
            yield {"gw": g, "seq": seq, "table": tbl, "tag": t, "ts": ts, **json.loads(data)}


# ---------------------------------------------------------------------- network side
# BrokerAddress, parse_broker_url and TlsFiles, which the Receiver takes, are defined with the rest of the MQTT
# connection code in agent.protocol.mqtt and exported here as well.


@dataclass(slots=True)
class ReceiverStats:
    connected: bool = False
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    acks_published: int = 0  # signed ack messages
    reconnects: int = 0
    last_error: str | None = None
    by_gateway: dict[str, int] = field(default_factory=dict)


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
        trust: TrustStore,
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
        self.trust = trust
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
        self.subscribed = asyncio.Event()  # set while subscribed; tests wait on it

    @property
    def topic_filter(self) -> str:
        return f"{self.prefix}/+/batch/#"

    def _topic_gateway(self, topic: str) -> str:
        """The ``<gw>`` level of ``<prefix>/<gw>/batch/...`` (the subscription guarantees the shape)."""
        return topic[len(self.prefix) + 1:].split("/", 1)[0]

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
            items = [(bytes(m.payload), self._topic_gateway(m.topic.value)) for m in chunk]
            self.stats.received += len(items)
            results = await loop.run_in_executor(executor, self.store.ingest_many, items, self.trust)
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

    def _count(self, r: IngestResult) -> None:
        if r.status == "stored":
            self.stats.stored += 1
        elif r.status == "duplicate":
            self.stats.duplicates += 1
        else:
            self.stats.rejected += 1
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
