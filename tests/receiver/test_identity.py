"""A key belongs to one gateway: what gateway A's key signs in gateway B's name is refused, never acknowledged,
and never displaces B's own batches; one hostile frame never stops ingest of the others."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import wire
from agent.protocol.signing import BatchSigner
from backend.receiver import ReceiverStore
from tests.receiver.chain import T0, Chain, WallClock, register


@pytest.fixture
def key_a() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def key_b() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def store(tmp_path: Path, key_a: BatchSigner, key_b: BatchSigner) -> ReceiverStore:
    s = ReceiverStore(tmp_path / "receiver.sqlite")
    register(s, key_a, "gw-A")
    register(s, key_b, "gw-B")
    yield s
    s.close()




def test_a_key_signing_for_b_is_refused(store: ReceiverStore, key_a: BatchSigner) -> None:
    """A frame naming gw-B, signed by A's key and sent on B's topic, is not stored as B's data nor acked."""
    forged = Chain(key_a, gw="gw-B").data().frame
    result = store.ingest_many([(forged, "gw-B", "data")])[0]

    assert (result.status, result.ackable, result.cause, result.signer) == ("rejected", False, "wrong_gateway",
                                                                            key_a.kid)
    report = store.report()["gateways"]["gw-B"]
    assert (report["batches"], report["refusals"]["by_signer"]) == (0, {key_a.kid: 1})




def test_a_cannot_take_bs_future_seqs(store: ReceiverStore, key_a: BatchSigner,
                                      key_b: BatchSigner) -> None:
    """A publishing seqs 1..3 in B's name first does not make B's genuine 1..3 'seq reused'."""
    forged_chain = Chain(key_a, gw="gw-B")
    forged = [forged_chain.data(value=9.9).frame for _ in range(3)]
    genuine_chain = Chain(key_b, gw="gw-B")
    genuine = [genuine_chain.data().frame for _ in range(3)]
    refused = store.ingest_many([(f, "gw-B", "data") for f in forged])
    results = store.ingest_many([(f, "gw-B", "data") for f in genuine])

    assert [(r.status, r.ackable) for r in refused] == [("rejected", False)] * 3

    assert [r.status for r in results] == ["stored"] * 3
    report = store.report()["gateways"]["gw-B"]
    assert (report["batches"], report["missing"]) == (3, [])




def test_a_cannot_declare_gaps_for_b(store: ReceiverStore, key_a: BatchSigner,
                                     key_b: BatchSigner) -> None:
    """A gap batch in B's name signed by A's key does not turn B's missing seqs into declared loss."""
    genuine = Chain(key_b, gw="gw-B")
    frames = [genuine.data().frame for _ in range(5)]
    forger = Chain(key_a, gw="gw-B")
    forger.seq = 5
    gap = forger.gap(2, 4).frame
    results = store.ingest_many([(frames[0], "gw-B", "data"), (frames[4], "gw-B", "data"), (gap, "gw-B", "gap")])

    assert (results[2].status, results[2].cause) == ("rejected", "wrong_gateway")

    report = store.report()["gateways"]["gw-B"]
    assert (report["declared_gaps"], report["missing"]) == ([], [[2, 4]])


def _hostile_header(signer: BatchSigner, **changes: object) -> bytes:
    """A frame whose signed header has ``changes`` applied, validly signed by ``signer``."""
    header = msgpack.unpackb(Chain(signer, gw="gw-B").data().signed, raw=False)
    header.update({"seq": 3, **changes})
    signed = msgpack.packb(header, use_bin_type=True)
    return msgpack.packb([1, signed, signer.sign(signed)], use_bin_type=True)




@pytest.mark.parametrize("changes", [
    {"seq": 2**63},
    {"seq": float("inf")},
    {"prev": 2**40},
    {"created": 2**64 - 1},
], ids=["seq_2_63", "seq_inf", "int_prev", "created_2_64"])
def test_one_hostile_header_does_not_stop_the_others(store: ReceiverStore,
                                                     key_b: BatchSigner, changes: dict[str, object]) -> None:
    """A frame whose header values are out of range is refused alone; the genuine frames beside it are stored."""
    chain = Chain(key_b, gw="gw-B")
    first, second = chain.data().frame, chain.data().frame
    results = store.ingest_many([(first, "gw-B", "data"), (_hostile_header(key_b, **changes), "gw-B", "data"),
                                 (second, "gw-B", "data")])

    assert [r.status for r in results] == ["stored", "rejected", "stored"]
    assert results[1].ackable is False
    assert results[1].cause in ("format", "bounds")  # whether the frame decoder or the receiver's bounds see it
    assert store.report()["gateways"]["gw-B"]["missing"] == []




