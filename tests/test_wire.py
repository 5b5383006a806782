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


# The version 1 example frame of the protocol document as it was published (gw-01, seq 1, the example key of
# tests/receiver/protocol_example.py): a gateway not yet upgraded still sends exactly such frames.
V1_FRAME = bytes.fromhex(
    "93 01 c5 01 25 8c a1 76 01 a2 67 77 a5 67 77 2d 30 31 a3 73 65 71 01 a4 70 72 65 76 c4 20 00 00"
    "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 a7 63"
    "72 65 61 74 65 64 cf 00 00 01 8b cf e5 90 0a a2 74 30 cf 00 00 01 8b cf e5 68 00 a2 74 31 cf 00"
    "00 01 8b cf e5 8f 10 a4 6b 69 6e 64 a4 64 61 74 61 a3 65 6e 63 a4 6e 6f 6e 65 a3 61 6c 67 a7 65"
    "64 32 35 35 31 39 a3 6b 69 64 b0 35 36 34 37 35 61 61 37 35 34 36 33 34 37 34 63 a4 62 6f 64 79"
    "c4 88 82 a4 74 61 67 73 91 a8 70 6c 63 31 2e 63 68 34 a6 74 61 62 6c 65 73 81 a3 77 69 6e 82 a4"
    "63 6f 6c 73 9a a3 74 61 67 a5 73 74 61 72 74 a6 64 75 72 5f 6d 73 a5 63 6f 75 6e 74 a4 67 6f 6f"
    "64 a3 62 61 64 a3 6d 69 6e a3 6d 61 78 a4 6d 65 61 6e a4 6c 61 73 74 a4 72 6f 77 73 91 9a 00 00"
    "cd 27 10 0a 0a 00 cb 3f d9 99 99 99 99 99 9a cb 3f e0 00 00 00 00 00 00 cb 3f dc cc cc cc cc cc"
    "cd cb 3f e0 00 00 00 00 00 00 c4 40 4e 55 fe 81 49 b7 01 e0 41 b8 3a 0c 22 09 ef 82 b8 57 27 5f"
    "1a 95 ba 70 28 de 81 a4 ca f5 68 d9 8b 52 0d 9f 23 1a bd a4 77 f0 36 e7 5c 80 c7 5e 12 a6 52 e3"
    "db 24 76 d1 50 e2 58 95 f8 0b 73 07"
)
V1_HASH = "f461c11541f42e7692ddd6c2ebb8c9986bae343e2d68bd705ef240381bc18ea7"


def test_version_1_frames_still_open_verify_and_decode() -> None:
    """A v1 frame opens with cat 0, verifies with its key, keeps its hash and decodes its (quality-less) row."""
    from tests.receiver.protocol_example import example_signer

    trust = TrustStore()
    trust.add(example_signer().public_raw)
    batch = wire.verify_frame(V1_FRAME, trust)

    assert (batch.gw, batch.seq, batch.cat, batch.kind, batch.hash.hex()) == ("gw-01", 1, 0, "data", V1_HASH)
    win = wire.decode_body(batch).tables["win"]
    assert "quality" not in win.cols
    assert win.rows == [["plc1.ch4", 1_700_000_000_000, 10_000, 10, 10, 0, 0.4, 0.5, 0.45, 0.5]]


def test_frames_are_written_as_version_2_with_their_catalogue(signer: BatchSigner) -> None:
    """encode_frame writes [2, ...] with header v 2 and the given cat; open_frame reads the cat back."""
    body = wire.encode_body([], {}, 0, "none")
    batch = wire.encode_frame(signer, gw="gw-01", seq=9, prev=bytes(32), created=5, t0=1, t1=2, kind="data",
                              enc="none", body=body, cat=4)
    opened = wire.open_frame(batch.frame)

    assert batch.frame[:2] == bytes([0x93, 2])
    assert (opened.cat, opened.seq) == (4, 9)
    assert opened == batch
