"""Property-based fuzzing of the frame decoders at the trust boundary: open_frame, verify_frame, decode_body
and frame_tags never raise anything but WireFormatError (or SignatureError for a signature), whatever bytes or
values they are given, and each call is quick; claimed_identity never raises at all.

Inputs are arbitrary bytes, signed headers of arbitrary values, bodies of arbitrary msgpack documents and
tables, and byte-level mutations of valid frames. ``MINE_AGENT_FUZZ_EXAMPLES`` makes the runs long.
"""

from __future__ import annotations

import time
import zlib
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.errors import SignatureError, WireFormatError
from agent.protocol import wire
from agent.protocol.signing import TrustStore
from agent.protocol.tables import WIN_COLUMNS
from tests.fuzzing import FUZZ_EXAMPLES
from tests.protocol.test_frame_hostile import SIGNER, T0, header, signed_frame

pytestmark = pytest.mark.fuzz
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECONDS_PER_CALL = 2.0

TRUST = TrustStore()
TRUST.add(SIGNER.public_raw)

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, T0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.binary(max_size=40),
    st.sampled_from(["data", "alarm", "gap", "catalog", "zstd", "zlib", "none", "ed25519", "tag", "ts", "start"]),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.text(max_size=8), children, max_size=6)),
    max_leaves=30,
)


def _checked(call: Any, *args: Any) -> Any:
    """``call(*args)``, which may only fail with the protocol's errors, and quickly."""
    started = time.perf_counter()
    try:
        return call(*args)
    except (WireFormatError, SignatureError):
        return None
    finally:
        assert time.perf_counter() - started < SECONDS_PER_CALL


def _all_decoders(frame: bytes) -> None:
    gw, seq, _kid = wire.claimed_identity(frame)  # never raises
    assert gw is None or isinstance(gw, str)
    assert seq is None or type(seq) is int
    _checked(wire.frame_tags, frame)
    batch = _checked(wire.verify_frame, frame, TRUST)
    opened = _checked(wire.open_frame, frame)
    if opened is not None:
        body = _checked(wire.decode_body, opened)
        if body is not None:
            _check_resolved(opened, body)
    if batch is not None:
        assert opened is not None
        assert batch.hash == opened.hash


def _check_resolved(batch: wire.Batch, body: wire.Body) -> None:
    """What decode_body returns honours its promises: tag names, absolute times within [t0, t1]."""
    for table in body.tables.values():
        for row in table.rows:
            assert len(row) == len(table.cols)
            for col, value in zip(table.cols, row, strict=True):
                if col == "tag":
                    assert isinstance(value, str)
                elif col in ("ts", "start"):
                    assert type(value) is int
                    assert batch.t0 <= value <= batch.t1


@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(data: bytes) -> None:
    """Any bytes at all, and the same bytes behind a valid frame prefix."""
    _all_decoders(data)
    _all_decoders(b"\x93\x02" + data)


@FUZZ
@given(changes=st.dictionaries(
    st.sampled_from(["v", "gw", "seq", "prev", "created", "t0", "t1", "kind", "cat", "enc", "alg", "kid", "body",
                     "extra"]),
    _values, max_size=4,
), version=st.one_of(st.sampled_from([1, 2]), _scalars))
def test_signed_headers_of_arbitrary_values(changes: dict[str, Any], version: Any) -> None:
    """A properly signed header with any values in any field: the signature does not make a value trusted."""
    _all_decoders(signed_frame(header(**changes), version=version))


def _compress(enc: str, data: bytes) -> bytes:
    if enc == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if enc == "zlib":
        return zlib.compress(data)
    return data


_cols = st.one_of(
    st.just(["tag", "ts", "value", "quality", "reason"]),
    st.just(WIN_COLUMNS),
    st.lists(st.sampled_from(["tag", "ts", "start", "value", "tags", "from_ms", "x"]), max_size=6),
    _values,
)
_tables = st.dictionaries(
    st.one_of(st.sampled_from(["raw", "win", "alarm", "gap", "outage", "catalog"]), _scalars),
    st.one_of(st.fixed_dictionaries({"cols": _cols, "rows": st.lists(st.lists(_scalars, max_size=8), max_size=8)}),
              _values),
    max_size=4,
)
_bodies = st.one_of(
    st.fixed_dictionaries({"tags": st.one_of(st.lists(st.text(max_size=12), max_size=5), _values),
                           "tables": st.one_of(_tables, _values)}),
    _values,
)


