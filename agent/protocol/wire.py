"""The batch wire format (format version 1). docs/protocol.md is the normative text; this is its code.

A **frame** is what is published on MQTT and stored in the buffer, byte for byte::

    frame  = msgpack array [ 1, signed: bin, sig: bin ]
    signed = msgpack map {
        "v":       1,            format version
        "gw":      str,          gateway id
        "seq":     uint,         batch sequence, 1, 2, 3, ... per gateway, never repeats, never goes back
        "prev":    bin(32),      SHA-256 of the previous batch's ``signed`` bytes (32 zero bytes for seq 1)
        "created": int,          Unix ms when the batch was made
        "t0":      int,          Unix ms, earliest timestamp covered
        "t1":      int,          Unix ms, latest timestamp covered
        "kind":    str,          "data" | "alarm" | "gap"   (which lane it travels in)
        "enc":     str,          body compression: "zstd" | "zlib" | "none"
        "alg":     str,          signature algorithm, "ed25519"
        "kid":     str,          key id: first 16 hex digits of SHA-256 of the raw public key
        "body":    bin           compressed msgpack body, below
    }
    sig    = signature by key ``kid`` with ``alg`` over the exact ``signed`` bytes

The batch **hash** is SHA-256(signed). Because ``signed`` contains ``prev``, the batches form a hash chain:
a batch altered anywhere breaks its own signature; a batch removed leaves a sequence gap and its successor's
``prev`` pointing at nothing. ``alg`` and ``kid`` are inside the signed part so they cannot be swapped.

The **body** (after decompression) is a msgpack map ``{"tags": [str...], "tables": {name: table}}`` where
each table is ``{"cols": [str...], "rows": [[...]...]}``. A ``tag`` column holds an index into ``tags``
(the per-batch tag dictionary); columns named ``ts`` or ``start`` hold millisecond offsets from ``t0``.
The tables and their columns (``win``, ``raw``, ``alarm``, ``gap``) are defined in
:mod:`agent.protocol.tables`. Receivers must ignore tables and columns they do not know.
"""

from __future__ import annotations

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "Batch",
    "Body",
    "Table",
    "decode_body",
    "encode_body",
    "encode_body_rows",
    "encode_frame",
    "frame_tags",
    "open_frame",
    "verify_frame",
]

import collections
import hashlib
import itertools
import operator
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zstandard

from agent.core.errors import SignatureError, WireFormatError
from agent.protocol.signing import BatchSigner, TrustStore
from agent.protocol.tables import OFFSET_COLUMNS, TAG_COLUMN, TAG_NAMES_COLUMN

_first = operator.itemgetter(0)

FORMAT_VERSION = 1
GENESIS_HASH = bytes(32)
_MAX_BODY = 64 * 1024 * 1024  # refuse decompression bombs

_zstd_c = zstandard.ZstdCompressor(level=3)
_zstd_d = zstandard.ZstdDecompressor()


@dataclass(slots=True)
class Table:
    cols: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass(slots=True)
class Body:
    """Decoded batch content. Row values are as on the wire except tag indexes and time offsets, which
    :func:`decode_body` resolves into tag names and absolute Unix ms."""

    tables: dict[str, Table] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Batch:
    """A frame opened (but not necessarily verified): its header fields and raw parts."""

    frame: bytes
    signed: bytes
    sig: bytes
    hash: bytes
    gw: str
    seq: int
    prev: bytes
    created: int
    t0: int
    t1: int
    kind: str
    enc: str
    alg: str
    kid: str
    body: bytes


def _compress(enc: str, data: bytes) -> bytes:
    if enc == "zstd":
        return _zstd_c.compress(data)
    if enc == "zlib":
        return zlib.compress(data, 6)
    if enc == "none":
        return data
    raise WireFormatError(f"unknown body encoding {enc!r}")


def _decompress(enc: str, data: bytes) -> bytes:
    try:
        if enc == "zstd":
            return _zstd_d.decompress(data, max_output_size=_MAX_BODY)
        if enc == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(data, _MAX_BODY)
            if d.unconsumed_tail:
                raise WireFormatError("body larger than 64 MiB")
            return out
        if enc == "none":
            return data
    except (zstandard.ZstdError, zlib.error) as exc:
        raise WireFormatError(f"body does not decompress with {enc}: {exc}") from exc
    raise WireFormatError(f"unknown body encoding {enc!r}")


def encode_body(tags: list[str], tables: dict[str, Table], t0: int, enc: str = "zstd") -> bytes:
    """Pack and compress a body. Rows must already use tag indexes into ``tags`` and offsets from ``t0``
    (the batcher builds them that way so it never re-walks the rows)."""
    del t0  # offsets are applied by the caller; kept in the signature for symmetry with decode_body
    doc = {"tags": tags, "tables": {name: {"cols": t.cols, "rows": t.rows} for name, t in tables.items()}}
    return _compress(enc, msgpack.packb(doc, use_bin_type=True))


