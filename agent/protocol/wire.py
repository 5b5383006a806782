"""The batch wire format (format version 2). docs/protocol.md is the normative text; this is its code.

A **frame** is what is published on MQTT and stored in the buffer, byte for byte::

    frame  = msgpack array [ 2, signed: bin, sig: bin ]
    signed = msgpack map {
        "v":       2,            format version, equal to the frame's
        "gw":      str,          gateway id
        "seq":     uint,         batch sequence, 1, 2, 3, ... per gateway, never repeats, never goes back
        "prev":    bin(32),      SHA-256 of the previous batch's ``signed`` bytes (32 zero bytes for seq 1)
        "created": int,          Unix ms when the batch was made
        "t0":      int,          Unix ms, earliest timestamp covered
        "t1":      int,          Unix ms, latest timestamp covered (every time in the body is in [t0, t1])
        "kind":    str,          "data" | "alarm" | "gap" | "catalog"   (which lane it travels in)
        "cat":     uint,         seq of the tag catalogue in force when the batch was made, 0 for none
        "enc":     str,          body compression: "zstd" | "zlib" | "none"
        "alg":     str,          signature algorithm, "ed25519"
        "kid":     str,          key id: first 16 hex digits of SHA-256 of the raw public key
        "body":    bin           compressed msgpack body, below
    }
    sig    = signature by key ``kid`` with ``alg`` over the exact ``signed`` bytes

Version 1 frames (``[1, ...]``, ``"v": 1``, no ``cat``) are still read: they open with ``cat`` 0.

The batch **hash** is SHA-256(signed). Because ``signed`` contains ``prev``, the batches form a hash chain:
a batch altered anywhere breaks its own signature; a batch removed leaves a sequence gap and its successor's
``prev`` pointing at nothing. ``alg`` and ``kid`` are inside the signed part so they cannot be swapped.

The **body** (after decompression) is a msgpack map ``{"tags": [str...], "tables": {name: table}}`` where
each table is ``{"cols": [str...], "rows": [[...]...]}``. A ``tag`` column holds an index into ``tags``
(the per-batch tag dictionary); columns named ``ts`` or ``start`` hold millisecond offsets from ``t0``.
The tables and their columns are defined in :mod:`agent.protocol.tables`. Receivers must ignore tables and
columns they do not know.

Every decoder here is at a trust boundary: each value is type- and range-checked against
:mod:`agent.protocol.limits` before it is used or allocated, and refusals are :class:`WireFormatError` with a
short reason that never quotes the input. Rejected: decoding with msgpack's defaults and checking afterwards,
which lets one frame allocate gigabytes (``bytes(n)`` of a huge int, millions of rows) before any check runs.
"""

from __future__ import annotations

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "VERSIONS",
    "Batch",
    "Body",
    "Table",
    "claimed_identity",
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

from agent.core.errors import SignatureError, WireBoundsError, WireFormatError
from agent.protocol.limits import (
    MAX_BODY_BYTES,
    MAX_BODY_CELLS,
    MAX_COLUMNS,
    MAX_FRAME_BYTES,
    MAX_HEADER_CONTAINERS,
    MAX_HEADER_KEYS,
    MAX_ID_CHARS,
    MAX_ROWS_PER_BATCH,
    MAX_SEQ,
    MAX_STRING_BYTES,
    MAX_TABLES,
    MAX_TAG_CHARS,
    MAX_TIME_MS,
    MAX_ZSTD_WINDOW_BYTES,
    MIN_TIME_MS,
)
from agent.protocol.signing import BatchSigner, TrustStore
from agent.protocol.tables import (
    ABSOLUTE_TIME_COLUMNS,
    KINDS,
    OFFSET_COLUMNS,
    TABLES,
    TAG_COLUMN,
    TAG_NAMES_COLUMN,
)

_first = operator.itemgetter(0)

FORMAT_VERSION = 2
"""The frame format version :func:`encode_frame` writes."""
VERSIONS = (1, 2)
"""The frame format versions :func:`open_frame` reads (a version 1 frame has no ``cat``)."""
GENESIS_HASH = bytes(32)
_ZSTD_STEP = 1024  # compressed bytes fed at a time: a zstd block of 4 bytes can stand for 128 KiB, so one
#                    step yields at most 32 MiB beyond what was checked before it

_zstd_c = zstandard.ZstdCompressor(level=3)


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
    cat: int = 0
    """The seq of the tag catalogue in force when the batch was made (0: none yet, and every v1 frame)."""


