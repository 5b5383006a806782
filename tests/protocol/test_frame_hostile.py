"""Hostile frames: every value is type- and range-checked before it is used or allocated, and a refusal is a
WireFormatError with a short reason, whatever the frame holds and whoever signed it.

The attacker here holds a valid gateway key (the frames are properly signed): a bound is about cost, so it
is enforced before, and regardless of, the signature. Each case is a row of a scenario table.
"""

from __future__ import annotations

import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.errors import WireBoundsError, WireFormatError
from agent.protocol import wire
from agent.protocol.limits import MAX_FRAME_BYTES, MAX_REASON_CHARS
from agent.protocol.signing import BatchSigner

SIGNER = BatchSigner(Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
T0 = 1_700_000_000_000


def _body(doc: Any = None, *, raw: bytes | None = None, enc: str = "none") -> bytes:
    data = raw if raw is not None else msgpack.packb(doc, use_bin_type=True)
    return {"none": data, "zstd": zstandard.ZstdCompressor().compress(data) if enc == "zstd" else b"",
            "zlib": zlib.compress(data) if enc == "zlib" else b""}[enc]


GOOD_BODY = {"tags": ["plc1.ch4"], "tables": {"raw": {"cols": ["tag", "ts", "value"], "rows": [[0, 5, 1.0]]}}}


def header(**changes: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"v": 2, "gw": "gw-01", "seq": 7, "prev": bytes(32), "created": T0 + 20, "t0": T0,
                         "t1": T0 + 10, "kind": "data", "enc": "none", "alg": SIGNER.alg, "kid": SIGNER.kid,
                         "body": _body(GOOD_BODY), "cat": 0}
    for key, value in changes.items():
        if value is _DROP:
            del h[key]
        else:
            h[key] = value
    return h


_DROP = object()


def signed_frame(h: dict[str, Any] | bytes, version: Any = 2) -> bytes:
    """A properly signed frame around any header (a dict, or header bytes as they are)."""
    signed = h if isinstance(h, bytes) else msgpack.packb(h, use_bin_type=True)
    return msgpack.packb([version, signed, SIGNER.sign(signed)], use_bin_type=True)


def _dup_key_header() -> bytes:
    """A header map whose key "seq" appears twice (a msgpack decoder would silently keep one)."""
    h = header()
    packed = msgpack.packb(h, use_bin_type=True)
    assert packed[0] == 0x80 + len(h)
    return bytes([0x80 + len(h) + 1]) + packed[1:] + msgpack.packb("seq") + msgpack.packb(8)


# (case id, frame, expected error class) for frames open_frame must refuse.
HEADER_CASES: list[tuple[str, Callable[[], bytes], type[WireFormatError]]] = [
    ("seq 2**63", lambda: signed_frame(header(seq=2**63)), WireBoundsError),
    ("seq 2**64-1", lambda: signed_frame(header(seq=2**64 - 1)), WireBoundsError),
    ("seq inf", lambda: signed_frame(header(seq=float("inf"))), WireFormatError),
    ("seq nan", lambda: signed_frame(header(seq=float("nan"))), WireFormatError),
    ("seq 1.0", lambda: signed_frame(header(seq=1.0)), WireFormatError),
    ("seq true", lambda: signed_frame(header(seq=True)), WireFormatError),
    ("seq 0", lambda: signed_frame(header(seq=0)), WireBoundsError),
    ("seq negative", lambda: signed_frame(header(seq=-5)), WireBoundsError),
    ("seq a string", lambda: signed_frame(header(seq="7")), WireFormatError),
    ("seq missing", lambda: signed_frame(header(seq=_DROP)), WireFormatError),
    ("prev an int (bytes(n) would allocate n)", lambda: signed_frame(header(prev=2**62)), WireFormatError),
    ("prev 31 bytes", lambda: signed_frame(header(prev=bytes(31))), WireFormatError),
    ("prev a str", lambda: signed_frame(header(prev="0" * 32)), WireFormatError),
    ("prev a list", lambda: signed_frame(header(prev=[0] * 32)), WireFormatError),
    ("created negative", lambda: signed_frame(header(created=-1)), WireBoundsError),
    ("created inf", lambda: signed_frame(header(created=float("inf"))), WireFormatError),
    ("t0 beyond 2**53", lambda: signed_frame(header(t0=2**53 + 1, t1=2**53 + 2)), WireBoundsError),
    ("t1 before t0", lambda: signed_frame(header(t1=T0 - 1)), WireBoundsError),
    ("t1 a float", lambda: signed_frame(header(t1=float(T0 + 10))), WireFormatError),
    ("gw too long", lambda: signed_frame(header(gw="g" * 129)), WireFormatError),
    ("gw empty", lambda: signed_frame(header(gw="")), WireFormatError),
    ("gw an int", lambda: signed_frame(header(gw=1)), WireFormatError),
    ("gw bytes", lambda: signed_frame(header(gw=b"gw-01")), WireFormatError),
    ("kid a map", lambda: signed_frame(header(kid={"a": 1})), WireFormatError),
    ("kind unknown", lambda: signed_frame(header(kind="evil")), WireFormatError),
    ("kind huge", lambda: signed_frame(header(kind="d" * 20000)), WireFormatError),
    ("enc None", lambda: signed_frame(header(enc=None)), WireFormatError),
    ("alg a list", lambda: signed_frame(header(alg=["ed25519"])), WireFormatError),
    ("body a str", lambda: signed_frame(header(body="x")), WireFormatError),
    ("body an int", lambda: signed_frame(header(body=2**40)), WireFormatError),
    ("cat missing in v2", lambda: signed_frame(header(cat=_DROP)), WireFormatError),
    ("cat = own seq", lambda: signed_frame(header(cat=7)), WireBoundsError),
    ("cat negative", lambda: signed_frame(header(cat=-1)), WireBoundsError),
    ("cat a float", lambda: signed_frame(header(cat=0.0)), WireFormatError),
    ("v differs from frame version", lambda: signed_frame(header(v=1)), WireFormatError),
    ("v true", lambda: signed_frame(header(v=True), version=True), WireFormatError),
    ("version 3", lambda: signed_frame(header(v=3), version=3), WireFormatError),
    ("version 2**64-1", lambda: signed_frame(header(), version=2**64 - 1), WireFormatError),
    ("header repeats a key", lambda: signed_frame(_dup_key_header()), WireFormatError),
    ("header a list", lambda: signed_frame(msgpack.packb([1, 2, 3])), WireFormatError),
    ("header not msgpack", lambda: signed_frame(b"\xc1\xc1"), WireFormatError),
    ("header with an ext value", lambda: signed_frame(msgpack.packb({**header(), "x": msgpack.ExtType(1, b"a")})),
     WireFormatError),
    ("header with a timestamp", lambda: signed_frame(msgpack.packb({**header(), "x": msgpack.Timestamp(1)})),
     WireFormatError),
    ("header with an empty ext value (ext 8 of length 0) under an unknown key",
     lambda: signed_frame(msgpack.packb(header())[:1].replace(bytes([0x8d]), bytes([0x8e]))
                          + msgpack.packb(header())[1:] + msgpack.packb("x") + b"\xc7\x00\x05"), WireFormatError),
    ("header a huge map", lambda: signed_frame(msgpack.packb({str(i): i for i in range(5000)})), WireFormatError),
    ("outer array of 4", lambda: msgpack.packb([2, b"a", b"b", b"c"]), WireFormatError),
    ("outer a map", lambda: msgpack.packb({"a": 1}), WireFormatError),
    ("outer signed a str", lambda: msgpack.packb([2, "abc", b"sig"]), WireFormatError),
    ("outer array32 header of 2**32-1", lambda: b"\xdd\xff\xff\xff\xff", WireFormatError),
    ("outer trailing bytes", lambda: signed_frame(header()) + b"\x00", WireFormatError),
    ("empty", lambda: b"", WireFormatError),
    ("frame over 16 MiB", lambda: msgpack.packb([2, bytes(MAX_FRAME_BYTES), b"s"]), WireBoundsError),
]


@pytest.mark.parametrize(("case", "make", "error"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_hostile_header_is_refused(case: str, make: Callable[[], bytes], error: type[WireFormatError]) -> None:
    """Each hostile header is refused with the expected class and a short reason, quickly."""
    frame = make()
    started = time.perf_counter()
    with pytest.raises(error) as caught:
        wire.open_frame(frame)
    assert time.perf_counter() - started < 1.0, case
    assert len(caught.value.message) <= MAX_REASON_CHARS


def _rows_bomb(rows: int) -> bytes:
    """A body whose raw table announces ``rows`` rows of [0, 0]: 3 bytes each, compressing to almost nothing."""
    return b"\x82" + msgpack.packb("tags") + msgpack.packb(["a.b"]) + msgpack.packb("tables") + b"\x81" \
        + msgpack.packb("raw") + b"\x82" + msgpack.packb("cols") + msgpack.packb(["tag", "ts"]) \
        + msgpack.packb("rows") + b"\xdd" + rows.to_bytes(4, "big") + b"\x92\x00\x00" * rows


def _nested_bomb() -> bytes:
    """One cell holding 900 arrays of 65,535 empty arrays each: 59 million lists from 59 MB."""
    inner = b"\xdc\xff\xff" + b"\x90" * 65535
    cell = b"\xdc" + (900).to_bytes(2, "big") + inner * 900
    return b"\x82" + msgpack.packb("tags") + msgpack.packb(["a.b"]) + msgpack.packb("tables") + b"\x81" \
        + msgpack.packb("raw") + b"\x82" + msgpack.packb("cols") + msgpack.packb(["tag", "ts", "value"]) \
        + msgpack.packb("rows") + b"\x91\x93\x00\x00" + cell


def _table(cols: Any, rows: Any, tags: Any = ("plc1.ch4",)) -> dict[str, Any]:
    return {"tags": list(tags) if isinstance(tags, tuple) else tags, "tables": {"raw": {"cols": cols, "rows": rows}}}


RAW_COLS = ["tag", "ts", "value"]
BIG_ZEROS = 100 * 1024 * 1024

# (case id, body bytes and enc, expected error class) for bodies decode_body must refuse.
BODY_CASES: list[tuple[str, Callable[[], tuple[bytes, str]], type[WireFormatError]]] = [
    ("zstd frame declaring 100 MiB (3 KB)",
     lambda: (zstandard.ZstdCompressor(level=19).compress(bytes(BIG_ZEROS)), "zstd"), WireBoundsError),
    ("zstd stream of 100 MiB without a declared size",
     lambda: (zstandard.ZstdCompressor(write_content_size=False).compress(bytes(BIG_ZEROS)), "zstd"),
     WireBoundsError),
    ("zlib of 100 MiB", lambda: (zlib.compress(bytes(BIG_ZEROS), 9), "zlib"), WireBoundsError),
    ("zstd truncated", lambda: (_body(GOOD_BODY, enc="zstd")[:-3], "zstd"), WireFormatError),
    ("zstd followed by a second frame",
     lambda: (_body(GOOD_BODY, enc="zstd") * 2, "zstd"), WireFormatError),
    ("zstd followed by garbage", lambda: (_body(GOOD_BODY, enc="zstd") + b"xyz", "zstd"), WireFormatError),
    ("zlib truncated", lambda: (_body(GOOD_BODY, enc="zlib")[:-3], "zlib"), WireFormatError),
    ("zlib followed by garbage", lambda: (_body(GOOD_BODY, enc="zlib") + b"xyz", "zlib"), WireFormatError),
    ("unknown enc", lambda: (_body(GOOD_BODY), "lz4"), WireFormatError),
    ("8 million rows from a tiny zstd body", lambda: (_body(raw=_rows_bomb(8_000_000), enc="zstd"), "zstd"),
     WireBoundsError),
    ("rows over the bound in two tables", lambda: (_body({"tags": ["a.b"], "tables": {
        "raw": {"cols": ["tag", "ts"], "rows": [[0, 0]] * 150_000},
        "win": {"cols": ["tag", "start"], "rows": [[0, 0]] * 150_000}}}, enc="zstd"), "zstd"), WireBoundsError),
    ("59 million nested lists in one cell", lambda: (_body(raw=_nested_bomb(), enc="zstd"), "zstd"),
     WireBoundsError),
    ("tag index -1 (would name the last tag)", lambda: (_body(_table(RAW_COLS, [[-1, 0, 1.0]])), "none"),
     WireFormatError),
    ("tag index = len(tags)", lambda: (_body(_table(RAW_COLS, [[1, 0, 1.0]])), "none"), WireFormatError),
    ("tag index huge", lambda: (_body(_table(RAW_COLS, [[2**64 - 1, 0, 1.0]])), "none"), WireFormatError),
    ("tag index true", lambda: (_body(_table(RAW_COLS, [[True, 0, 1.0]])), "none"), WireFormatError),
    ("tag index a float", lambda: (_body(_table(RAW_COLS, [[0.0, 0, 1.0]])), "none"), WireFormatError),
    ("tag index a str", lambda: (_body(_table(RAW_COLS, [["plc1.ch4", 0, 1.0]])), "none"), WireFormatError),
    ("offset a float", lambda: (_body(_table(RAW_COLS, [[0, 1.5, 1.0]])), "none"), WireFormatError),
    ("offset inf", lambda: (_body(_table(RAW_COLS, [[0, float("inf"), 1.0]])), "none"), WireFormatError),
    ("offset nil", lambda: (_body(_table(RAW_COLS, [[0, None, 1.0]])), "none"), WireFormatError),
    ("offset a str", lambda: (_body(_table(RAW_COLS, [[0, "5", 1.0]])), "none"), WireFormatError),
    ("offset negative", lambda: (_body(_table(RAW_COLS, [[0, -1, 1.0]])), "none"), WireFormatError),
    ("offset beyond t1", lambda: (_body(_table(RAW_COLS, [[0, 11, 1.0]])), "none"), WireFormatError),
    ("offset 2**64-1", lambda: (_body(_table(RAW_COLS, [[0, 2**64 - 1, 1.0]])), "none"), WireFormatError),
    ("alarm detected_ms 2**60", lambda: (_body({"tags": ["a.b"], "tables": {"alarm": {
        "cols": ["tag", "ts", "detected_ms"], "rows": [[0, 0, 2**60]]}}}), "none"), WireBoundsError),
    ("alarm detected_ms nil", lambda: (_body({"tags": ["a.b"], "tables": {"alarm": {
        "cols": ["tag", "ts", "detected_ms"], "rows": [[0, 0, None]]}}}), "none"), WireBoundsError),
    ("win first_ms a float", lambda: (_body({"tags": ["a.b"], "tables": {"win": {
        "cols": ["tag", "start", "first_ms"], "rows": [[0, 0, float(T0)]]}}}), "none"), WireBoundsError),
    ("gap to_ms negative", lambda: (_body({"tags": [], "tables": {"gap": {
        "cols": ["from_ms", "to_ms"], "rows": [[0, -1]]}}}), "none"), WireBoundsError),
    ("outage from_ms a str", lambda: (_body({"tags": [], "tables": {"outage": {
        "cols": ["from_ms", "to_ms"], "rows": [["0", 0]]}}}), "none"), WireBoundsError),
    ("tables a list", lambda: (_body({"tags": [], "tables": [1, 2]}), "none"), WireFormatError),
    ("tables missing", lambda: (_body({"tags": []}), "none"), WireFormatError),
    ("tags a str", lambda: (_body({"tags": "plc1.ch4", "tables": {}}), "none"), WireFormatError),
    ("tags holding an int", lambda: (_body({"tags": [1], "tables": {}}), "none"), WireFormatError),
    ("a tag name of 300 characters", lambda: (_body({"tags": ["t" * 300], "tables": {}}), "none"),
     WireFormatError),
    ("cols a str", lambda: (_body(_table("tag", [[0]])), "none"), WireFormatError),
    ("cols holding an int", lambda: (_body(_table(["tag", 5], [[0, 0]])), "none"), WireFormatError),
    ("cols repeating a name", lambda: (_body(_table(["tag", "ts", "ts"], [[0, 0, 0]])), "none"),
     WireFormatError),
    ("cols of 65 names", lambda: (_body(_table([f"c{i}" for i in range(65)], [])), "none"), WireFormatError),
    ("rows a map", lambda: (_body(_table(RAW_COLS, {"a": 1})), "none"), WireFormatError),
    ("a row a str", lambda: (_body(_table(RAW_COLS, ["abc"])), "none"), WireFormatError),
    ("a row too short", lambda: (_body(_table(RAW_COLS, [[0, 0]])), "none"), WireFormatError),
    ("a row too long", lambda: (_body(_table(RAW_COLS, [[0, 0, 1.0, 2.0]])), "none"), WireFormatError),
    ("a table name an int", lambda: (_body({"tags": [], "tables": {1: {"cols": [], "rows": []}}}), "none"),
     WireFormatError),
    ("17 tables", lambda: (_body({"tags": [], "tables": {f"t{i}": {"cols": [], "rows": []} for i in range(17)}}),
                           "none"), WireBoundsError),
    ("a string value of 20,000 bytes", lambda: (_body(_table(RAW_COLS, [[0, 0, "x" * 20000]])), "none"),
     WireFormatError),
    ("a value with an ext type", lambda: (_body(_table(RAW_COLS, [[0, 0, msgpack.ExtType(5, b"x")]])), "none"),
     WireFormatError),
    ("a value with an empty ext type (ext 8 of length 0)",
     lambda: (msgpack.packb(_table(RAW_COLS, [[0, 0, 0]]))[:-1] + b"\xc7\x00\x05", "none"), WireFormatError),
    ("a value with an empty timestamp", lambda: (msgpack.packb(_table(RAW_COLS, [[0, 0, 0]]))[:-1] + b"\xc7\x00\xff",
                                                 "none"), WireFormatError),
    ("a cell map repeating a key",
     lambda: (msgpack.packb(_table(RAW_COLS, [[0, 0, 0]]))[:-1] + b"\x82\xa1a\x01\xa1a\x02", "none"),
     WireFormatError),
    ("bytes after the body", lambda: (_body(GOOD_BODY) + b"\x00", "none"), WireFormatError),
    ("body a list", lambda: (_body([1, 2]), "none"), WireFormatError),
    ("body not msgpack", lambda: (b"\xc1", "none"), WireFormatError),
    ("body empty", lambda: (b"", "none"), WireFormatError),
    ("body truncated", lambda: (_body(GOOD_BODY)[:-2], "none"), WireFormatError),
]


@pytest.fixture(scope="module")
def bodies() -> dict[str, tuple[bytes, str]]:
    """Each body case made once (some take a moment to compress)."""
    return {case: make() for case, make, _ in BODY_CASES}


@pytest.mark.parametrize(("case", "error"), [(c, e) for c, _, e in BODY_CASES], ids=[c[0] for c in BODY_CASES])
def test_hostile_body_is_refused(case: str, error: type[WireFormatError], bodies: dict[str, tuple[bytes, str]]) -> None:
    """Each hostile body of a properly signed frame is refused by decode_body in bounded time, with a short
    reason that does not quote the body; frame_tags (the buffer's view) refuses it alike."""
    body, enc = bodies[case]
    batch = wire.open_frame(signed_frame(header(enc=enc, body=body)))

    started = time.perf_counter()
    with pytest.raises(error) as caught:
        wire.decode_body(batch)
    elapsed = time.perf_counter() - started

    assert elapsed < 3.0, f"{case}: {elapsed:.1f} s"
    assert len(caught.value.message) <= MAX_REASON_CHARS
    with pytest.raises(WireFormatError):
        wire.frame_tags(batch.frame)


BOMBS = [c for c, _, _ in BODY_CASES if "MiB" in c or "million" in c]


@pytest.mark.parametrize("case", BOMBS)
def test_a_bomb_costs_bounded_memory(case: str, bodies: dict[str, tuple[bytes, str]]) -> None:
    """Decompression and amplification bombs are refused before their content is in memory: the decoder's
    peak stays well under what the bomb expands to (100 MiB of bytes, tens of millions of objects)."""
    body, enc = bodies[case]
    batch = wire.open_frame(signed_frame(header(enc=enc, body=body)))

    tracemalloc.start()
    try:
        with pytest.raises(WireBoundsError):
            wire.decode_body(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 400 * 1024 * 1024, f"{case}: peak {peak >> 20} MiB"


def test_the_good_frame_of_these_tables_opens() -> None:
    """The unaltered header and body of the tables above are accepted: the cases fail for their one change."""
    batch = wire.open_frame(signed_frame(header()))

    assert (batch.seq, batch.cat, batch.kind) == (7, 0, "data")
    assert wire.decode_body(batch).tables["raw"].rows == [["plc1.ch4", T0 + 5, 1.0]]


def test_absolute_times_at_their_limits_and_nil_where_allowed_are_accepted() -> None:
    """0 and 2**53 are times; a window's first_ms ... max_ms may be nil; a table this version does not define is
    not checked (its columns' meaning is unknown), even for a name that is a time in a known table."""
    doc = {"tags": ["a.b"], "tables": {
        "win": {"cols": ["tag", "start", "first_ms", "last_ms", "min_ms", "max_ms", "dur_ms"],
                "rows": [[0, 0, None, 2**53, 0, None, -5]]},
        "alarm": {"cols": ["tag", "ts", "detected_ms"], "rows": [[0, 0, 2**53]]},
        "later": {"cols": ["detected_ms", "to_ms"], "rows": [[2**60, "x"]]}}}
    body = wire.decode_body(wire.open_frame(signed_frame(header(body=_body(doc)))))
    assert body.tables["win"].rows[0][2:] == [None, 2**53, 0, None, -5]
    assert body.tables["later"].rows == [[2**60, "x"]]


def test_bounds_at_their_limit_are_accepted() -> None:
    """The largest seq and time, and a tag index naming the last tag, are valid."""
    h = header(seq=2**63 - 1, cat=2**63 - 2, t0=0, t1=2**53, created=2**53,
               body=_body({"tags": ["a.b", "c.d"], "tables": {"raw": {"cols": RAW_COLS, "rows": [[1, 2**53, None]]}}}))
    batch = wire.open_frame(signed_frame(h))

    assert wire.decode_body(batch).tables["raw"].rows == [["c.d", 2**53, None]]


def test_a_full_batch_of_window_rows_decodes() -> None:
    """The bounds leave room for the largest batch a gateway may make: 200,000 rows of every window column."""
    from agent.protocol.tables import WIN_COLUMNS

    row = [0, 0, 10_000, 10, 10, 0, 0.4, 0.5, 0.45, 0.5, 0, 10, 0.45, 0.01, 0.4, T0, T0 + 9, T0, T0 + 9, 0][
        : len(WIN_COLUMNS)]
    body = _body({"tags": ["plc1.ch4"], "tables": {"win": {"cols": WIN_COLUMNS, "rows": [row] * 200_000}}},
                 enc="zstd")
    batch = wire.open_frame(signed_frame(header(enc="zstd", body=body, t1=T0 + 10_000)))

    assert len(wire.decode_body(batch).tables["win"].rows) == 200_000


def test_claimed_identity_reads_only_valid_claims() -> None:
    """For accounting a refused frame: gw, seq and kid when each is valid, None otherwise, never an error."""
    assert wire.claimed_identity(signed_frame(header(t1=0))) == ("gw-01", 7, SIGNER.kid)
    assert wire.claimed_identity(signed_frame(header(seq=2**63))) == ("gw-01", None, SIGNER.kid)
    assert wire.claimed_identity(signed_frame(header(seq=float("inf"), gw=5))) == (None, None, SIGNER.kid)
    assert wire.claimed_identity(b"\xdd\xff\xff\xff\xff") == (None, None, None)
    assert wire.claimed_identity(b"") == (None, None, None)


def _nested_array_header(trees: int = 13) -> bytes:
    """A header whose unknown key "x" holds ``trees`` trees of 32**4 empty arrays each, every array within the
    32-element bound: ignored once decoded, but a decoder without a budget builds every one of them first."""

    def tree(depth: int) -> bytes:
        return b"\x90" if depth == 0 else b"\xdc\x00\x20" + tree(depth - 1) * 32

    blob = bytes([0x90 + trees]) + tree(4) * trees
    packed = msgpack.packb(header(), use_bin_type=True)
    return bytes([0x80 + len(header()) + 1]) + packed[1:] + msgpack.packb("x") + blob


def test_a_header_of_nested_arrays_costs_little_to_refuse() -> None:
    """About 13 million empty arrays under an unknown header key (a 14 MiB frame, no key needed): refused by
    open_frame and ignored by claimed_identity before more than a few arrays exist, in little time and memory.
    Without the header's container budget this cost seconds and over a gigabyte."""
    frame = msgpack.packb([2, _nested_array_header(), bytes(64)], use_bin_type=True)
    assert len(frame) > 12 * 2**20
    for decode in (wire.open_frame, wire.claimed_identity):
        tracemalloc.start()
        started = time.perf_counter()
        try:
            if decode is wire.open_frame:
                with pytest.raises(WireBoundsError, match="arrays and maps in the header"):
                    decode(frame)
            else:
                assert decode(frame) == (None, None, None)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        # The frame itself is 14 MiB and msgpack copies the signed part once; anything built beyond is little.
        assert peak < 3 * len(frame), f"{decode.__name__}: peak {peak / 2**20:.0f} MiB"
        assert time.perf_counter() - started < 2.0
