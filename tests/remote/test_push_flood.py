"""Unauthenticated traffic on the config topic cannot cost a genuine push its outcome: a flood of junk on a real
Mosquitto, while the operator pushes, leaves the push's ``received`` and ``applied`` intact, answers the junk
at a bounded rate, and writes none of it to disk."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import aiomqtt

from agent.protocol.push import push_id
from agent.remote.service import REFUSAL_BURST, REFUSAL_INTERVAL_S, REPEAT_INTERVAL_S
from backend.operator import read_status
from tests.remote.conftest import RemoteGateway


class Flood:
    """Junk published on the gateway's config topic from a thread of its own, and the refusals it earns."""

    def __init__(self, rg: RemoteGateway, *, burst: int = 100, pause_s: float = 0.01,
                 replays: list[bytes] | None = None) -> None:
        self.rg, self.burst, self.pause_s = rg, burst, pause_s
        self.replays = replays or []
        self.sent = 0
        self.refusals: list[dict[str, object]] = []
        self.repeats: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="junk-flood")

    def __enter__(self) -> Flood:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self.duration = time.monotonic() - self.started

    async def _run(self) -> None:
        topic = f"mine/{self.rg.gw.id}/config"
        async with aiomqtt.Client("127.0.0.1", self.rg.broker.port, max_queued_outgoing_messages=0) as client:
            await client.subscribe(f"{topic}/status", qos=1)
            reader = asyncio.create_task(self._read(client))
            while not self._stop.is_set():
                for _ in range(self.burst):
                    await client.publish(topic, b"junk-%d" % self.sent, qos=0)
                    self.sent += 1
                for payload in self.replays:
                    await client.publish(topic, payload, qos=0)
                await asyncio.sleep(self.pause_s)
            await asyncio.sleep(2 * REFUSAL_INTERVAL_S)  # the refusal that stands for the last ones
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            status = read_status(message.payload, key=self.rg.gateway_key)
            if status is None or message.retain:
                continue
            if status["repeat"]:
                self.repeats.append(status)
            elif status["state"] == "rejected" and status["version"] is None:
                self.refusals.append(status)


def test_a_junk_flood_does_not_cost_a_genuine_push_its_statuses(remote_gw: RemoteGateway) -> None:
    """While thousands of junk payloads arrive, the operator's push gets both its statuses, the junk gets at
    most a burst and then one refusal per interval (each with the count of those it stands for, so every junk
    payload is accounted for), and the history gains only the genuine outcome."""
    rg = remote_gw
    payload = rg.sign(rg.toml(pipeline_extra="batch_max_rows = 555"), version=5)
    rg.toml()
    history = rg.history()

    with Flood(rg) as flood:
        time.sleep(2.0)  # the flood is well under way
        status = rg.push(payload, wait_s=60.0)
        time.sleep(REFUSAL_INTERVAL_S + 1.0)  # past the burst: the bucket refills during the flood

    assert status["_all"] == ["received", "applied"], status
    assert flood.sent > 2000, "the flood was too small to prove anything"
    assert rg.history()[:len(history)] == history
    assert [e["push"] for e in rg.history()[len(history):]] == [push_id(payload)]
    assert 1 <= len(flood.refusals) <= REFUSAL_BURST + flood.duration / REFUSAL_INTERVAL_S + 2
    answered = len(flood.refusals) + sum(int(r["suppressed"]) for r in flood.refusals)  # type: ignore[call-overload]
    assert answered == flood.sent, "every junk payload is answered, or counted in the answer after it"


def test_replayed_old_pushes_do_not_occupy_the_queue(remote_gw: RemoteGateway) -> None:
    """Copies of pushes the gateway already handled (anyone subscribed to the config topic has them), more
    distinct ones than the gateway queues, replayed without pause: they are answered as repeats at a bounded
    rate and never take a queue slot, so a new push is neither 'busy' nor loses a status."""
    rg = remote_gw
    old = [rg.sign(rg.toml(), version=2**63 - 1) for _ in range(10)]  # signed, refused: version out of range
    rg.toml()
    for payload in old:
        assert rg.push(payload)["state"] == "rejected"
    payload = rg.sign(rg.toml(pipeline_extra="batch_max_rows = 556"), version=6)
    rg.toml()

    with Flood(rg, burst=1, pause_s=0.0, replays=old) as flood:
        time.sleep(2.0)
        status = rg.push(payload, wait_s=60.0)

    assert status["_all"] == ["received", "applied"], status
    assert flood.repeats, "no replay was answered: this test proved nothing"
    assert {r["push"] for r in flood.repeats} <= {push_id(p) for p in old}
    assert len(flood.repeats) <= len(old) * (flood.duration / REPEAT_INTERVAL_S + 1)
