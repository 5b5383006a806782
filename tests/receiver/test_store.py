"""ReceiverStore: every frame is stored, counted as a duplicate or rejected with a reason; the report accounts
for every sequence number."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner, TrustStore
from backend.receiver import ReceiverStore
from tests.receiver.chain import Chain


@pytest.fixture
def signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def trust(signer: BatchSigner) -> TrustStore:
    t = TrustStore()
    t.add(signer.public_raw)
    return t


@pytest.fixture
def store(tmp_path: Path) -> ReceiverStore:
    s = ReceiverStore(tmp_path / "receiver.sqlite")
    yield s
    s.close()


def _gw(store: ReceiverStore, gw: str = "gw-01") -> dict:
    return store.report()["gateways"][gw]


def test_good_chain_in_order_is_stored_completely(store: ReceiverStore, trust: TrustStore,
                                                  signer: BatchSigner) -> None:
    """Three chained batches arriving in order are stored with all their records and nothing flagged."""
    chain = Chain(signer)
    results = [store.ingest(chain.data(rows=2).frame, trust) for _ in range(3)]

    assert [r.status for r in results] == ["stored"] * 3
    assert _gw(store) == {"batches": 3, "records": 6, "duplicates": 0, "rejected": [], "chain_breaks": [],
                          "missing": [], "declared_gaps": [], "last_seq": 3}


def test_out_of_order_arrival_is_not_a_chain_break(store: ReceiverStore, trust: TrustStore,
                                                   signer: BatchSigner) -> None:
    """Batches arriving 3, 1, 4, 2 (alarm overtaking data, backlog after live) verify as one intact chain."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(4)]
    for i in (2, 0, 3, 1):
        store.ingest(frames[i], trust)

    report = _gw(store)
    assert (report["chain_breaks"], report["missing"], report["batches"]) == ([], [], 4)


def test_duplicate_is_counted_and_not_stored_twice(store: ReceiverStore, trust: TrustStore,
                                                   signer: BatchSigner) -> None:
    """The same frame delivered twice (at-least-once) is stored once and counted as a duplicate."""
    frame = Chain(signer).data().frame
    first = store.ingest(frame, trust)
    second = store.ingest(frame, trust)

    assert (first.status, second.status, second.ackable) == ("stored", "duplicate", True)
    report = _gw(store)
    assert (report["batches"], report["records"], report["duplicates"]) == (1, 2, 1)


def test_duplicate_inside_one_transaction_is_detected(store: ReceiverStore, trust: TrustStore,
                                                      signer: BatchSigner) -> None:
    """A redelivery in the same commit as its original is still a duplicate."""
    frame = Chain(signer).data().frame
    results = store.ingest_many([(frame, "gw-01"), (frame, "gw-01")], trust)

    assert [r.status for r in results] == ["stored", "duplicate"]


def test_altered_byte_is_rejected_with_reason(store: ReceiverStore, trust: TrustStore,
                                              signer: BatchSigner) -> None:
    """A frame with one altered body byte is refused as a bad signature, under its gateway and seq."""
    chain = Chain(signer)
    store.ingest(chain.data().frame, trust)
    altered = bytearray(chain.data().frame)
    altered[-67] ^= 0x01  # last byte of the signed part: inside the compressed body
    result = store.ingest(bytes(altered), trust)

    assert (result.status, result.seq, result.ackable) == ("rejected", 2, True)
    report = _gw(store)
    assert report["rejected"] == [{"seq": 2, "reason": "signature does not verify"}]
    assert (report["batches"], report["last_seq"]) == (1, 1)


def test_genuine_copy_after_altered_one_is_stored(store: ReceiverStore, trust: TrustStore,
                                                  signer: BatchSigner) -> None:
    """A rejected copy does not take the seq: the genuine frame arriving later is stored."""
    frame = Chain(signer).data().frame
    altered = bytearray(frame)
    altered[-1] ^= 0x01  # inside the signature

    assert store.ingest(bytes(altered), trust).status == "rejected"
    assert store.ingest(frame, trust).status == "stored"


def test_deleted_batch_is_reported_missing(store: ReceiverStore, trust: TrustStore,
                                           signer: BatchSigner) -> None:
    """Seqs never received between 1 and the highest stored seq are reported as missing ranges."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(7)]
    for i in (0, 3, 6):  # seqs 1, 4, 7
        store.ingest(frames[i], trust)

    assert _gw(store)["missing"] == [[2, 3], [5, 6]]


def test_missing_start_of_chain_is_reported(store: ReceiverStore, trust: TrustStore,
                                            signer: BatchSigner) -> None:
    """A receiver that only saw seq 3 reports 1..2 missing."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(3)]
    store.ingest(frames[2], trust)

    assert _gw(store)["missing"] == [[1, 2]]