def _compress(enc: str, data: bytes) -> bytes:
    if enc == "zstd":
        return _zstd_c.compress(data)
    if enc == "zlib":
        return zlib.compress(data, 6)
    if enc == "none":
        return data
    raise WireFormatError("unknown body encoding", key="enc")


def _decompress(enc: str, data: bytes) -> bytes:
    """The body's bytes, never more than MAX_BODY_BYTES of them whatever the compressed stream declares, and
    only from exactly one complete stream (a truncated one, or bytes after it, are refused)."""
    try:
        if enc == "zstd":
            return _unzstd(data)
        if enc == "zlib":
            d = zlib.decompressobj()
            out = d.decompress(data, MAX_BODY_BYTES)
            if d.unconsumed_tail:
                raise WireBoundsError("body decompresses to more than 64 MiB", key="body")
            if not d.eof or d.unused_data:
                raise WireFormatError("body is not exactly one complete zlib stream", key="body")
            return out
    except (zstandard.ZstdError, zlib.error) as exc:
        raise WireFormatError(f"body does not decompress with {enc}", key="body") from exc
    if enc == "none":
        if len(data) > MAX_BODY_BYTES:
            raise WireBoundsError("body larger than 64 MiB", key="body")
        return data
    raise WireFormatError("unknown body encoding", key="enc")


def _unzstd(data: bytes) -> bytes:
    """Stream-decompress one zstd frame with a hard output cap. The one-shot call trusts a content size the
    frame header declares (3 KB declaring 100 MiB became 100 MiB), and streaming readers do not notice a
    truncated frame; a decompression object fed a little input at a time does both."""
    d = zstandard.ZstdDecompressor(max_window_size=MAX_ZSTD_WINDOW_BYTES).decompressobj()
    view = memoryview(data)
    parts: list[bytes] = []
    size = 0
    for i in range(0, len(data), _ZSTD_STEP):
        part = d.decompress(view[i:i + _ZSTD_STEP])
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise WireBoundsError("body decompresses to more than 64 MiB", key="body")
        parts.append(part)
        if d.eof:
            if d.unused_data or i + _ZSTD_STEP < len(data):
                raise WireFormatError("bytes after the body's zstd frame", key="body")
            return b"".join(parts)
    raise WireFormatError("body is not a complete zstd frame", key="body")


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


