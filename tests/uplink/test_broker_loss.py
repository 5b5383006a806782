"""A broker that loses what it acknowledged loses nothing in the default ack mode: the gateway keeps every batch
until the archive's signed ack, and sends again what the archive never got."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from agent.uplink import MqttUplink
from backend.receiver import Receiver, ReceiverStore
from buffer import AsyncDiskQueue
from tests.peers.mosquitto import Mosquitto
from tests.receiver.chain import register
from tests.uplink.harness import ARCHIVE, GW, Producer, mqtt_config, running, wait_until


async def test_mosquitto_killed_and_restarted_without_persistence_loses_nothing(
    broker: Mosquitto, queue: AsyncDiskQueue, producer: Producer, tmp_path: Path
) -> None:
    """Mid-stream the broker is killed (SIGKILL, persistence off: every queued message and both sessions are
    gone) and started again; batches keep coming throughout. The receiver ends with every seq, none missing,
    and the gateway's buffer is empty."""
    uplink = MqttUplink(mqtt_config(broker.port, ack_timeout_s=2.0), GW, queue)
    with ReceiverStore(tmp_path / "receiver.sqlite") as store:
        register(store, producer.signer, GW)
        receiver = Receiver(broker.url, store, client_id="test-archive", ack_signer=ARCHIVE,
                            ack_interval_s=0.05)
        receiving = asyncio.create_task(receiver.run(), name="test.receiver")
        try:
            async with running(uplink):
                await producer.append(20)
                await wait_until(lambda: receiver.stats.stored >= 10, "the stream under way")
                broker.kill()
                await producer.append(10)
                broker.start()
                await producer.append(10)
                await wait_until(lambda: uplink.stats.acked == 40, "every batch acknowledged by the archive")
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiving
        report = store.report()["gateways"][GW]

    assert receiver.stats.reconnects >= 1
    assert uplink.stats.reconnects >= 1
    assert (report["batches"], report["last_seq"], report["missing"]) == (40, 40, [])
    assert await producer.stored() == set()