def test_a_refusal_reason_never_embeds_the_body(store: ReceiverStore,
                                                key_b: BatchSigner) -> None:
    """A signed body that fails to decode is refused with a reason of at most 200 characters."""
    # A tag dictionary that is a map: looking the huge tag value up in it fails, naming the value.
    junk = msgpack.packb({"tags": {}, "tables": {"win": {"cols": ["tag"], "rows": [["x" * 100_000]]}}})
    batch = wire.encode_frame(key_b, gw="gw-B", seq=1, prev=wire.GENESIS_HASH, created=1, t0=1, t1=1,
                              kind="data", enc="none", body=junk)
    result = store.ingest_many([(batch.frame, "gw-B", "data")])[0]

    assert result.status == "rejected"
    assert len(result.reason or "") <= 200


def test_refused_seq_stays_missing_until_a_valid_copy_arrives(store: ReceiverStore, key_a: BatchSigner,
                                                              key_b: BatchSigner) -> None:
    """B's seq 2 forged by A is refused; the report shows 2 missing until B's own seq 2 arrives."""
    chain = Chain(key_b, gw="gw-B")
    frames = [chain.data().frame for _ in range(3)]
    forger = Chain(key_a, gw="gw-B")
    forger.seq = 1
    store.ingest_many([(frames[0], "gw-B", "data"), (forger.data().frame, "gw-B", "data"),
                       (frames[2], "gw-B", "data")])

    assert store.report()["gateways"]["gw-B"]["missing"] == [[2, 2]]
    assert store.ingest(frames[1], topic_gw="gw-B", topic_kind="data").status == "stored"
    assert store.report()["gateways"]["gw-B"]["missing"] == []


@pytest.mark.parametrize(("topic_kind", "signed_kind"), [("data", "alarm"), ("alarm", "data"), ("gap", "data"),
                                                         ("data/extra", "data"), ("", "data")])
def test_topic_kind_must_equal_the_signed_kind(store: ReceiverStore, key_b: BatchSigner, topic_kind: str,
                                               signed_kind: str) -> None:
    """A validly signed frame whose signed kind differs from its topic's last level is refused (cause kind)."""
    frame = Chain(key_b, gw="gw-B").data(kind=signed_kind).frame
    result = store.ingest(frame, topic_gw="gw-B", topic_kind=topic_kind)

    assert (result.status, result.cause, result.ackable) == ("rejected", "kind", False)


def test_a_frame_of_a_on_bs_topic_is_refused_as_topic(store: ReceiverStore, key_a: BatchSigner) -> None:
    """A's own frame (naming gw-A) published on B's topic is accounted under B, cause topic, signer A."""
    result = store.ingest(Chain(key_a, gw="gw-A").data().frame, topic_gw="gw-B", topic_kind="data")

    assert (result.gw, result.cause, result.signer) == ("gw-B", "topic", key_a.kid)
    (entry,) = store.report()["gateways"]["gw-B"]["rejected"]
    assert (entry["claimed_gw"], entry["signer"]) == ("gw-A", key_a.kid)


def test_a_flood_of_refusals_is_logged_once_with_a_count(tmp_path: Path, key_b: BatchSigner) -> None:
    """Fifty garbage frames on B's topic give one log line; the next line of that kind, a minute later, says
    how many were held back."""
    clock = WallClock(T0)
    with ReceiverStore(tmp_path / "flood.sqlite", clock=clock) as store:
        register(store, key_b, "gw-B")
        with structlog.testing.capture_logs() as logs:
            store.ingest_many([(b"junk %d" % i, "gw-B", "data") for i in range(50)])
        assert [(e["event"], e["gateway"], e["error"]) for e in logs] == [
            ("receiver_batch_rejected", "gw-B", "format")]

        clock.ms += 60_000
        with structlog.testing.capture_logs() as logs:
            store.ingest(b"junk again", topic_gw="gw-B", topic_kind="data")
    assert [e["suppressed"] for e in logs] == [49]
