"""The Receiver against a real Mosquitto: published frames are stored, then acknowledged end to end in acks
signed by the archive key."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.errors import AgentError
from agent.protocol import acks
from agent.protocol.signing import BatchSigner, TrustStore
from backend.receiver import Receiver, ReceiverStore
from tests.peers.mosquitto import Mosquitto
from tests.receiver.chain import Chain, register

DEADLINE = 30.0  # generous: the machine is shared; every wait below ends as soon as its condition holds


@pytest.fixture
def signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def db(tmp_path: Path, signer: BatchSigner) -> Path:
    """A receiver database with ``signer`` registered for gw-01."""
    path = tmp_path / "r.sqlite"
    with ReceiverStore(path) as store:
        register(store, signer)
    return path


@pytest.fixture
def archive() -> BatchSigner:
    """The archive key the receiver signs its acks with."""
    return BatchSigner(Ed25519PrivateKey.generate())


@contextlib.asynccontextmanager
async def running(receiver: Receiver) -> AsyncIterator[Receiver]:
    task = asyncio.create_task(receiver.run(), name="test.receiver")
    try:
        async with asyncio.timeout(DEADLINE):
            await receiver.subscribed.wait()
        yield receiver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _publish(broker: Mosquitto, frames: list[tuple[str, bytes]], *, client_id: str = "gw-01") -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier=client_id, timeout=DEADLINE) as gw:
        for topic, frame in frames:
            await gw.publish(topic, frame, qos=1)


async def _wait_for(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(DEADLINE):
        while not predicate():  # noqa: ASYNC110 - counters of another task; bounded by DEADLINE
            await asyncio.sleep(0.02)
    assert predicate(), what


def _report(db: Path, gw: str = "gw-01") -> dict:
    with ReceiverStore(db) as s:
        return s.report()["gateways"].get(gw, {})


async def test_frames_are_stored_then_acked_end_to_end(broker: Mosquitto, signer: BatchSigner, db: Path,
                                                       archive: BatchSigner) -> None:
    """Published frames are stored, and the gateway's ack topic receives signed acks whose runs cover every
    seq and name the hash of each run's last batch."""
    chain = Chain(signer)
    batches = [chain.data() for _ in range(5)]
    frames = [b.frame for b in batches]
    archive_keys = TrustStore()
    archive_keys.add(archive.public_raw)
    acked: set[int] = set()
    hashes: dict[int, bytes] = {}
    with ReceiverStore(db) as store:
        receiver = Receiver(broker.url, store, client_id="test-receiver", ack_signer=archive)
        async with (running(receiver),
                    aiomqtt.Client(broker.host, broker.port, identifier="test-ack-watcher") as watcher):
            await watcher.subscribe("mine/gw-01/ack", qos=1)
            await _publish(broker, [("mine/gw-01/batch/data", f) for f in [*frames, frames[0]]])
            async with asyncio.timeout(DEADLINE):
                async for message in watcher.messages:
                    ack = acks.open_ack(bytes(message.payload), archive_keys, gateway="gw-01")  # type: ignore[arg-type]
                    for r in ack.ranges:
                        acked.update(range(r.first, r.last + 1))
                        hashes[r.last] = r.last_hash
                    if acked >= {1, 2, 3, 4, 5}:
                        break
            await _wait_for(lambda: receiver.stats.received == 6, "the duplicate was received")

    assert acked == {1, 2, 3, 4, 5}
    assert all(hashes[seq] == batches[seq - 1].hash for seq in hashes)
    report = _report(db)
    assert (report["batches"], report["duplicates"], report["missing"]) == (5, 1, [])


async def test_no_acks_are_published_when_disabled(broker: Mosquitto, signer: BatchSigner, db: Path) -> None:
    """Without an archive key (gateways in broker mode) frames are stored and nothing is published on the ack
    topic."""
    frame = Chain(signer).data().frame
    seen: list[bytes] = []
    with ReceiverStore(db) as store:
        # ack_interval_s=0: were acks on, one would go out right after the commit, ahead of the marker below.
        receiver = Receiver(broker.url, store, client_id="test-receiver", ack_interval_s=0)
        async with (running(receiver),
                    aiomqtt.Client(broker.host, broker.port, identifier="test-ack-watcher") as watcher):
            await watcher.subscribe("mine/+/ack", qos=1)
            collector = asyncio.create_task(_collect(watcher, seen))
            await _publish(broker, [("mine/gw-01/batch/data", frame)])
            await _wait_for(lambda: receiver.stats.stored == 1, "the frame was stored")
            # An ack would follow the commit within ack_interval_s; a marker published after the store
            # arrives behind it on the same subscription, so seeing the marker proves no ack came first.
            await watcher.publish("mine/marker/ack", b"marker", qos=1)
            await _wait_for(lambda: b"marker" in seen, "the marker arrived")
            collector.cancel()

    assert (seen, receiver.stats.acks_published) == ([b"marker"], 0)