def test_seq_reused_with_other_content_is_rejected(store: ReceiverStore, trust: TrustStore,
                                                   signer: BatchSigner) -> None:
    """A validly signed batch reusing a stored seq with other content is refused and reported."""
    store.ingest(Chain(signer).data(value=1.0).frame, trust)
    result = store.ingest(Chain(signer).data(value=2.0).frame, trust)

    assert (result.status, result.seq) == ("rejected", 1)
    assert result.reason is not None
    assert result.reason.startswith("seq reused with different content")
    assert _gw(store)["rejected"][0]["reason"] == result.reason


def test_unknown_key_is_rejected_naming_the_key(store: ReceiverStore, trust: TrustStore) -> None:
    """A frame signed by a key missing from the trust file is refused with the key id in the reason."""
    stranger = BatchSigner(Ed25519PrivateKey.generate())
    result = store.ingest(Chain(stranger, gw="gw-02").data().frame, trust)

    assert result.status == "rejected"
    assert _gw(store, "gw-02")["rejected"] == [{"seq": 1, "reason": f"unknown key id {stranger.kid!r}"}]


def test_unknown_key_frames_are_stored_after_the_key_is_trusted(store: ReceiverStore,
                                                                 trust: TrustStore) -> None:
    """reverify() stores frames refused for an unknown key once the key was added to the trust store."""
    newcomer = BatchSigner(Ed25519PrivateKey.generate())
    store.ingest(Chain(newcomer, gw="gw-02").data().frame, trust)
    trust.add(newcomer.public_raw)
    results = store.reverify(trust)

    assert [r.status for r in results] == ["stored"]
    report = _gw(store, "gw-02")
    assert (report["batches"], report["rejected"]) == (1, [])


def test_malformed_frame_is_counted_under_unknown(store: ReceiverStore, trust: TrustStore) -> None:
    """Bytes that are not a frame are recorded under gateway "unknown" and never acknowledged."""
    result = store.ingest(b"\x93\x01garbage", trust)

    assert (result.status, result.gw, result.ackable) == ("rejected", "unknown", False)
    assert len(_gw(store, "unknown")["rejected"]) == 1


def test_same_rejected_frame_twice_is_listed_once(store: ReceiverStore, trust: TrustStore) -> None:
    """A refused frame redelivered is recorded once, not once per delivery."""
    store.ingest(b"not a frame", trust)
    store.ingest(b"not a frame", trust)

    assert len(_gw(store, "unknown")["rejected"]) == 1


def test_frame_on_another_gateways_topic_is_rejected(store: ReceiverStore, trust: TrustStore,
                                                     signer: BatchSigner) -> None:
    """A batch of gw-01 published on gw-02's topic is refused and not acknowledged to anyone."""
    result = store.ingest(Chain(signer).data().frame, trust, topic_gw="gw-02")

    assert (result.status, result.gw, result.ackable) == ("rejected", "gw-02", False)
    assert "gw-01" not in store.report()["gateways"]


def test_declared_gap_is_not_missing(store: ReceiverStore, trust: TrustStore, signer: BatchSigner) -> None:
    """Seqs declared lost by a signed gap batch are reported as declared_gaps, not as missing."""
    chain = Chain(signer)
    kept = chain.data().frame
    chain.data()
    chain.data()  # seqs 2 and 3 evicted on the gateway, never sent
    gap = chain.gap(2, 3, records=4)
    store.ingest(kept, trust)
    store.ingest(gap.frame, trust)

    report = _gw(store)
    assert report["missing"] == []
    assert report["declared_gaps"] == [{"first_seq": 2, "last_seq": 3, "batches": 2, "records": 4,
                                        "reason": "buffer_full"}]
    assert (report["batches"], report["records"], report["last_seq"]) == (2, 2, 4)


def test_declared_gap_covers_only_its_range(store: ReceiverStore, trust: TrustStore,
                                            signer: BatchSigner) -> None:
    """A seq absent outside the declared range is still missing."""
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(4)]
    gap = chain.gap(2, 3)
    for f in (frames[0], gap.frame):
        store.ingest(f, trust)

    assert _gw(store)["missing"] == [[4, 4]]


def test_wrong_prev_is_a_chain_break(store: ReceiverStore, trust: TrustStore, signer: BatchSigner) -> None:
    """A validly signed batch whose prev is not its predecessor's hash is stored and reported as a break."""
    chain = Chain(signer)
    store.ingest(chain.data().frame, trust)
    chain.prev = bytes([7]) * 32
    result = store.ingest(chain.data().frame, trust)

    assert result.status == "stored"
    assert [b["seq"] for b in _gw(store)["chain_breaks"]] == [2]
    assert "is not the hash of seq 1" in _gw(store)["chain_breaks"][0]["reason"]


