"""The operator's side of remote configuration: publish a signed push and wait for the gateway's outcome.

Used by ``mine-backend config push`` (and the tests and benchmark). The status topic is subscribed *before* the
push is published, so no outcome can be missed; statuses are matched to this push by its id (the gateway
echoes it), so a retained status of an earlier push is never mistaken for this one's.

The push is published retained with QoS 1: a gateway that is offline (or underground with its link down)
receives it when it next connects. Once a *verified* final outcome arrives the retained copy is cleared, so a
gateway whose state directory was wiped does not apply an old push again.

A status message comes from the broker, where anyone allowed to publish on the status topic may have put
anything. The gateway signs its statuses with its own key (agent.protocol.config_status): given that key, the
tool believes only statuses it signed; without it, every status is shown marked ``"verified": false`` and the
retained push is never cleared on its word (a forged ``applied`` would otherwise remove a push that an offline
gateway never received). :func:`parse_status` checks the type and range of every field it keeps and drops the
rest, so a hostile status is ignored (or shown trimmed), never a crash of ``mine-backend config push``.
"""

from __future__ import annotations

__all__ = ["FINAL_STATES", "MAX_STATUS_BYTES", "STATES", "parse_status", "push_and_wait", "read_status"]

import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiomqtt

from agent.core.cancellation import timeout
from agent.core.errors import RemoteConfigError
from agent.protocol.config_status import MAX_STATUS_BYTES, open_status
from agent.protocol.mqtt import BrokerAddress, BrokerSettings, TlsFiles, create_client
from agent.protocol.signing import TrustStore

FINAL_STATES = frozenset({"rejected", "applied", "rolled_back"})
STATES = FINAL_STATES | {"received", "kept"}
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
    gateway_key: TrustStore | None = None,
) -> dict[str, Any] | None:
    """Publish ``payload`` to ``<prefix>/<gateway>/config`` and return the final status for push id ``push``,
    or None if none arrived within ``wait_s`` seconds (the push then stays retained for the gateway).

    With ``gateway_key`` (the gateway's public key) only statuses signed by it count, and the retained push is
    cleared after the final one. Without it every status is returned with ``"verified": False`` and the retained
    push is left on the broker, since anyone may have written that status.

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
                    status = read_status(message.payload, key=gateway_key)
                    if status is None or status.get("push") != push:
                        continue
                    if gateway_key is not None and not status["verified"]:
                        continue  # not the gateway's: whoever wrote it, it is not this push's outcome
                    if on_status is not None:
                        on_status(status)
                    if status.get("state") in FINAL_STATES:
                        final = status
                        break
        if final is not None and final["verified"]:
            await client.publish(topic, b"", qos=1, retain=True, timeout=30.0)
    except aiomqtt.MqttError as exc:
        raise RemoteConfigError(f"lost the broker connection: {exc}") from exc
    else:
        return final
    finally:
        with contextlib.suppress(Exception):
            async with timeout(5.0):
                await client.__aexit__(None, None, None)


def read_status(payload: object, *, key: TrustStore | None) -> dict[str, Any] | None:
    """The status in a message of the status topic (agent.protocol.config_status), checked by
    :func:`parse_status`, with ``"verified"``: True only when ``key`` signed it. None when it is not a status."""
    opened = open_status(payload, key=key)
    if opened is None:
        return None
    status = _checked(opened.value)
    if status is None:
        return None
    status["verified"] = opened.verified
    return status


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
    return _checked(data)


def _checked(data: object) -> dict[str, Any] | None:
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
        "suppressed": _whole(data.get("suppressed")) or 0,
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