async def _collect(client: aiomqtt.Client, into: list[bytes]) -> None:
    async for message in client.messages:
        into.append(bytes(message.payload))


async def test_retained_batch_messages_are_dropped_unread_at_every_start(broker: Mosquitto, signer: BatchSigner,
                                                                         db: Path) -> None:
    """Frames planted retained on batch topics (junk under a made-up name, even a genuine frame: no gateway
    publishes batches retained) are acknowledged and counted, never decoded nor recorded, at each start;
    the batch published next is stored."""
    chain = Chain(signer)
    planted = [("mine/zz0/batch/data", b"\xc1" * 1000), ("mine/gw-01/batch/data", chain.data().frame)]
    async with aiomqtt.Client(broker.host, broker.port, identifier="planter", timeout=DEADLINE) as evil:
        for topic, payload in planted:
            await evil.publish(topic, payload, qos=1, retain=True)
    with ReceiverStore(db) as store:
        for start in range(2):
            receiver = Receiver(broker.url, store, client_id="test-receiver")
            async with running(receiver):
                await _publish(broker, [("mine/gw-01/batch/data", chain.data().frame)])
                await _wait_for(lambda r=receiver: r.stats.stored == 1, f"start {start}: the next batch was stored")
                await _wait_for(lambda r=receiver: r.stats.retained == 2, f"start {start}: both retained dropped")
            assert (receiver.stats.received, receiver.stats.rejected) == (1, 0)
        report = store.report()

    assert (report["gateways"]["gw-01"]["batches"], report["gateways"]["gw-01"]["missing"]) == (2, [[1, 1]])
    assert (report["gateways"]["gw-01"]["refusals"]["frames"], report["unregistered"]["frames"]) == (0, 0)


async def test_frames_sent_while_receiver_is_away_arrive_later(broker: Mosquitto, tmp_path: Path,
                                                               signer: BatchSigner, db: Path) -> None:
    """The persistent session keeps frames published while the receiver is stopped and delivers them after."""
    chain = Chain(signer)
    with ReceiverStore(db) as store:
        async with running(Receiver(broker.url, store, client_id="test-receiver")):
            pass  # first connection creates the broker-side session and subscription
        await _publish(broker, [("mine/gw-01/batch/data", chain.data().frame) for _ in range(3)])
        receiver = Receiver(broker.url, store, client_id="test-receiver")
        async with running(receiver):
            await _wait_for(lambda: receiver.stats.stored == 3, "the queued frames were stored")

    assert _report(db)["batches"] == 3


async def test_receiver_reconnects_after_broker_restart(broker: Mosquitto, tmp_path: Path,
                                                        signer: BatchSigner, db: Path) -> None:
    """After the broker restarts the receiver subscribes again and stores what is published next."""
    chain = Chain(signer)
    with ReceiverStore(db) as store:
        receiver = Receiver(broker.url, store, client_id="test-receiver")
        async with running(receiver):
            await _publish(broker, [("mine/gw-01/batch/data", chain.data().frame)])
            await _wait_for(lambda: receiver.stats.stored == 1, "the first frame was stored")
            broker.restart()
            await _wait_for(lambda: receiver.stats.reconnects >= 1, "the receiver noticed the restart")
            async with asyncio.timeout(DEADLINE):
                await receiver.subscribed.wait()
            await _publish(broker, [("mine/gw-01/batch/data", chain.data().frame)])
            await _wait_for(lambda: receiver.stats.stored == 2, "the frame after the restart was stored")

    assert receiver.stats.last_error is not None


class FailingOnceStore(ReceiverStore):
    """A store whose first commit fails, as on a full disk: the fault is injected, the rest is real."""

    failures = 0

    def ingest_many(self, frames):  # type: ignore[no-untyped-def]
        if self.failures == 0:
            self.failures += 1
            raise AgentError("disk full", recoverable=True)
        return super().ingest_many(frames)


async def test_frame_not_committed_is_delivered_again(broker: Mosquitto, signer: BatchSigner, db: Path) -> None:
    """A frame whose commit failed was not PUBACKed, so the broker delivers it again and it is stored."""
    frame = Chain(signer).data().frame
    with FailingOnceStore(db) as store:
        receiver = Receiver(broker.url, store, client_id="test-receiver")
        async with running(receiver):
            await _publish(broker, [("mine/gw-01/batch/data", frame)])
            await _wait_for(lambda: receiver.stats.stored == 1, "the redelivered frame was stored")

    assert (store.failures, receiver.stats.received, receiver.stats.reconnects) == (1, 2, 1)