def test_chain_break_found_when_predecessor_arrives_last(store: ReceiverStore, trust: TrustStore,
                                                         signer: BatchSigner) -> None:
    """The break between n and n+1 is found whichever of the two is stored second."""
    chain = Chain(signer)
    first = chain.data()
    chain.prev = bytes([7]) * 32
    second = chain.data()
    store.ingest(second.frame, trust)
    result = store.ingest(first.frame, trust)

    assert [seq for seq, _ in result.chain_breaks] == [2]
    assert [b["seq"] for b in _gw(store)["chain_breaks"]] == [2]


def test_seq_one_must_start_at_genesis(store: ReceiverStore, trust: TrustStore, signer: BatchSigner) -> None:
    """Seq 1 with a prev other than 32 zero bytes is a chain break."""
    chain = Chain(signer)
    chain.prev = bytes([1]) * 32
    store.ingest(chain.data().frame, trust)

    assert [b["seq"] for b in _gw(store)["chain_breaks"]] == [1]


def test_signed_but_malformed_body_is_rejected_without_rows(store: ReceiverStore, trust: TrustStore,
                                                            signer: BatchSigner) -> None:
    """A signed batch whose body does not decode is refused and leaves no record rows behind."""
    batch = wire.encode_frame(signer, gw="gw-01", seq=1, prev=wire.GENESIS_HASH, created=1, t0=1, t1=1,
                              kind="data", enc="none", body=b"\xc1")
    result = store.ingest(batch.frame, trust)

    assert result.status == "rejected"
    assert list(store.records()) == []


def test_impossible_gap_range_is_rejected_without_rows(store: ReceiverStore, trust: TrustStore,
                                                       signer: BatchSigner) -> None:
    """A gap batch declaring seqs at or after itself is refused, and none of its rows are kept."""
    chain = Chain(signer)
    result = store.ingest(chain.gap(1, 5).frame, trust)

    assert result.status == "rejected"
    assert (list(store.records()), _gw(store)["declared_gaps"]) == ([], [])


def test_records_are_stored_with_tag_and_absolute_time(store: ReceiverStore, trust: TrustStore,
                                                       signer: BatchSigner) -> None:
    """Every row is stored with its table, full tag name, absolute timestamp and named columns."""
    batch = Chain(signer).data(rows=1, value=0.42)
    store.ingest(batch.frame, trust)
    (row,) = store.records(tag="plc1.ch4")

    assert (row["table"], row["tag"], row["ts"], row["start"], row["mean"]) == (
        "win", "plc1.ch4", batch.t0, batch.t0, 0.42)


def test_report_survives_reopening(tmp_path: Path, trust: TrustStore, signer: BatchSigner) -> None:
    """Everything the report says is in the file: a reopened store reports the same."""
    chain = Chain(signer)
    with ReceiverStore(tmp_path / "r.sqlite") as s:
        for f in [chain.data().frame for _ in range(3)][::2]:
            s.ingest(f, trust)
        s.ingest(b"junk", trust)
        before = s.report()
    with ReceiverStore(tmp_path / "r.sqlite") as s:
        after = s.report()

    assert after == before
    assert after["gateways"]["gw-01"]["missing"] == [[2, 2]]


def test_values_json_cannot_carry_are_stored_readably(store: ReceiverStore, trust: TrustStore,
                                                      signer: BatchSigner) -> None:
    """NaN, infinities and bytes in a row are stored as strings, not dropped and not invalid JSON."""
    cols = ["tag", "ts", "value", "quality", "reason"]
    body = wire.encode_body(["plc1.x"], {"raw": wire.Table(cols, [[0, 0, float("nan"), 0, None],
                                                                   [0, 1, b"\x01\xff", 0, None],
                                                                   [0, 2, float("-inf"), 0, None]])}, 1000)
    batch = wire.encode_frame(signer, gw="gw-01", seq=1, prev=wire.GENESIS_HASH, created=2000, t0=1000,
                              t1=1002, kind="data", enc="zstd", body=body)
    store.ingest(batch.frame, trust)

    assert [r["value"] for r in store.records()] == ["-Infinity", "01ff", "NaN"]


def test_reverify_leaves_content_rejections_alone(store: ReceiverStore, trust: TrustStore,
                                                  signer: BatchSigner) -> None:
    """reverify() retries only frames refused for their signature; a reused seq stays rejected once."""
    store.ingest(Chain(signer).data(value=1.0).frame, trust)
    store.ingest(Chain(signer).data(value=2.0).frame, trust)

    assert store.reverify(trust) == []
    assert len(_gw(store)["rejected"]) == 1
