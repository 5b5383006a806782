"""The operator's side of remote configuration: publish a signed push and wait for the gateway's outcome.

Used by ``mine-backend config push`` (and the tests and benchmark). The status topic is subscribed *before* the
push is published, so no outcome can be missed; statuses are matched to this push by its id (the gateway
echoes it), so a retained status of an earlier push is never mistaken for this one's.

The push is published retained with QoS 1: a gateway that is offline (or underground with its link down)
receives it when it next connects. Once a final outcome arrives the retained copy is cleared, so a gateway
whose state directory was wiped does not apply an old push again.
"""

from __future__ import annotations

__all__ = ["FINAL_STATES", "push_and_wait"]

import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiomqtt

from agent.core.cancellation import timeout
from agent.core.errors import RemoteConfigError
from agent.protocol.mqtt import BrokerAddress, BrokerSettings, TlsFiles, create_client

FINAL_STATES = frozenset({"rejected", "applied", "rolled_back"})


async def push_and_wait(
    broker: BrokerAddress,
    payload: bytes,
    *,
    prefix: str,
    gateway: str,
    push: str,
    wait_s: float,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    username: str | None = None,
    password: str | None = None,
    tls: TlsFiles | None = None,
    client_id: str | None = None,
) -> dict[str, Any] | None:
    """Publish ``payload`` to ``<prefix>/<gateway>/config`` and return the final status for push id ``push``,
    or None if none arrived within ``wait_s`` seconds (the push then stays retained for the gateway).

    ``tls`` given means TLS with those files; otherwise an ``mqtts://`` broker is verified against the system's
    CAs. ``client_id`` None lets the library choose one (a clean session)."""
    topic = f"{prefix}/{gateway}/config"
    status_topic = f"{topic}/status"
    if tls is None and broker.tls:
        tls = TlsFiles()
    settings = BrokerSettings(broker.host, broker.port, username=username, password=password, tls=tls,
                              client_id=client_id, connect_timeout_s=10.0)
    client = await create_client(settings)
    try:
        async with timeout(30.0):
            await client.__aenter__()
    except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
        raise RemoteConfigError(f"cannot connect to {broker.host}:{broker.port}: {exc or 'timed out'}",
                                hint="check --broker, --username/--password-file and TLS options") from exc
    try:
        await client.subscribe(status_topic, qos=1, timeout=10.0)
        await client.publish(topic, payload, qos=1, retain=True, timeout=30.0)
        final = None
        with contextlib.suppress(TimeoutError):
            async with timeout(wait_s):
                async for message in client.messages:
                    if message.retain:
                        continue  # an outcome kept from before this push was sent
                    status = _status(message.payload)
                    if status is None or status.get("push") != push:
                        continue
                    if on_status is not None:
                        on_status(status)
                    if status.get("state") in FINAL_STATES:
                        final = status
                        break
        if final is not None:
            await client.publish(topic, b"", qos=1, retain=True, timeout=30.0)
    except aiomqtt.MqttError as exc:
        raise RemoteConfigError(f"lost the broker connection: {exc}") from exc
    else:
        return final
    finally:
        with contextlib.suppress(Exception):
            async with timeout(5.0):
                await client.__aexit__(None, None, None)


def _status(payload: Any) -> dict[str, Any] | None:
    try:
        status = json.loads(payload)
    except (TypeError, ValueError):
        return None
    return status if isinstance(status, dict) else None
