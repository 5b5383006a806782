"""The batch frame format: signatures cover exactly the sent bytes; tampering is detected."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.errors import SignatureError, WireFormatError
from agent.protocol import wire
from agent.protocol.signing import BatchSigner, TrustStore


@pytest.fixture
def signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


def _frame(signer: BatchSigner, seq: int = 1, prev: bytes = wire.GENESIS_HASH) -> wire.Batch:
    body = wire.encode_body(["plc1.ch4"], {"win": wire.Table(["tag", "start", "mean"], [[0, 250, 0.42]])}, 1000)
    return wire.encode_frame(signer, gw="gw-01", seq=seq, prev=prev, created=2000, t0=1000, t1=11000,
                             kind="data", enc="zstd", body=body)


def test_round_trip_resolves_tags_and_offsets(signer: BatchSigner) -> None:
    """A verified frame decodes to absolute times and tag names."""
    trust = TrustStore()
    trust.add(signer.public_raw)
    batch = wire.verify_frame(_frame(signer).frame, trust)

    assert (batch.gw, batch.seq, batch.kid) == ("gw-01", 1, signer.kid)
    assert wire.decode_body(batch).tables["win"].rows == [["plc1.ch4", 1250, 0.42]]


def test_frame_tags_names_tag_columns_and_gap_tag_lists(signer: BatchSigner) -> None:
    """frame_tags resolves every ``tag`` column and collects the names of every ``tags`` column."""
    body = wire.encode_body(["plc1.ch4", "plc1.co"], {
        "raw": wire.Table(["tag", "ts", "value"], [[0, 0, 1.0], [1, 5, 2.0], [0, 9, 3.0]]),
        "gap": wire.Table(["first_seq", "last_seq", "tags"], [[1, 2, ["plc2.o2", "plc1.co"]]]),
    }, 1000)
    frame = wire.encode_frame(signer, gw="gw-01", seq=3, prev=wire.GENESIS_HASH, created=2000, t0=1000,
                              t1=2000, kind="data", enc="zstd", body=body).frame

    assert wire.frame_tags(frame) == {"plc1.ch4", "plc1.co", "plc2.o2"}
    assert wire.frame_tags(_frame(signer).frame) == {"plc1.ch4"}


def test_frame_tags_raises_for_a_frame_that_does_not_decode(signer: BatchSigner) -> None:
    """A frame or body that does not decode is a WireFormatError, the one error the buffer expects."""
    with pytest.raises(WireFormatError):
        wire.frame_tags(b"not a frame")
    with pytest.raises(WireFormatError):
        wire.frame_tags(wire.encode_frame(signer, gw="gw-01", seq=1, prev=wire.GENESIS_HASH, created=1, t0=1,
                                          t1=1, kind="data", enc="none", body=b"\xc1").frame)


def test_every_flipped_byte_is_detected(signer: BatchSigner) -> None:
    """No single-byte alteration of a frame passes verification."""
    trust = TrustStore()
    trust.add(signer.public_raw)
    frame = _frame(signer).frame
    for i in range(len(frame)):
        altered = bytearray(frame)
        altered[i] ^= 0x01
        with pytest.raises((SignatureError, WireFormatError)):
            wire.verify_frame(bytes(altered), trust)


def test_unknown_key_is_refused(signer: BatchSigner) -> None:
    """A frame signed by a key not in the trust store is refused, naming the key id."""
    with pytest.raises(SignatureError, match=signer.kid):
        wire.verify_frame(_frame(signer).frame, TrustStore())


def test_chain_links_hashes(signer: BatchSigner) -> None:
    """Each batch's prev is the SHA-256 of its predecessor's signed bytes."""
    first = _frame(signer)
    second = _frame(signer, seq=2, prev=first.hash)

    assert wire.open_frame(second.frame).prev == first.hash


@pytest.mark.parametrize("enc", ["zstd", "zlib", "none"])
def test_body_from_streamed_rows_is_the_same_bytes(enc: str) -> None:
    """Packing rows one at a time gives exactly the body packing the whole document gives."""
    rows = [[i % 3, i * 10, i / 7, None, "run" if i % 2 else float("nan"), True] for i in range(500)]
    tables = {"win": wire.Table(["tag", "start", "mean", "x", "y", "z"], rows), "raw": wire.Table(["tag"], [[0]])}

    streamed = wire.encode_body_rows(
        ["a", "b", "c"], {name: (t.cols, len(t.rows), iter(t.rows)) for name, t in tables.items()}, enc
    )

    assert streamed == wire.encode_body(["a", "b", "c"], tables, 0, enc)


@pytest.mark.parametrize("given", [2, 4])
def test_streamed_rows_must_match_their_announced_count(given: int) -> None:
    """The array header is written before the rows: fewer or more rows than announced is a bug, refused."""
    rows = [[0, i] for i in range(given)]

    with pytest.raises(ValueError, match=f"{given} rows, 3 announced"):
        wire.encode_body_rows(["a"], {"raw": (["tag", "ts"], 3, iter(rows))})