def encode_body_rows(
    tags: list[str], tables: dict[str, tuple[list[str], int, Iterable[Sequence[Any]]]], enc: str = "zstd"
) -> bytes:
    """:func:`encode_body`, byte for byte, from rows made one at a time: ``tables`` maps a name to
    ``(cols, row count, rows)``. Each row is packed as it comes and can be freed at once, so a batch of
    10,000 window rows never exists twice in memory (the batcher makes the wire rows from the pipeline's)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_map_header(2)
    packer.pack("tags")
    packer.pack(tags)
    packer.pack("tables")
    packer.pack_map_header(len(tables))
    pack = packer.pack
    for name, (cols, count, rows) in tables.items():
        pack(name)
        packer.pack_map_header(2)
        pack("cols")
        pack(cols)
        pack("rows")
        packer.pack_array_header(count)
        # pack() over the rows in a C-level loop (a deque of length 0 only drives the iterator); the
        # counter, zipped behind the rows, ends at the number of rows packed.
        counter = itertools.count()
        collections.deque(map(pack, map(_first, zip(rows, counter, strict=False))), maxlen=0)
        packed = next(counter)
        if packed != count:
            raise ValueError(f"table {name!r}: {packed} rows, {count} announced")
    return _compress(enc, packer.bytes())


def decode_body(batch: Batch) -> Body:
    """Decompress and unpack a batch body, resolving tag indexes and time offsets."""
    try:
        doc = msgpack.unpackb(_decompress(batch.enc, batch.body), raw=False, strict_map_key=False)
        tags = doc["tags"]
        tables: dict[str, Table] = {}
        for name, t in doc["tables"].items():
            cols = list(t["cols"])
            tag_i = cols.index(TAG_COLUMN) if TAG_COLUMN in cols else -1
            off_i = [i for i, c in enumerate(cols) if c in OFFSET_COLUMNS]
            rows = []
            for row in t["rows"]:
                row = list(row)
                if tag_i >= 0:
                    row[tag_i] = tags[row[tag_i]]
                for i in off_i:
                    row[i] = batch.t0 + row[i]
                rows.append(row)
            tables[name] = Table(cols, rows)
    except WireFormatError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, msgpack.UnpackException) as exc:
        raise WireFormatError(f"malformed body in batch seq {batch.seq}: {exc!r}") from exc
    return Body(tables)


def frame_tags(frame: bytes) -> frozenset[str]:
    """The full tag names ``frame``'s body carries: those of every ``tag`` column and the names listed in
    every ``tags`` column (a ``gap`` table's). The signature is not checked.

    This is what the buffer is given to name the tags of the batches it evicts (``buffer/__init__.py``). Pure;
    raises :class:`WireFormatError` if the frame or its body does not decode.
    """
    body = decode_body(open_frame(frame))
    names: set[str] = set()
    for table in body.tables.values():
        for col_name in (TAG_COLUMN, TAG_NAMES_COLUMN):
            if col_name not in table.cols:
                continue
            i = table.cols.index(col_name)
            for row in table.rows:
                value = row[i]
                if isinstance(value, str):
                    names.add(value)
                elif isinstance(value, list):
                    names.update(v for v in value if isinstance(v, str))
    return frozenset(names)


def encode_frame(
    signer: BatchSigner,
    *,
    gw: str,
    seq: int,
    prev: bytes,
    created: int,
    t0: int,
    t1: int,
    kind: str,
    enc: str,
    body: bytes,
) -> Batch:
    """Build, sign and pack one frame. Returns the opened form (with ``hash``) so the caller can chain."""
    header = {
        "v": FORMAT_VERSION, "gw": gw, "seq": seq, "prev": prev, "created": created, "t0": t0, "t1": t1,
        "kind": kind, "enc": enc, "alg": signer.alg, "kid": signer.kid, "body": body,
    }
    signed = msgpack.packb(header, use_bin_type=True)
    sig = signer.sign(signed)
    frame = msgpack.packb([FORMAT_VERSION, signed, sig], use_bin_type=True)
    return Batch(frame, signed, sig, hashlib.sha256(signed).digest(), gw, seq, prev, created, t0, t1, kind,
                 enc, signer.alg, signer.kid, body)


def open_frame(frame: bytes) -> Batch:
    """Parse a frame without checking its signature. Raises :class:`WireFormatError` if malformed."""
    try:
        outer = msgpack.unpackb(frame, raw=False)
        if not isinstance(outer, list) or len(outer) != 3:
            raise WireFormatError("a frame is a 3-element msgpack array")
        version, signed, sig = outer
        if version != FORMAT_VERSION:
            raise WireFormatError(f"unsupported frame format {version!r}")
        if not isinstance(signed, bytes) or not isinstance(sig, bytes):
            raise WireFormatError("signed part and signature must be binary")
        h = msgpack.unpackb(signed, raw=False)
        if not isinstance(h, dict) or h.get("v") != FORMAT_VERSION:
            raise WireFormatError("signed part is not a version-1 header map")
        batch = Batch(frame, signed, sig, hashlib.sha256(signed).digest(), str(h["gw"]), int(h["seq"]),
                      bytes(h["prev"]), int(h["created"]), int(h["t0"]), int(h["t1"]), str(h["kind"]),
                      str(h["enc"]), str(h["alg"]), str(h["kid"]), bytes(h["body"]))
    except WireFormatError:
        raise
    except (KeyError, TypeError, ValueError, msgpack.UnpackException) as exc:
        raise WireFormatError(f"malformed frame: {exc!r}") from exc
    if batch.seq < 1 or len(batch.prev) != 32:
        raise WireFormatError(f"bad header: seq {batch.seq}, prev of {len(batch.prev)} bytes")
    return batch


def verify_frame(frame: bytes, trust: TrustStore) -> Batch:
    """Open a frame and check its signature against ``trust``.

    Raises :class:`WireFormatError` or :class:`SignatureError`. Chain continuity needs the neighbours and is
    checked by the receiver, not here.
    """
    batch = open_frame(frame)
    try:
        trust.verify(batch.alg, batch.kid, batch.signed, batch.sig)
    except SignatureError as exc:
        raise SignatureError(f"batch {batch.gw}/{batch.seq}: {exc.message}", hint=exc.hint) from exc
    return batch
