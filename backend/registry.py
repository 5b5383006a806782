"""The key registry: which public key belongs to which gateway, and when it may sign (docs/protocol.md §4).

A signature proves who holds a key, not which gateway the key speaks for. The registry binds each key to
exactly one gateway: a frame is accepted only if its ``kid`` is registered **for the gateway its signed header
names**. Each entry also bounds when the key may sign (``valid_from`` .. ``valid_until``, compared with the
frame's ``created``) and, once revoked, from when nothing it signs is accepted any more (``revoked_at``,
compared with the frame's **arrival**: the holder of a stolen key can backdate ``created``, not the receiver's
clock). Frames stored before the revocation stay stored and still verify (:meth:`KeyRegistry.lookup` with
their arrival time).

The registry lives in the receiver's own database (table ``gateway_keys``), so a key registered, rotated or
revoked with ``mine-backend keys ...`` takes effect in a running receiver at its next frame, and the archive and
the keys that vouch for it are backed up together. Rejected: keeping the trust file as the source of truth.
A flat file cannot say which gateway a key belongs to, and rereading it on every change races with the
receiver; the file format stays as the way to bring keys in (:func:`parse_registry`).

The registry text format, one entry per line, ``#`` starts a comment (a comment on an entry's line is its
note)::

    <gw> ed25519:<base64> [from=<ISO 8601>] [until=<ISO 8601>] [revoked=<ISO 8601>]

A line holding only a key (the trust file of format version 1) names no gateway; it is read only when the
caller says which gateway those keys belong to.
"""

from __future__ import annotations

__all__ = [
    "ImportResult",
    "KeyEntry",
    "KeyRefused",
    "KeyRegistry",
    "check_gateway_id",
    "entry_for",
    "format_entry",
    "format_time",
    "parse_registry",
    "parse_time",
]

import datetime as dt
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.core.errors import AgentError, SignatureError
from agent.protocol.signing import ALG_ED25519, format_public_key, key_id, parse_public_key

MAX_ID_CHARS = 128  # gateway ids and key ids, as the frame format bounds them
MAX_NOTE_CHARS = 200
_GATEWAY_ID = re.compile(r"[^\s/+#]{1,128}")  # one MQTT topic level, no wildcard, no space