class _Budget:
    """Counts the values a body's tables unpack to (MAX_BODY_CELLS): each array and map as one, plus its
    elements or entries. msgpack calls it for each list or map as it is completed, so an amplifying body
    stops before it is all in memory."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_BODY_CELLS

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise WireBoundsError(f"body holds more than {MAX_BODY_CELLS} values", key="body")

    def list_hook(self, items: list[Any]) -> list[Any]:
        self.take(len(items) + 1)  # an empty list costs memory too
        return items

    def pairs_hook(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        self.take(len(pairs) + 1)
        out = dict(pairs)
        if len(out) != len(pairs):
            raise WireFormatError("a map in the body repeats a key", key="body")
        return out


def _map_header(u: msgpack.Unpacker, limit: int, what: str) -> int:
    n: int = u.read_map_header()
    if n > limit:
        raise WireBoundsError(f"{what} has more than {limit} entries", key="body")
    return n


def _ident(value: object, what: str, limit: int = MAX_ID_CHARS) -> str:
    if type(value) is not str or not 0 < len(value) <= limit:
        raise WireFormatError(f"{what} is not a string of 1 to {limit} characters", key=what)
    return value


def _read_tables(u: msgpack.Unpacker, budget: _Budget) -> dict[str, tuple[list[str], list[Any]]]:
    tables: dict[str, tuple[list[str], list[Any]]] = {}
    rows_total = 0
    for _ in range(_map_header(u, MAX_TABLES, "tables")):
        name = _ident(u.unpack(), "table name")
        if name in tables:
            raise WireFormatError("a table appears twice", key="body")
        cols: list[str] | None = None
        rows: list[Any] | None = None
        for _ in range(_map_header(u, 8, "a table")):
            key = u.unpack()
            if key == "cols" and cols is None:
                cols = u.unpack()
                if type(cols) is not list or len(cols) > MAX_COLUMNS:
                    raise WireFormatError(f"cols is not a list of at most {MAX_COLUMNS} names", key="cols")
                for c in cols:
                    _ident(c, "column name")
                if len(set(cols)) != len(cols):
                    raise WireFormatError("a column name appears twice", key="cols")
            elif key == "rows" and rows is None:
                count: int = u.read_array_header()
                rows_total += count
                if rows_total > MAX_ROWS_PER_BATCH:
                    raise WireBoundsError(f"more than {MAX_ROWS_PER_BATCH} rows", key="rows")
                budget.take(count)
                rows = [u.unpack() for _ in range(count)]
            elif key in ("cols", "rows"):
                raise WireFormatError(f"a table has two {key}", key=str(key))
            else:
                u.unpack()  # decoded (not skipped) so that every value is checked, an ignored one too
        if cols is None or rows is None:
            raise WireFormatError("a table without cols or rows", key="body")
        tables[name] = (cols, rows)
    return tables


def _read_body(data: bytes) -> tuple[list[str], dict[str, tuple[list[str], list[Any]]]]:
    """The body's tag dictionary and tables, read piece by piece so that every count is checked against its
    bound before what it counts is unpacked."""
    budget = _Budget()
    u = msgpack.Unpacker(raw=False, strict_map_key=True, list_hook=budget.list_hook,
                         object_pairs_hook=budget.pairs_hook, max_buffer_size=max(len(data), 1),
                         max_str_len=MAX_STRING_BYTES, max_bin_len=MAX_STRING_BYTES,
                         max_array_len=MAX_ROWS_PER_BATCH, max_map_len=MAX_COLUMNS, max_ext_len=0,
                         ext_hook=_no_ext)
    u.feed(data)
    tags: list[str] | None = None
    tables: dict[str, tuple[list[str], list[Any]]] | None = None
    for _ in range(_map_header(u, 8, "the body")):
        key = u.unpack()
        if key == "tags" and tags is None:
            tags = u.unpack()
            if type(tags) is not list:
                raise WireFormatError("tags is not a list", key="tags")
            for t in tags:
                _ident(t, "tags", MAX_TAG_CHARS)
        elif key == "tables" and tables is None:
            tables = _read_tables(u, budget)
        elif key in ("tags", "tables"):
            raise WireFormatError(f"the body has two {key}", key=str(key))
        else:
            u.unpack()  # decoded (not skipped) so that every value is checked, an ignored one too
    if tags is None or tables is None:
        raise WireFormatError("the body lacks tags or tables", key="body")
    if u.tell() != len(data):
        raise WireFormatError("bytes after the body", key="body")
    return tags, tables


def decode_body(batch: Batch) -> Body:
    """Decompress and unpack a batch body, resolving tag indexes and time offsets.

    Every bound of :mod:`agent.protocol.limits` is checked before what it bounds is allocated; a tag index
    must name an entry of the dictionary, a time offset must be an int placing the row within ``[t0, t1]``,
    and an absolute time column of a table of this version (``ABSOLUTE_TIME_COLUMNS``) an int in [0, 2**53]
    (or nil where the column allows it). Raises :class:`WireFormatError` (:class:`WireBoundsError` for a
    bound) with a short reason that never quotes the body."""
    try:
        tags, raw_tables = _read_body(_decompress(batch.enc, batch.body))
    except WireFormatError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # msgpack's own refusals: not msgpack, a limit exceeded, a non-string map key, bad UTF-8.
        raise WireFormatError("body is not a well-formed msgpack body", key="body") from exc
    t0, span, n_tags = batch.t0, batch.t1 - batch.t0, len(tags)
    tables: dict[str, Table] = {}
    for name, (cols, rows) in raw_tables.items():
        what = name if name in TABLES else "table"  # a reason names only what this code defines
        width = len(cols)
        tag_i = cols.index(TAG_COLUMN) if TAG_COLUMN in cols else -1
        off_i = [i for i, c in enumerate(cols) if c in OFFSET_COLUMNS]
        absolute = ABSOLUTE_TIME_COLUMNS.get(name, {})
        abs_i = [(i, absolute[c]) for i, c in enumerate(cols) if c in absolute]
        for row in rows:
            if type(row) is not list or len(row) != width:
                raise WireFormatError(f"a {what} row is not a list of {width} values", key=what)
            if tag_i >= 0:
                t = row[tag_i]
                if type(t) is not int or not 0 <= t < n_tags:
                    raise WireFormatError(f"a {what} row's tag is not an index into tags", key=what)
                row[tag_i] = tags[t]
            for i in off_i:
                o = row[i]
                if type(o) is not int or not 0 <= o <= span:
                    raise WireFormatError(f"a {what} row's {cols[i]} is not an int offset within [t0, t1]",
                                          key=what)
                row[i] = t0 + o
            for i, nullable in abs_i:
                v = row[i]
                if not (type(v) is int and MIN_TIME_MS <= v <= MAX_TIME_MS) and not (nullable and v is None):
                    raise WireBoundsError(f"a {what} row's {cols[i]} is not an int in [0, 2**53]", key=what)
        tables[name] = Table(cols, rows)
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
    cat: int = 0,
) -> Batch:
    """Build, sign and pack one frame (version 2). Returns the opened form (with ``hash``) so the caller can
    chain. ``cat`` is the seq of the tag catalogue in force (0 while there is none)."""
    header = {
        "v": FORMAT_VERSION, "gw": gw, "seq": seq, "prev": prev, "created": created, "t0": t0, "t1": t1,
        "kind": kind, "cat": cat, "enc": enc, "alg": signer.alg, "kid": signer.kid, "body": body,
    }
    signed = msgpack.packb(header, use_bin_type=True)
    sig = signer.sign(signed)
    frame = msgpack.packb([FORMAT_VERSION, signed, sig], use_bin_type=True)
    return Batch(frame, signed, sig, hashlib.sha256(signed).digest(), gw, seq, prev, created, t0, t1, kind,
                 enc, signer.alg, signer.kid, body, cat)


def _no_ext(code: int, data: bytes) -> Any:
    """msgpack's ``ext_hook``: an extension type is refused wherever it appears, including an empty one (which
    ``max_ext_len=0`` lets through) and one inside a value this code would otherwise ignore."""
    del code, data
    raise WireFormatError("a msgpack extension type, which no frame may hold", key="ext")


class _HeaderBudget:
    """msgpack hooks for one header: refuse a repeated key, and stop as soon as more than
    ``MAX_HEADER_CONTAINERS`` arrays and maps were built (each is built with at most ``MAX_HEADER_KEYS``
    elements, innermost first, so a refused header costs a few kilobytes whatever its size)."""

    __slots__ = ("containers",)

    def __init__(self) -> None:
        self.containers = 0

    def _count(self) -> None:
        self.containers += 1
        if self.containers > MAX_HEADER_CONTAINERS:
            raise WireBoundsError(f"more than {MAX_HEADER_CONTAINERS} arrays and maps in the header", key="header")

    def map(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        self._count()
        out = dict(pairs)
        if len(out) != len(pairs):
            raise WireFormatError("the header repeats a key", key="header")
        return out

    def array(self, items: list[Any]) -> list[Any]:
        self._count()
        return items


def _unpack_header(signed: bytes) -> Any:
    """The header map's msgpack, within the header's bounds (raises WireFormatError, or msgpack's own errors for
    malformed bytes, which the callers convert)."""
    budget = _HeaderBudget()
    return msgpack.unpackb(signed, raw=False, strict_map_key=True, object_pairs_hook=budget.map,
                           list_hook=budget.array, max_map_len=MAX_HEADER_KEYS, max_array_len=MAX_HEADER_KEYS,
                           max_str_len=MAX_STRING_BYTES, max_bin_len=MAX_FRAME_BYTES, max_ext_len=0,
                           ext_hook=_no_ext)


def _field(h: dict[Any, Any], key: str) -> Any:
    if key not in h:
        raise WireFormatError(f"header has no {key!r}", key=key)
    return h[key]


def _int_field(h: dict[Any, Any], key: str, low: int, high: int) -> int:
    value = _field(h, key)
    if type(value) is not int:  # exactly int: not a bool, not a float such as inf
        raise WireFormatError(f"header {key!r} is not an int", key=key)
    if not low <= value <= high:
        raise WireBoundsError(f"header {key!r} is not in [{low}, {_bound_text(high)}]", key=key)
    return value


def _bound_text(n: int) -> str:
    return {MAX_SEQ: "2**63-1", MAX_TIME_MS: "2**53"}.get(n, str(n))


def _str_field(h: dict[Any, Any], key: str) -> str:
    value = _field(h, key)
    if type(value) is not str or not 0 < len(value) <= MAX_ID_CHARS:
        raise WireFormatError(f"header {key!r} is not a string of 1 to {MAX_ID_CHARS} characters", key=key)
    return value


def _bytes_field(h: dict[Any, Any], key: str) -> bytes:
    value = _field(h, key)
    if type(value) is not bytes:
        raise WireFormatError(f"header {key!r} is not binary", key=key)
    return value


def open_frame(frame: bytes) -> Batch:
    """Parse a frame without checking its signature. Accepts format versions 1 and 2 (a v1 frame has
    ``cat`` 0). Every header value is type- and range-checked before it is used, so a frame costs at most its
    own size to refuse. Raises :class:`WireFormatError` (:class:`WireBoundsError` for a value beyond a bound)
    with a short reason that never quotes the frame."""
    if type(frame) is not bytes:
        raise WireFormatError("a frame is bytes", key="frame")
    if len(frame) > MAX_FRAME_BYTES:
        raise WireBoundsError("frame larger than 16 MiB", key="frame")
    try:
        outer = msgpack.unpackb(frame, raw=False, max_array_len=3, max_map_len=0, max_str_len=0,
                                max_bin_len=MAX_FRAME_BYTES, max_ext_len=0, ext_hook=_no_ext)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireFormatError("a frame is a msgpack array [version, signed, sig]", key="frame") from exc
    if type(outer) is not list or len(outer) != 3:
        raise WireFormatError("a frame is a msgpack array [version, signed, sig]", key="frame")
    version, signed, sig = outer
    if type(version) is not int or version not in VERSIONS:
        raise WireFormatError("unsupported frame format version", key="v")
    if type(signed) is not bytes or type(sig) is not bytes:
        raise WireFormatError("signed part and signature must be binary", key="frame")
    try:
        h = _unpack_header(signed)
    except WireFormatError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise WireFormatError("signed part is not a msgpack map", key="header") from exc
    if type(h) is not dict:
        raise WireFormatError("signed part is not a msgpack map", key="header")
    v = _field(h, "v")
    if type(v) is not int or v != version:
        raise WireFormatError("header 'v' differs from the frame's version", key="v")
    gw = _str_field(h, "gw")
    seq = _int_field(h, "seq", 1, MAX_SEQ)
    prev = _bytes_field(h, "prev")
    if len(prev) != 32:
        raise WireFormatError("header 'prev' is not 32 bytes", key="prev")
    created = _int_field(h, "created", MIN_TIME_MS, MAX_TIME_MS)
    t0 = _int_field(h, "t0", MIN_TIME_MS, MAX_TIME_MS)
    t1 = _int_field(h, "t1", t0, MAX_TIME_MS)
    kind = _str_field(h, "kind")
    if kind not in KINDS:
        raise WireFormatError(f"header 'kind' is not one of {', '.join(KINDS)}", key="kind")
    enc = _str_field(h, "enc")
    alg = _str_field(h, "alg")
    kid = _str_field(h, "kid")
    body = _bytes_field(h, "body")
    cat = _int_field(h, "cat", 0, seq - 1) if version >= 2 else 0
    return Batch(frame, signed, sig, hashlib.sha256(signed).digest(), gw, seq, prev, created, t0, t1, kind,
                 enc, alg, kid, body, cat)


def claimed_identity(frame: bytes) -> tuple[str | None, int | None, str | None]:
    """The ``(gw, seq, kid)`` a frame claims, each None unless readable and within its bound, for accounting a
    frame :func:`open_frame` refused. Never raises; claims nothing is true (the signature is not checked)."""
    try:
        outer = msgpack.unpackb(frame, raw=False, max_array_len=3, max_map_len=0, max_str_len=0,
                                max_bin_len=MAX_FRAME_BYTES, max_ext_len=0,
                                ext_hook=_no_ext) if len(frame) <= MAX_FRAME_BYTES else None
        signed = outer[1] if type(outer) is list and len(outer) == 3 and type(outer[1]) is bytes else b""
        h = _unpack_header(signed) if signed else None
    except (ValueError, TypeError, msgpack.UnpackException, WireFormatError):
        return None, None, None
    if type(h) is not dict:
        return None, None, None
    gw, seq, kid = h.get("gw"), h.get("seq"), h.get("kid")
    return (gw if type(gw) is str and 0 < len(gw) <= MAX_ID_CHARS else None,
            seq if type(seq) is int and 1 <= seq <= MAX_SEQ else None,
            kid if type(kid) is str and 0 < len(kid) <= MAX_ID_CHARS else None)


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
