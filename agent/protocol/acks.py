"""Signed acknowledgements (protocol version 2, docs/protocol.md §7): the archive says, under its own key, which
exact batches of one gateway it holds, and the gateway deletes only on such a statement about itself.

An acknowledgement is what makes a gateway delete data, so it is as much a trust boundary as a batch: in
version 1 anybody who could publish on ``<prefix>/<gw>/ack`` could empty that gateway's buffer. Here::

    ack    = msgpack array [ 2, signed: bin, sig: bin ]
    signed = msgpack map {
        "type":   "ack",
        "v":      2,
        "gw":     str,                       the gateway whose batches are acknowledged
        "ranges": [[first, last, hash], ...] inclusive seq runs; hash = bin(32), the batch hash of ``last``
        "issued": int,                       Unix ms, archive clock (informative)
        "alg":    "ed25519",
        "kid":    str,                       archive key id
    }
    sig    = signature by the archive key ``kid`` over the exact ``signed`` bytes

Why each range names the hash of its last batch: batches are hash-chained, so the hash of ``last`` commits to
every batch of the run before it. A gateway deletes a run only when the batch it holds at ``last`` has that
hash, so an old ack replayed after the gateway lost its state and counts from seq 1 again, or an ack of
another gateway's history, deletes nothing. The archive therefore only puts into one range seqs whose chain
links it checked (:func:`linked_ranges`). Rejected: one hash per seq (the ack grows with the batch count); no
hash at all (a replayed ack deletes data that never arrived).

:func:`open_ack` checks every value's type and range before using it; a payload that fails any check raises
:class:`~agent.core.errors.WireFormatError` (malformed) or :class:`~agent.core.errors.SignatureError` (not a
statement of the archive about this gateway: unknown key, bad signature, or a genuine ack of another gateway
replayed on this one's topic) and is counted and ignored by the caller, never half-applied.
"""

from __future__ import annotations

__all__ = [
    "ACK_TYPE",
    "ACK_VERSION",
    "MAX_ACK_BYTES",
    "MAX_ACK_RANGES",
    "MAX_SEQ",
    "Ack",
    "AckRange",
    "encode_ack",
    "linked_ranges",
    "open_ack",
]

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from agent.core.errors import SignatureError, WireFormatError
from agent.protocol.signing import BatchSigner, TrustStore

ACK_TYPE = "ack"
ACK_VERSION = 2
MAX_SEQ = 2**63 - 1
"""The largest sequence number either side accepts (a signed 64-bit integer, as SQL databases store it)."""
MAX_ACK_RANGES = 512
"""Ranges in one ack message; the archive splits longer lists into several messages."""
MAX_ACK_BYTES = 64 * 1024
"""An ack payload larger than this is refused unread (512 ranges take about 24 KiB)."""
_HASH_BYTES = 32
_MAX_ID_CHARS = 128


@dataclass(frozen=True, slots=True)
class AckRange:
    first: int
    last: int
    last_hash: bytes


@dataclass(frozen=True, slots=True)
class Ack:
    """A verified acknowledgement: ``ranges`` sorted by ``first``, none overlapping."""

    gw: str
    ranges: tuple[AckRange, ...]
    issued: int
    kid: str


def linked_ranges(batches: Iterable[tuple[int, bytes, bytes]]) -> list[AckRange]:
    """Merge ``(seq, hash, prev)`` of decided batches into runs whose chain links hold.

    Consecutive seqs join one run only when the later one's ``prev`` is the earlier one's hash, so every run's
    last hash commits to the whole run. Duplicate seqs are merged (the first one given wins).
    """
    by_seq: dict[int, tuple[bytes, bytes]] = {}
    for seq, hash_, prev in batches:
        by_seq.setdefault(seq, (hash_, prev))
    runs: list[AckRange] = []
    for seq in sorted(by_seq):
        hash_, prev = by_seq[seq]
        if runs and runs[-1].last == seq - 1 and runs[-1].last_hash == prev:
            runs[-1] = AckRange(runs[-1].first, seq, hash_)
        else:
            runs.append(AckRange(seq, seq, hash_))
    return runs


