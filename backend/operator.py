"""The operator's side of remote configuration: publish a signed push and wait for the gateway's outcome.

Used by ``mine-backend config push`` (and the tests and benchmark). The status topic is subscribed *before* the
push is published, so no outcome can be missed; statuses are matched to this push by its id (the gateway
echoes it), so a retained status of an earlier push is never mistaken for this one's.

The push is published retained with QoS 1: a gateway that is offline (or underground with its link down)
receives it when it next connects. Once a final outcome arrives the retained copy is cleared, so a gateway
whose state directory was wiped does not apply an old push again.

A status message comes from the broker, where anyone allowed to publish on the status topic may have put
anything: :func:`parse_status` checks the type and range of every field it keeps and drops the rest, so a
hostile status is ignored (or shown trimmed), never a crash of ``mine-backend config push``.
"""

from __future__ import annotations

__all__ = ["FINAL_STATES", "MAX_STATUS_BYTES", "STATES", "parse_status", "push_and_wait"]

import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiomqtt

from agent.core.cancellation import timeout
from agent.core.errors import RemoteConfigError
from agent.protocol.mqtt import BrokerAddress, BrokerSettings, TlsFiles, create_client

FINAL_STATES = frozenset({"rejected", "applied", "rolled_back"})
STATES = FINAL_STATES | {"received", "kept"}
#: a status is a few hundred bytes; one with every problem of a large configuration a few tens of KiB
MAX_STATUS_BYTES = 256 * 1024
_MAX_REASONS = 1000
_MAX_REASON_CHARS = 2000
_MAX_ID_CHARS = 128
_MAX_INT = 2**63 - 1


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
                    status = parse_status(message.payload)
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


def parse_status(payload: object) -> dict[str, Any] | None:
    """The status in ``payload`` with every known field type- and range-checked (unknown fields dropped), or
    None when it is not a status at all (not JSON, not an object, no valid ``state`` and ``push``)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_STATUS_BYTES:
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    state, push = data.get("state"), data.get("push")
    if not isinstance(state, str) or state not in STATES or _ident(push) is None:
        return None
    reasons = data.get("reasons")
    return {
        "gateway": _ident(data.get("gateway")),
        "source": _ident(data.get("source")),
        "version": _whole(data.get("version")),
        "push": push,
        "kid": _ident(data.get("kid")),
        "state": state,
        "reasons": [_trim(r) for r in reasons[:_MAX_REASONS] if isinstance(r, str)] if isinstance(reasons, list)
        else [],
        "received_ms": _whole(data.get("received_ms")),
        "ts": _whole(data.get("ts")),
        "running_version": _whole(data.get("running_version")),
        "changed": _changed(data.get("changed")),
        "repeat": data.get("repeat") is True,
    }


def _ident(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS else None


def _whole(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_INT:
        return value
    return None


def _trim(text: str) -> str:
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS - 3] + "..."


def _changed(value: object) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        return {}
    return {key: [_trim(p) for p in parts[:_MAX_REASONS] if isinstance(p, str)]
            for key, parts in value.items() if key in ("started", "stopped", "restarted") and isinstance(parts, list)}
