"""Test harness for the uplink: a producer of signed chained frames, a subscriber that records what reached
the broker (and plays the archive: it acknowledges in acks signed by the archive key, as the receiver does),
and a helper that runs an uplink as a task. ``mqtt_config`` gives the default ``ack_mode = "backend"`` with
an archive keys file listing that key."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol import acks, wire
from agent.protocol.signing import BatchSigner, TrustStore
from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue, QueuedBatch
from config.schema import MqttConfig

GW = "gw1"
PREFIX = "mine"
# Generous: the machine is shared by several engineers running tests at once.
DEADLINE_S = 60.0
# The archive key the Collector signs its acks with, and the file that lists it for the uplink.
ARCHIVE = BatchSigner(Ed25519PrivateKey.generate())
ARCHIVE_KEYS_FILE = Path(tempfile.mkdtemp(prefix="uplink-tests-")) / "archive.keys"
atexit.register(shutil.rmtree, ARCHIVE_KEYS_FILE.parent, True)
ARCHIVE_KEYS_FILE.write_text(f"# the test archive\n{ARCHIVE.public_text}\n")


def archive_keys() -> TrustStore:
    keys = TrustStore()
    keys.add(ARCHIVE.public_raw)
    return keys


def signed_ack(ranges: list[tuple[int, int, bytes]], *, signer: BatchSigner = ARCHIVE, gw: str = GW) -> bytes:
    """An ack as the archive signs it: runs of (first, last, hash of last)."""
    return acks.encode_ack(signer, gw=gw, ranges=[acks.AckRange(*r) for r in ranges],
                           issued=int(time.time() * 1000))


async def wait_until(condition: Callable[[], bool], what: str, limit_s: float = DEADLINE_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``limit_s`` seconds."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.02)


class Producer:
    """Appends signed, hash-chained frames to the queue, as the batcher does."""

    def __init__(self, queue: AsyncDiskQueue, padding: int = 200) -> None:
        self.queue = queue
        self.signer = BatchSigner(Ed25519PrivateKey.generate())
        self.padding = padding
        self.appended: list[int] = []

    async def append(self, n: int = 1, kind: str = "data") -> list[int]:
        seqs = []
        for _ in range(n):
            head_seq, head_hash = await self.queue.chain_head()
            now = int(time.time() * 1000)
            body = wire.encode_body([], {"pad": wire.Table(cols=["x"], rows=[["x" * self.padding]])}, now,
                                    enc="none")
            b = wire.encode_frame(self.signer, gw=GW, seq=head_seq + 1, prev=head_hash, created=now, t0=now,
                                  t1=now, kind=kind, enc="none", body=body)
            await self.queue.append(QueuedBatch.from_wire(b, 1))
            self.appended.append(b.seq)
            seqs.append(b.seq)
        return seqs

    async def stored(self) -> set[int]:
        return {b.seq for b in await self.queue.peek(1_000_000)}


class Collector:
    """A plain aiomqtt subscriber on the batch topics that reconnects by itself and records every seq, in
    arrival order, duplicates included. It is the archive too (``ack=True``, the default): it acknowledges
    every batch in an ack signed by ARCHIVE, as the receiver does after its database commit. ``ack=False``
    is a backend that stays silent (or, for an uplink in broker mode, a plain subscriber)."""

    def __init__(self, port: int, *, ack: bool = True, client_id: str = "collector",
                 **client_args: Any) -> None:
        self.port = port
        self.client_args = client_args
        self.ack = ack
        self.client_id = client_id
        self.seqs: list[int] = []
        self.topics: dict[int, str] = {}
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def unique(self) -> set[int]:
        return set(self.seqs)

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run(), name="test.collector")
        async with asyncio.timeout(DEADLINE_S):
            await self.connected.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            client = aiomqtt.Client("127.0.0.1", self.port, identifier=self.client_id, clean_session=False,
                                    timeout=5, **self.client_args)
            try:
                async with client:
                    await client.subscribe(f"{PREFIX}/{GW}/batch/#", qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        batch = wire.open_frame(bytes(message.payload))  # type: ignore[arg-type]
                        self.seqs.append(batch.seq)
                        self.topics[batch.seq] = str(message.topic)
                        if self.ack:
                            ack = signed_ack([(batch.seq, batch.seq, batch.hash)])
                            await client.publish(f"{PREFIX}/{GW}/ack", ack, qos=1, timeout=5)
            except aiomqtt.MqttError:
                self.connected.clear()
                # aiomqtt leaves a failed publish's disconnect error unretrieved; retrieve it so asyncio does
                # not report it at exit.
                lost = client._disconnected
                if lost.done() and not lost.cancelled():
                    lost.exception()
                await asyncio.sleep(0.2)


def mqtt_config(port: int, **overrides: Any) -> MqttConfig:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": port, "keepalive_s": 5, "publish_timeout_s": 2.0,
                                "connect_timeout_s": 3.0, "reconnect_max_s": 1.0,
                                "archive_keys_file": ARCHIVE_KEYS_FILE}
    settings.update(overrides)
    return MqttConfig(**settings)


@contextlib.asynccontextmanager
async def running(uplink: MqttUplink) -> AsyncIterator[MqttUplink]:
    """Run ``uplink.run()`` as a task for the duration of the block; a crash fails the test."""
    task = asyncio.create_task(uplink.run(), name="test.uplink")
    try:
        yield uplink
        assert not task.done() or task.cancelled(), f"uplink.run() ended: {task.exception()!r}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