def encode_ack(signer: BatchSigner, *, gw: str, ranges: Iterable[AckRange], issued: int) -> bytes:
    """Sign one ack message. At most :data:`MAX_ACK_RANGES` ranges (the caller splits longer lists)."""
    rows = [[r.first, r.last, r.last_hash] for r in ranges]
    if len(rows) > MAX_ACK_RANGES:
        raise ValueError(f"{len(rows)} ranges in one ack, at most {MAX_ACK_RANGES}")
    signed = msgpack.packb(
        {"type": ACK_TYPE, "v": ACK_VERSION, "gw": gw, "ranges": rows, "issued": issued,
         "alg": signer.alg, "kid": signer.kid},
        use_bin_type=True,
    )
    return msgpack.packb([ACK_VERSION, signed, signer.sign(signed)], use_bin_type=True)


def _int(value: Any, what: str, low: int, high: int) -> int:
    # bool is an int in Python but not on the wire: msgpack decodes true/false to bool, never to 1/0.
    if type(value) is not int or not low <= value <= high:
        raise WireFormatError(f"ack: {what} must be an integer in [{low}, {high}]")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str or not 0 < len(value) <= _MAX_ID_CHARS:
        raise WireFormatError(f"ack: {what} must be a string of 1 to {_MAX_ID_CHARS} characters")
    return value


def _unique_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # A repeated key is refused: decoders differ on which copy wins, and the signature covers both.
    out = dict(pairs)
    if len(out) != len(pairs):
        raise WireFormatError("ack: a map repeats a key")
    return out


def open_ack(payload: bytes, trust: TrustStore, *, gateway: str) -> Ack:
    """Parse and verify an ack for ``gateway`` against the archive keys in ``trust``.

    Raises :class:`WireFormatError` for anything malformed or oversized, and :class:`SignatureError` for an
    unknown key, a signature that does not verify, or an ack the archive signed for another gateway. Never
    anything else.
    """
    if not isinstance(payload, bytes | bytearray):
        raise WireFormatError("ack: payload is not bytes")
    if len(payload) > MAX_ACK_BYTES:
        raise WireFormatError(f"ack: {len(payload)} bytes, at most {MAX_ACK_BYTES}")
    try:
        outer = msgpack.unpackb(bytes(payload), raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # Includes an ack of version 1 (JSON text), which msgpack reads as one small int and extra data.
        raise WireFormatError(f"ack: not a msgpack message ({type(exc).__name__})") from exc
    if not isinstance(outer, list) or len(outer) != 3:
        raise WireFormatError("ack: expected the array [2, signed, sig]")
    version, signed, sig = outer
    if version != ACK_VERSION or type(version) is not int:
        raise WireFormatError("ack: unsupported ack version")
    if not isinstance(signed, bytes) or not isinstance(sig, bytes):
        raise WireFormatError("ack: signed part and signature must be binary")
    try:
        doc = msgpack.unpackb(signed, raw=False, object_pairs_hook=_unique_map)
    except WireFormatError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireFormatError(f"ack: signed part is not msgpack ({type(exc).__name__})") from exc
    if not isinstance(doc, dict):
        raise WireFormatError("ack: signed part is not a map")
    if doc.get("type") != ACK_TYPE or doc.get("v") != ACK_VERSION or type(doc.get("v")) is not int:
        raise WireFormatError("ack: signed part is not a version-2 ack")
    alg = _str(doc.get("alg"), "alg")
    kid = _str(doc.get("kid"), "kid")
    # The signature first: nothing of an unauthenticated document is used or reported as fact.
    trust.verify(alg, kid, signed, sig)
    gw = _str(doc.get("gw"), "gw")
    if gw != gateway:
        # Genuinely signed, but not about us: as unauthenticated for this gateway as a forgery.
        raise SignatureError(f"ack: addressed to gateway {gw!r}, this is {gateway!r}")
    issued = _int(doc.get("issued"), "issued", 0, MAX_SEQ)
    rows = doc.get("ranges")
    if not isinstance(rows, list) or len(rows) > MAX_ACK_RANGES:
        raise WireFormatError(f"ack: ranges must be a list of at most {MAX_ACK_RANGES}")
    ranges: list[AckRange] = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3:
            raise WireFormatError("ack: a range is [first, last, hash]")
        first = _int(row[0], "first seq", 1, MAX_SEQ)
        last = _int(row[1], "last seq", first, MAX_SEQ)
        if not isinstance(row[2], bytes) or len(row[2]) != _HASH_BYTES:
            raise WireFormatError("ack: a range's hash is 32 bytes")
        ranges.append(AckRange(first, last, row[2]))
    ranges.sort(key=lambda r: r.first)
    for before, after in itertools.pairwise(ranges):
        if after.first <= before.last:
            raise WireFormatError("ack: ranges overlap")
    return Ack(gw, tuple(ranges), issued, kid)