async def test_acks_pending_at_a_disconnect_are_published_after_reconnecting(
        broker: Mosquitto, tmp_path: Path, signer: BatchSigner, db: Path, archive: BatchSigner) -> None:
    """Seqs decided but not yet acknowledged when the link drops are acknowledged on the next connection."""
    with ReceiverStore(db) as store:
        # A long coalescing delay holds the ack back until the broker restart below cuts the connection.
        receiver = Receiver(broker.url, store, client_id="test-receiver", ack_interval_s=3600,
                            ack_signer=archive)
        async with running(receiver):
            await _publish(broker, [("mine/gw-01/batch/data", Chain(signer).data().frame)])
            await _wait_for(lambda: receiver.stats.stored == 1, "the frame was stored")
            broker.restart()
            await _wait_for(lambda: receiver.stats.reconnects >= 1, "the receiver lost the connection")
            receiver.ack_interval_s = 0.01  # the next connection's ack task starts after the backoff delay
            await _wait_for(lambda: receiver.stats.acks_published == 1, "the held ack was published")

    assert receiver.stats.acks_published == 1


async def test_refused_frames_are_never_acknowledged(broker: Mosquitto, signer: BatchSigner, db: Path,
                                                     archive: BatchSigner) -> None:
    """Over a real broker: another gateway's key signing in gw-01's name, and a genuine frame on the wrong kind's
    topic, are refused (counted, recorded) and no ack names their seqs; the genuine frame beside them is acked."""
    other = BatchSigner(Ed25519PrivateKey.generate())
    with ReceiverStore(db) as store:
        register(store, other, "gw-02")
    chain = Chain(signer)
    genuine, wrong_kind = chain.data().frame, chain.data().frame
    forger = Chain(other, gw="gw-01")
    forger.seq = 2
    forged = forger.data().frame  # seq 3 in gw-01's name
    archive_keys = TrustStore()
    archive_keys.add(archive.public_raw)
    acked: set[int] = set()
    with ReceiverStore(db) as store:
        receiver = Receiver(broker.url, store, client_id="test-receiver", ack_signer=archive)
        async with (running(receiver),
                    aiomqtt.Client(broker.host, broker.port, identifier="test-ack-watcher") as watcher):
            await watcher.subscribe("mine/gw-01/ack", qos=1)
            await _publish(broker, [("mine/gw-01/batch/alarm", wrong_kind), ("mine/gw-01/batch/data", forged),
                                    ("mine/gw-01/batch/data", genuine)])
            async with asyncio.timeout(DEADLINE):
                async for message in watcher.messages:
                    ack = acks.open_ack(bytes(message.payload), archive_keys, gateway="gw-01")  # type: ignore[arg-type]
                    for r in ack.ranges:
                        acked.update(range(r.first, r.last + 1))
                    if 1 in acked:
                        break
            await _wait_for(lambda: receiver.stats.received == 3, "all three were received")

    assert (acked, receiver.stats.stored, receiver.stats.rejected) == ({1}, 1, 2)
    causes = _report(db)["refusals"]["by_cause"]
    assert causes == {"kind": 1, "wrong_gateway": 1}


async def test_acks_are_split_into_messages_of_at_most_max_ack_ranges(
        broker: Mosquitto, signer: BatchSigner, db: Path, archive: BatchSigner) -> None:
    """525 batches with a seq missing between each are 525 runs: they go out as one full message of
    MAX_ACK_RANGES runs and one with the rest, and a refused frame is in none of them."""
    chain = Chain(signer)
    batches = [chain.data(rows=1) for _ in range(1050)]
    sent = [b for b in batches if b.seq % 2 == 1]
    forged = Chain(BatchSigner(Ed25519PrivateKey.generate())).data().frame  # seq 1, a key nobody registered
    archive_keys = TrustStore()
    archive_keys.add(archive.public_raw)
    messages: list[acks.Ack] = []
    with ReceiverStore(db) as store:
        async with running(Receiver(broker.url, store, client_id="test-receiver")):
            pass  # the broker keeps what is published next for this session
        await _publish(broker, [("mine/gw-01/batch/data", f) for f in [forged, *(b.frame for b in sent)]])
        receiver = Receiver(broker.url, store, client_id="test-receiver", ack_signer=archive,
                            ack_interval_s=2.0, max_frames_per_commit=2048)
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-ack-watcher") as watcher:
            await watcher.subscribe("mine/gw-01/ack", qos=1)
            async with running(receiver), asyncio.timeout(DEADLINE):
                async for message in watcher.messages:
                    messages.append(acks.open_ack(bytes(message.payload), archive_keys,  # type: ignore[arg-type]
                                                  gateway="gw-01"))
                    if sum(len(m.ranges) for m in messages) >= len(sent):
                        break

    runs = sorted((r.first, r.last, r.last_hash) for m in messages for r in m.ranges)
    assert runs == [(b.seq, b.seq, b.hash) for b in sent]
    assert sorted(len(m.ranges) for m in messages) == [len(sent) - acks.MAX_ACK_RANGES, acks.MAX_ACK_RANGES]