@FUZZ
@given(doc=_bodies, enc=st.sampled_from(["zstd", "zlib", "none"]), cut=st.integers(min_value=-3, max_value=3),
       t_span=st.integers(min_value=0, max_value=20))
def test_bodies_of_arbitrary_documents(doc: Any, enc: str, cut: int, t_span: int) -> None:
    """Any msgpack document as the body, compressed, sometimes truncated or extended by a few bytes."""
    data = _compress(enc, msgpack.packb(doc, use_bin_type=True))
    if cut < 0:
        data = data[:cut]
    elif cut > 0:
        data += bytes(cut)
    _all_decoders(signed_frame(header(enc=enc, body=data, t1=T0 + t_span)))


def _valid_frame() -> bytes:
    body = wire.encode_body(["plc1.ch4", "plc1.co"], {
        "raw": wire.Table(["tag", "ts", "value", "quality", "reason"], [[0, 5, 1.0, 0, None], [1, 9, None, 2, "x"]]),
        "gap": wire.Table(["first_seq", "last_seq", "tags"], [[1, 2, ["plc2.o2"]]]),
    }, T0, "zstd")
    return wire.encode_frame(SIGNER, gw="gw-01", seq=3, prev=bytes(32), created=T0 + 20, t0=T0, t1=T0 + 10,
                             kind="data", enc="zstd", body=body, cat=1).frame


VALID = _valid_frame()


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(min_value=0, max_value=len(VALID)), st.integers(0, 255),
                                st.sampled_from(["flip", "set", "insert", "delete"])), min_size=1, max_size=6))
def test_mutations_of_a_valid_frame(edits: list[tuple[int, int, str]]) -> None:
    """Bytes of a valid frame changed, inserted or deleted here and there."""
    frame = bytearray(VALID)
    for pos, byte, how in edits:
        pos = min(pos, len(frame) - 1) if frame else 0
        if how == "flip" and frame:
            frame[pos] ^= byte or 1
        elif how == "set" and frame:
            frame[pos] = byte
        elif how == "insert":
            frame.insert(pos, byte)
        elif frame:
            del frame[pos]
    _all_decoders(bytes(frame))


def test_the_valid_frame_of_the_mutations_decodes() -> None:
    """The starting point of the mutations is valid, so they test the decoders, not a broken seed."""
    batch = wire.verify_frame(VALID, TRUST)

    assert wire.frame_tags(VALID) == {"plc1.ch4", "plc1.co", "plc2.o2"}
    assert wire.decode_body(batch).tables["raw"].rows[0] == ["plc1.ch4", T0 + 5, 1.0, 0, None]


@FUZZ
@given(code=st.integers(min_value=-128, max_value=127), data=st.binary(max_size=20),
       where=st.sampled_from(["cell", "nested", "unknown body key", "unknown header key"]))
def test_fuzz_an_extension_type_anywhere_is_refused(code: int, data: bytes, where: str) -> None:
    """A msgpack extension type of any code and length (an empty one included, and one under a key the decoder
    otherwise ignores) makes the header or the body malformed: never a value in a stored row."""
    ext = _ext(code, data)
    if where == "unknown header key":
        h = header()
        packed = msgpack.packb(h, use_bin_type=True)
        with pytest.raises(WireFormatError):
            wire.open_frame(signed_frame(bytes([packed[0] + 1]) + packed[1:] + msgpack.packb("x") + ext))
        return
    doc = {"tags": ["plc1.ch4"], "tables": {"raw": {"cols": ["tag", "ts", "value"], "rows": [[0, 0, 0]]}}}
    body = msgpack.packb(doc, use_bin_type=True)[:-1]  # the last cell, 0, is replaced
    if where == "cell":
        body += ext
    elif where == "nested":
        body += b"\x92\x01" + ext
    else:
        body = b"\x83" + msgpack.packb(doc, use_bin_type=True)[1:] + msgpack.packb("x") + ext
    frame = signed_frame(header(body=body))
    with pytest.raises(WireFormatError):
        wire.decode_body(wire.open_frame(frame))


def _ext(code: int, data: bytes) -> bytes:
    """``data`` as a msgpack ext 8 of type ``code`` (any length, 0 included)."""
    return b"\xc7" + bytes([len(data), code & 0xFF]) + data
