"""Messages on ``<prefix>/<gw>/ack`` that are not the archive's word about batches this gateway holds: they
delete nothing, are counted, and never stop the uplink. Run against a real Mosquitto, the attacker being just
another MQTT client: one who holds no key, one who holds a gateway's key, and one who replays the archive's
genuine acks where they do not belong."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import aiomqtt
import msgpack
import structlog
import structlog.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.clock import FakeClock
from agent.protocol.signing import BatchSigner
from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import Mosquitto
from tests.uplink.harness import ARCHIVE, GW, PREFIX, Producer, mqtt_config, running, signed_ack, wait_until


async def _publish_ack(port: int, payload: bytes | str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="attacker", timeout=10) as client:
        await client.publish(f"{PREFIX}/{GW}/ack", payload, qos=1, timeout=10)


async def test_an_unsigned_ack_from_anyone_deletes_nothing(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A JSON ack covering every seq, published by a client that is not the archive, leaves the buffer whole."""
    await producer.append(3)
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue)
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 3, "all PUBACKed")
        await _publish_ack(broker.port, '{"acked": [[1, 1000]]}')
        await wait_until(lambda: uplink.stats.bad_backend_acks == 1, "the ack counted as malformed")

    assert await producer.stored() == {1, 2, 3}


async def test_an_ack_with_an_infinite_seq_does_not_stop_the_uplink(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """``{"acked": [[1, Infinity]]}`` is counted as malformed; the uplink keeps publishing afterwards."""
    await producer.append(2)
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue)
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 2, "both PUBACKed")
        await _publish_ack(broker.port, '{"acked": [[1, Infinity]]}')
        await wait_until(lambda: uplink.stats.bad_backend_acks == 1, "the ack counted as malformed", limit_s=10)
        await producer.append(1)
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 3, "the next batch PUBACKed")

    assert await producer.stored() == {1, 2, 3}


def _archive_signed(doc: dict[str, Any], signer: BatchSigner = ARCHIVE) -> bytes:
    """An ack whose signed part is ``doc`` as given, signed by ``signer``: values the codec would never write
    get past the signature and must be refused by the checks after it."""
    signed = msgpack.packb(doc, use_bin_type=True)
    return msgpack.packb([2, signed, signer.sign(signed)], use_bin_type=True)


def _doc(ranges: list[list[Any]], **overrides: Any) -> dict[str, Any]:
    return {"type": "ack", "v": 2, "gw": GW, "ranges": ranges, "issued": 1, "alg": "ed25519", "kid": ARCHIVE.kid,
            **overrides}


GATEWAY_KEY = BatchSigner(Ed25519PrivateKey.generate())  # another gateway's key, known to the archive
STRANGER = BatchSigner(Ed25519PrivateKey.generate())
OTHER_HISTORY = bytes(range(32))  # the hash seq 3 had before the gateway lost its state and started again

# (case, payload from the hashes of seqs 1..3 held, "malformed" | "unverified")
HOSTILE: list[tuple[str, Callable[[dict[int, bytes]], bytes | str], str]] = [
    ("forged_without_the_archive_key", lambda h: signed_ack([(1, 3, h[3])], signer=STRANGER), "unverified"),
    ("signed_by_a_gateway_key", lambda h: signed_ack([(1, 3, h[3])], signer=GATEWAY_KEY), "unverified"),
    ("archive_ack_for_another_gateway", lambda h: signed_ack([(1, 3, h[3])], gw="gw2"), "unverified"),
    ("replayed_after_state_loss", lambda h: signed_ack([(1, 3, OTHER_HISTORY)]), "unverified"),
    ("kid_of_the_archive_signed_by_another", lambda h: _archive_signed(_doc([[1, 3, h[3]]]), STRANGER),
     "unverified"),
    ("ranges_overlapping", lambda h: _archive_signed(_doc([[1, 2, h[2]], [2, 3, h[3]]])), "malformed"),
    ("range_reversed", lambda h: _archive_signed(_doc([[3, 1, h[3]]])), "malformed"),
    ("too_many_ranges", lambda h: _archive_signed(_doc([[s, s, h[3]] for s in range(1, 1 + 2 * 513, 2)])),
     "malformed"),
    ("huge_payload", lambda h: b"\x93\x02" + b"\xc6" + (70_000).to_bytes(4, "big") + b"x" * 70_000, "malformed"),
    ("seq_beyond_2_63", lambda h: _archive_signed(_doc([[1, 2**63, h[3]]])), "malformed"),
    ("seq_infinity_float", lambda h: _archive_signed(_doc([[1, math.inf, h[3]]])), "malformed"),
    ("seq_negative", lambda h: _archive_signed(_doc([[-5, 3, h[3]]])), "malformed"),
    ("seq_zero", lambda h: _archive_signed(_doc([[0, 3, h[3]]])), "malformed"),
    ("seq_bool", lambda h: _archive_signed(_doc([[True, 3, h[3]]])), "malformed"),
    ("seq_str", lambda h: _archive_signed(_doc([["1", "3", h[3]]])), "malformed"),
    ("hash_short", lambda h: _archive_signed(_doc([[1, 3, h[3][:31]]])), "malformed"),
    ("hash_as_str", lambda h: _archive_signed(_doc([[1, 3, h[3].hex()]])), "malformed"),
    ("issued_negative", lambda h: _archive_signed(_doc([[1, 3, h[3]]], issued=-1)), "malformed"),
    ("ranges_not_a_list", lambda h: _archive_signed(_doc({"1": 3})), "malformed"),  # type: ignore[arg-type]
    ("version_1_json_ack", lambda h: '{"acked": [[1, 1000]]}', "malformed"),
    ("version_1_json_infinity", lambda h: '{"acked": [[1, Infinity]]}', "malformed"),
    ("outer_not_an_array", lambda h: msgpack.packb({"acked": [[1, 3]]}), "malformed"),
    ("outer_version_3", lambda h: msgpack.packb([3, b"x", b"y"]), "malformed"),
    ("signed_part_not_msgpack", lambda h: msgpack.packb([2, b"\xc1", b"sig"]), "malformed"),
    ("empty_payload", lambda h: b"", "malformed"),
    ("deeply_nested", lambda h: b"\x91" * 5000 + b"\x00", "malformed"),
]


