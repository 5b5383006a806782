"""Key rotation, expiry and revocation, end to end through the store: what is refused, what stays stored and
verifiable, and that the chain runs on across a change of key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import BatchSigner
from backend.receiver import ReceiverStore
from backend.registry import entry_for
from tests.receiver.chain import T0, Chain, WallClock, register

HOUR = 3_600_000


def _key() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def clock() -> WallClock:
    return WallClock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: WallClock) -> Iterator[ReceiverStore]:
    s = ReceiverStore(tmp_path / "r.sqlite", clock=clock)
    yield s
    s.close()


def _ingest(store: ReceiverStore, frames: list[bytes]) -> list[tuple[str, str | None]]:
    return [(r.status, r.cause) for r in store.ingest_many([(f, "gw-01", "data") for f in frames])]


def test_rotation_keeps_the_chain_and_bounds_the_old_key(store: ReceiverStore, clock: WallClock) -> None:
    """The gateway switches keys between two batches, both registered during the overlap: every batch is
    stored, the chain has no break; after the overlap the old key can sign nothing new, but its backlog (made
    before the overlap ended) still arrives and is stored."""
    old, new = _key(), _key()
    register(store, old)
    chain = Chain(old)
    early = [chain.data().frame for _ in range(3)]  # seqs 1..3 with the old key
    backlog = chain.data().frame  # seq 4, old key, made before the switch, delivered late
    store.registry.rotate("gw-01", entry_for("gw-01", new.public_text), overlap_until_ms=T0 + 10 * HOUR,
                          now_ms=clock.ms)
    chain.signer = new
    later = [chain.data().frame for _ in range(3)]  # seqs 5..7 with the new key
    outside = Chain(old)
    outside.seq, outside.prev = 7, chain.prev
    late = outside.data(t0=T0 + 11 * HOUR)  # an old-key batch made after the overlap

    assert _ingest(store, early + later) == [("stored", None)] * 6
    clock.ms = T0 + 12 * HOUR
    assert _ingest(store, [backlog]) == [("stored", None)]
    assert _ingest(store, [late.frame]) == [("rejected", "key_not_valid")]
    report = store.report()["gateways"]["gw-01"]
    assert (report["batches"], report["missing"], report["chain_breaks"]) == (7, [], [])
    assert {k["kid"]: k["status"] for k in report["keys"]} == {old.kid: "expired", new.kid: "valid"}
    assert store.audit() == {"checked": 7, "failed": []}


def test_revocation_refuses_later_arrivals_and_keeps_earlier_batches(store: ReceiverStore,
                                                                     clock: WallClock) -> None:
    """After revocation at R, a frame arriving at or after R is refused whatever its created time; batches
    stored before R stay stored, still pass the audit, and reverify does not let the refused ones in."""
    key = _key()
    register(store, key)
    chain = Chain(key)
    frames = [chain.data().frame for _ in range(4)]
    clock.ms = T0 + HOUR
    assert _ingest(store, frames[:2]) == [("stored", None)] * 2
    store.registry.revoke(key.kid, at_ms=T0 + 2 * HOUR, reason="gateway stolen")
    clock.ms = T0 + 2 * HOUR  # the thief's frames, created (backdated) before R, arrive after it
    assert _ingest(store, frames[2:]) == [("rejected", "revoked")] * 2

    assert [r.status for r in store.reverify()] == []  # revoked is not a cause reverify retries
    report = store.report()["gateways"]["gw-01"]
    assert (report["batches"], report["missing"], report["refusals"]["by_cause"]) == (2, [], {"revoked": 2})
    assert report["keys"][0]["status"] == "revoked"
    assert "gateway stolen" in report["keys"][0]["note"]
    assert store.audit() == {"checked": 2, "failed": []}


def test_revocation_back_in_time_flags_what_arrived_since(store: ReceiverStore, clock: WallClock) -> None:
    """A key revoked as of a past moment (the theft found out later): the audit names the stored batches that
    arrived after that moment, and only those."""
    key = _key()
    register(store, key)
    chain = Chain(key)
    for i in range(3):
        clock.ms = T0 + i * HOUR
        _ingest(store, [chain.data().frame])
    store.registry.revoke(key.kid, at_ms=T0 + HOUR, reason="compromised since 01:00")

    audit = store.audit()
    assert audit["checked"] == 3
    assert [(f["seq"], f["cause"]) for f in audit["failed"]] == [(2, "revoked"), (3, "revoked")]


def test_valid_until_refuses_frames_created_after_it(store: ReceiverStore, clock: WallClock) -> None:
    """A key valid until U signs nothing created after U; what it made before U is stored even when it
    arrives later (a backlog after an outage)."""
    key = _key()
    chain = Chain(key)
    before = chain.data().frame  # created T0 + 20 005
    after = chain.data().frame  # created T0 + 120 005
    register(store, key, valid_until_ms=T0 + 100_000)
    clock.ms = T0 + 10 * HOUR

    assert _ingest(store, [after, before]) == [("rejected", "key_not_valid"), ("stored", None)]


def test_reverify_brings_a_refusal_cause_up_to_date(store: ReceiverStore) -> None:
    """A frame refused for an unknown key, whose key is then registered valid only from later on, stays
    refused and its cause becomes key_not_valid."""
    key = _key()
    frame = Chain(key).data().frame
    assert _ingest(store, [frame]) == [("rejected", "unknown_key")]
    register(store, key, valid_from_ms=T0 + HOUR)

    (result,) = store.reverify()
    assert (result.status, result.cause) == ("rejected", "key_not_valid")
    assert store.report()["gateways"]["gw-01"]["rejected"][0]["cause"] == "key_not_valid"