KeyStatus = Literal["valid", "not_yet_valid", "expired", "revoked"]
IdentityCause = Literal["unknown_key", "wrong_gateway", "key_not_valid", "revoked", "signature"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_keys (
    kid         TEXT    PRIMARY KEY,   -- one key id belongs to exactly one gateway
    gw          TEXT    NOT NULL,
    alg         TEXT    NOT NULL,
    public_key  BLOB    NOT NULL,      -- raw key bytes
    valid_from  INTEGER NOT NULL DEFAULT 0,   -- Unix ms: frames created before it are refused
    valid_until INTEGER,               -- Unix ms or NULL: frames created after it are refused
    revoked_at  INTEGER,               -- Unix ms or NULL: frames arriving at or after it are refused
    note        TEXT    NOT NULL DEFAULT '',
    added_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS gateway_keys_by_gw ON gateway_keys (gw);
"""


class KeyRefused(SignatureError):
    """A frame's key may not sign for the gateway it names, then, or its signature does not verify.

    ``cause`` is the refusal code of docs/protocol.md §6; ``kid`` the signer as the frame names it.
    """

    def __init__(self, message: str, *, cause: IdentityCause, kid: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.cause: IdentityCause = cause
        self.kid = kid


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One registered key and the gateway it speaks for. Times are Unix ms."""

    gw: str
    alg: str
    public_key: bytes
    kid: str
    valid_from_ms: int = 0
    valid_until_ms: int | None = None
    revoked_at_ms: int | None = None
    note: str = ""

    @property
    def public_text(self) -> str:
        return format_public_key(self.public_key)

    def status(self, now_ms: int) -> KeyStatus:
        """What the key can do now: sign (``valid``) or not, and why."""
        if self.revoked_at_ms is not None and now_ms >= self.revoked_at_ms:
            return "revoked"
        if now_ms < self.valid_from_ms:
            return "not_yet_valid"
        if self.valid_until_ms is not None and now_ms > self.valid_until_ms:
            return "expired"
        return "valid"

    def as_dict(self, now_ms: int) -> dict[str, object]:
        return {"gw": self.gw, "kid": self.kid, "alg": self.alg, "key": self.public_text,
                "valid_from": format_time(self.valid_from_ms) if self.valid_from_ms else None,
                "valid_until": format_time(self.valid_until_ms),
                "revoked_at": format_time(self.revoked_at_ms), "status": self.status(now_ms),
                "note": self.note}


def parse_time(text: str, *, what: str = "time") -> int:
    """ISO 8601 (``2026-01-31``, ``2026-01-31T08:00:00+08:00``, ``...Z``) to Unix ms; no zone means UTC."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise AgentError(f"{what} {text[:40]!r} is not an ISO 8601 date or time", key=what,
                         hint="e.g. 2026-01-31 or 2026-01-31T08:00:00+08:00 (no zone: UTC)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def format_time(ms: int | None) -> str | None:
    """Unix ms as ISO 8601 UTC (``2026-01-31T08:00:00.000Z``), None as None."""
    if ms is None:
        return None
    try:
        when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    except (ValueError, OverflowError, OSError):  # beyond year 9999: a time a frame may claim, not a date
        return f"{ms} ms"
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def check_gateway_id(gw: str, *, where: str = "gateway") -> str:
    if not _GATEWAY_ID.fullmatch(gw):
        raise AgentError(f"gateway id {gw[:40]!r} must be 1..{MAX_ID_CHARS} characters without spaces, "
                         "'/', '+' or '#'", key=where, hint="use the gateway's [gateway] id, e.g. gw-01")
    return gw


def format_entry(entry: KeyEntry) -> str:
    """The entry as a line of the registry text format (what :func:`parse_registry` reads back)."""
    parts = [entry.gw, entry.public_text]
    if entry.valid_from_ms:
        parts.append(f"from={format_time(entry.valid_from_ms)}")
    if entry.valid_until_ms is not None:
        parts.append(f"until={format_time(entry.valid_until_ms)}")
    if entry.revoked_at_ms is not None:
        parts.append(f"revoked={format_time(entry.revoked_at_ms)}")
    line = " ".join(parts)
    return f"{line}  # {entry.note}" if entry.note else line


_KEY_PREFIXES = (ALG_ED25519,)  # a line starting "<alg>:" is a key, not a gateway id
_OPTIONS = {"from": "valid_from_ms", "until": "valid_until_ms", "revoked": "revoked_at_ms"}


def parse_registry(text: str, *, gateway: str | None = None, path: str = "<registry>") -> list[KeyEntry]:
    """Read the registry text format (module docstring). ``gateway`` names the gateway of bare key lines
    (a trust file of format version 1); a line naming another gateway than ``gateway`` is an error."""
    if gateway is not None:
        check_gateway_id(gateway, where="--gateway")
    entries: list[KeyEntry] = []
    for lineno, raw_line in enumerate(text.splitlines(), 1):
        content, _, comment = raw_line.partition("#")
        fields = content.split()
        if not fields:
            continue
        try:
            entries.append(_parse_line(fields, comment.strip()[:MAX_NOTE_CHARS], gateway))
        except AgentError as exc:
            raise AgentError(exc.message, path=path, line=lineno, hint=exc.hint) from exc
    return entries


def _parse_line(fields: list[str], note: str, gateway: str | None) -> KeyEntry:
    if fields[0].partition(":")[0] in _KEY_PREFIXES:  # a bare key: the version 1 trust file
        if gateway is None:
            raise AgentError("a key line without a gateway id",
                             hint="write '<gw> ed25519:<base64>', or import a version 1 trust file with "
                                  "--gateway GW naming the gateway its keys belong to")
        gw, key_text, options = gateway, fields[0], fields[1:]
    else:
        if len(fields) < 2:
            raise AgentError(f"gateway {fields[0][:40]!r} without a key", hint="'<gw> ed25519:<base64>'")
        gw, key_text, options = check_gateway_id(fields[0]), fields[1], fields[2:]
        if gateway is not None and gw != gateway:
            raise AgentError(f"entry for gateway {gw!r} in a file imported for gateway {gateway!r}",
                             hint="import without --gateway to take the gateway ids from the file")
    alg, raw = parse_public_key(key_text)
    times: dict[str, int] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or name not in _OPTIONS:
            raise AgentError(f"unknown option {option[:40]!r}", hint="from=<ISO>, until=<ISO>, revoked=<ISO>")
        times[_OPTIONS[name]] = parse_time(value, what=name)
    entry = KeyEntry(gw, alg, raw, key_id(raw), note=note, **times)
    if entry.valid_until_ms is not None and entry.valid_until_ms < entry.valid_from_ms:
        raise AgentError("until= is before from=")
    return entry


@dataclass(frozen=True, slots=True)
class ImportResult:
    added: list[KeyEntry]
    narrowed: list[KeyEntry]
    unchanged: list[KeyEntry]


class KeyRegistry:
    """The ``gateway_keys`` table of a receiver database. Every call reads the table, so changes made by
    another process (``mine-backend keys revoke``) apply at once; only the parsed key objects are cached."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._db.executescript(SCHEMA)
        self._keys: dict[bytes, Ed25519PublicKey] = {}

    # ------------------------------------------------------------------ reading

    def get(self, kid: str) -> KeyEntry | None:
        row = self._db.execute(
            "SELECT gw, alg, public_key, kid, valid_from, valid_until, revoked_at, note FROM gateway_keys "
            "WHERE kid = ?", (kid,)).fetchone()
        return _entry(row) if row is not None else None

    def entries(self, gw: str | None = None) -> list[KeyEntry]:
        sql = "SELECT gw, alg, public_key, kid, valid_from, valid_until, revoked_at, note FROM gateway_keys"
        rows = (self._db.execute(sql + " WHERE gw = ? ORDER BY valid_from, added_at, kid", (gw,)) if gw
                else self._db.execute(sql + " ORDER BY gw, valid_from, added_at, kid"))
        return [_entry(r) for r in rows]

    def gateways(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT gw FROM gateway_keys ORDER BY gw")]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM gateway_keys").fetchone()[0])

    def lookup(self, *, gw: str, kid: str, alg: str, created_ms: int, arrival_ms: int) -> Ed25519PublicKey:
        """The public key that may verify a frame naming ``gw``, signed by ``kid`` with ``alg``, made at
        ``created_ms`` and arrived at ``arrival_ms``; else :class:`KeyRefused` with its cause."""
        entry = self.get(kid)
        if entry is None:
            raise KeyRefused(f"unknown key id {kid[:MAX_ID_CHARS]!r}", cause="unknown_key", kid=kid,
                             hint="register the gateway's key: mine-backend keys register")
        if entry.gw != gw:
            raise KeyRefused(f"key {kid} belongs to gateway {entry.gw!r}, not to {gw[:MAX_ID_CHARS]!r}",
                             cause="wrong_gateway", kid=kid)
        if alg != entry.alg:
            raise KeyRefused(f"key {kid} is an {entry.alg} key, the frame says {alg[:MAX_ID_CHARS]!r}",
                             cause="signature", kid=kid)
        if entry.revoked_at_ms is not None and arrival_ms >= entry.revoked_at_ms:
            raise KeyRefused(f"key {kid} was revoked at {format_time(entry.revoked_at_ms)}", cause="revoked",
                             kid=kid)
        if created_ms < entry.valid_from_ms or (entry.valid_until_ms is not None
                                                and created_ms > entry.valid_until_ms):
            raise KeyRefused(f"key {kid} may sign from {format_time(entry.valid_from_ms)} until "
                             f"{format_time(entry.valid_until_ms) or 'revoked'}; the frame was created "
                             f"{format_time(created_ms)}", cause="key_not_valid", kid=kid)
        key = self._keys.get(entry.public_key)
        if key is None:
            key = self._keys[entry.public_key] = Ed25519PublicKey.from_public_bytes(entry.public_key)
        return key

    def verify(self, *, gw: str, kid: str, alg: str, created_ms: int, arrival_ms: int, signed: bytes,
               sig: bytes) -> None:
        """:meth:`lookup`, then the signature over ``signed``; :class:`KeyRefused` on any failure."""
        key = self.lookup(gw=gw, kid=kid, alg=alg, created_ms=created_ms, arrival_ms=arrival_ms)
        try:
            key.verify(sig, signed)
        except InvalidSignature as exc:
            raise KeyRefused("signature does not verify", cause="signature", kid=kid) from exc

    # ------------------------------------------------------------------ changing

    def register(self, entry: KeyEntry, *, now_ms: int) -> KeyEntry:
        """Add a key for its gateway. A key already registered (for this or another gateway) is an error."""
        with self._transaction():
            existing = self.get(entry.kid)
            if existing is not None:
                if existing.gw != entry.gw:
                    raise AgentError(f"key {entry.kid} is registered for gateway {existing.gw!r}; one key "
                                     "belongs to exactly one gateway", key="--key",
                                     hint="each gateway makes its own key: mine-agent keys init DIR")
                raise AgentError(f"key {entry.kid} is already registered for {entry.gw!r}", key="--key",
                                 hint="use 'keys rotate' or 'keys revoke' to change it; 'keys list' shows it")
            self._insert(entry, now_ms)
        return entry

    def rotate(self, gw: str, new: KeyEntry, *, overlap_until_ms: int, now_ms: int) -> list[KeyEntry]:
        """Register ``new`` for ``gw`` and end the gateway's other keys' validity at ``overlap_until_ms``
        (frames they sign that were created later are refused). Returns the entries it narrowed."""
        if new.gw != gw:
            raise AgentError(f"the new key is for {new.gw!r}, not {gw!r}")
        narrowed: list[KeyEntry] = []
        with self._transaction():
            old = [e for e in self.entries(gw) if e.kid != new.kid and e.status(now_ms) != "revoked"]
            if not old:
                raise AgentError(f"gateway {gw!r} has no key to rotate from", key="--gateway",
                                 hint="use 'keys register' for a gateway's first key")
            self.register(new, now_ms=now_ms)
            for e in old:
                if e.valid_until_ms is None or e.valid_until_ms > overlap_until_ms:
                    narrowed.append(replace(e, valid_until_ms=max(overlap_until_ms, e.valid_from_ms)))
                    self._db.execute("UPDATE gateway_keys SET valid_until = ? WHERE kid = ?",
                                     (narrowed[-1].valid_until_ms, e.kid))
        return narrowed

    def revoke(self, kid: str, *, at_ms: int, reason: str) -> KeyEntry:
        """Refuse every frame signed by ``kid`` that arrives at or after ``at_ms``. Never lifted; an earlier
        revocation time stays."""
        with self._transaction():
            entry = self.get(kid)
            if entry is None:
                raise AgentError(f"no key {kid[:MAX_ID_CHARS]!r} is registered", key="--kid",
                                 hint="'mine-backend keys list' shows the registered key ids")
            at = at_ms if entry.revoked_at_ms is None else min(at_ms, entry.revoked_at_ms)
            note = f"{entry.note}; revoked: {reason}" if entry.note else f"revoked: {reason}"
            entry = replace(entry, revoked_at_ms=at, note=note[:MAX_NOTE_CHARS])
            self._db.execute("UPDATE gateway_keys SET revoked_at = ?, note = ? WHERE kid = ?",
                             (entry.revoked_at_ms, entry.note, kid))
        return entry

    def import_entries(self, entries: list[KeyEntry], *, now_ms: int) -> ImportResult:
        """Add the new keys; for keys already registered for the same gateway, only narrow: a later
        ``from``, an earlier ``until``, an earlier ``revoked`` are taken, nothing is widened or lifted.
        All or nothing: a key registered for another gateway fails the whole import."""
        result = ImportResult([], [], [])
        with self._transaction():
            for entry in entries:
                existing = self.get(entry.kid)
                if existing is None:
                    self._insert(entry, now_ms)
                    result.added.append(entry)
                    continue
                if existing.gw != entry.gw:
                    raise AgentError(f"key {entry.kid} is registered for gateway {existing.gw!r}, the file "
                                     f"gives it to {entry.gw!r}; one key belongs to exactly one gateway")
                merged = replace(existing, valid_from_ms=max(existing.valid_from_ms, entry.valid_from_ms),
                                 valid_until_ms=_earliest(existing.valid_until_ms, entry.valid_until_ms),
                                 revoked_at_ms=_earliest(existing.revoked_at_ms, entry.revoked_at_ms))
                if merged == existing:
                    result.unchanged.append(existing)
                    continue
                self._db.execute("UPDATE gateway_keys SET valid_from = ?, valid_until = ?, revoked_at = ? "
                                 "WHERE kid = ?", (merged.valid_from_ms, merged.valid_until_ms,
                                                   merged.revoked_at_ms, merged.kid))
                result.narrowed.append(merged)
        return result

    def _insert(self, entry: KeyEntry, now_ms: int) -> None:
        check_gateway_id(entry.gw)
        self._db.execute(
            "INSERT INTO gateway_keys (kid, gw, alg, public_key, valid_from, valid_until, revoked_at, note, "
            "added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry.kid, entry.gw, entry.alg, entry.public_key, entry.valid_from_ms, entry.valid_until_ms,
             entry.revoked_at_ms, entry.note[:MAX_NOTE_CHARS], now_ms))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction, or a savepoint inside the caller's."""
        if self._db.in_transaction:
            self._db.execute("SAVEPOINT registry")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK TO registry")
                self._db.execute("RELEASE registry")
                raise
            self._db.execute("RELEASE registry")
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def entry_for(gw: str, key_text: str, *, valid_from_ms: int = 0, valid_until_ms: int | None = None,
              note: str = "") -> KeyEntry:
    """A new entry from a public key line ``ed25519:<base64>``."""
    check_gateway_id(gw)
    alg, raw = parse_public_key(key_text)
    if valid_until_ms is not None and valid_until_ms < valid_from_ms:
        raise AgentError("--valid-until is before --valid-from", key="--valid-until")
    return KeyEntry(gw, alg, raw, key_id(raw), valid_from_ms, valid_until_ms, None, note[:MAX_NOTE_CHARS])


def _earliest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _entry(row: tuple[str, str, bytes, str, int, int | None, int | None, str]) -> KeyEntry:
    gw, alg, public_key, kid, valid_from, valid_until, revoked_at, note = row
    return KeyEntry(gw, alg, bytes(public_key), kid, valid_from, valid_until, revoked_at, note)