async def test_hostile_acks_delete_nothing_are_counted_and_the_uplink_lives_on(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """Every message of the table is published on the ack topic of a running uplink: nothing is deleted, each
    is counted under its kind, and afterwards the archive's genuine ack still deletes the three batches."""
    await producer.append(3)
    hashes = {b.seq: b.hash for b in await queue.peek(10)}
    expected = {kind: sum(1 for _, _, k in HOSTILE if k == kind) for kind in ("malformed", "unverified")}
    with structlog.testing.capture_logs() as logs:
        uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue)
        await _attack_then_ack(uplink, broker, producer, hashes, expected)
    refusals = [e for e in logs if e["event"] == "uplink_ack_refused"]

    # Rate limited: one line per kind within the minute, the first carrying its count (1).
    assert sorted((e["kind"], e["count"]) for e in refusals) == [("malformed", 1), ("unverified", 1)]
    assert (uplink.stats.bad_backend_acks, uplink.stats.unverified_acks) == (expected["malformed"],
                                                                            expected["unverified"])
    assert await producer.stored() == set()


async def _attack_then_ack(uplink: MqttUplink, broker: Mosquitto, producer: Producer, hashes: dict[int, bytes],
                           expected: dict[str, int]) -> None:
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 3, "all PUBACKed")
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="attacker", timeout=10) as attacker:
            for _, make, _ in HOSTILE:
                await attacker.publish(f"{PREFIX}/{GW}/ack", make(hashes), qos=1, timeout=10)
        await wait_until(lambda: (uplink.stats.bad_backend_acks, uplink.stats.unverified_acks)
                         == (expected["malformed"], expected["unverified"]), "every hostile ack counted")
        stored_after_attack = await producer.stored()
        await _publish_ack(broker.port, signed_ack([(1, 3, hashes[3])]))
        await wait_until(lambda: uplink.stats.acked == 3, "the genuine ack applied")
    assert stored_after_attack == {1, 2, 3}


async def test_a_run_whose_last_batch_is_not_held_deletes_nothing(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A genuine run ending at a seq the uplink does not hold (here: not yet made) names no hash it can check,
    so the batches it does hold in that run stay; it is not counted as hostile."""
    await producer.append(2)
    hashes = {b.seq: b.hash for b in await queue.peek(10)}
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue)
    async with running(uplink):
        await wait_until(lambda: uplink.stats.awaiting_backend_ack == 2, "both PUBACKed")
        await _publish_ack(broker.port, signed_ack([(1, 5, hashes[2])]))
        await _publish_ack(broker.port, signed_ack([(2, 2, hashes[2])]))
        await wait_until(lambda: uplink.stats.acked == 1, "the run ending at 2 applied")

    assert await producer.stored() == {1}
    assert (uplink.stats.bad_backend_acks, uplink.stats.unverified_acks) == (0, 0)


async def test_refused_acks_are_logged_once_a_minute_with_their_count(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """A flood of bad acks gives one warning, then after a minute one more carrying how many were refused
    since the first line."""
    clock = FakeClock()
    await producer.append(1)
    with structlog.testing.capture_logs() as logs:
        uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=300.0), GW, queue, clock=clock)
        async with running(uplink):
            await wait_until(lambda: uplink.stats.awaiting_backend_ack == 1, "PUBACKed")
            for _ in range(3):
                await _publish_ack(broker.port, b"junk")
            await wait_until(lambda: uplink.stats.bad_backend_acks == 3, "three refused")
            await clock.advance(61.0)
            await _publish_ack(broker.port, b"junk")
            await wait_until(lambda: uplink.stats.bad_backend_acks == 4, "the fourth refused")
    counts = [e["count"] for e in logs if e["event"] == "uplink_ack_refused"]

    assert counts == [1, 3]
