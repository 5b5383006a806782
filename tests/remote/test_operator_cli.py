"""The operator's commands: 'mine-backend config keys init' and 'mine-backend config push', with their exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.demo.localbroker import Mosquitto
from agent.protocol.config_status import sign_status
from agent.protocol.signing import BatchSigner, TrustStore, load_signer
from backend.operator import push_and_wait
from backend.receiver import BrokerAddress
from tests.e2e.harness import env
from tests.remote.conftest import RemoteGateway


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True, text=True, env=env(),
                          timeout=timeout, check=False)


def _push(rg: RemoteGateway, file: Path, *extra: str, verify: bool = True) -> subprocess.CompletedProcess[str]:
    key = ("--gateway-key", str(rg.gw.keys / "gateway.pub")) if verify else ()
    return _cli("config", "push", "--gateway", rg.gw.id, "--key", str(rg.gw.root / "operator" / "operator.key"),
                "--broker", rg.broker.url, *key, *extra, str(file))


def test_keys_init_makes_an_operator_key_pair(tmp_path: Path) -> None:
    """'config keys init DIR' writes operator.key (0600) and operator.pub, and prints the public line."""
    out = _cli("config", "keys", "init", str(tmp_path / "k"))

    assert out.returncode == 0, out.stderr
    signer = load_signer(tmp_path / "k" / "operator.key")
    assert (tmp_path / "k" / "operator.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k" / "operator.pub").read_text().strip() == signer.public_text
    assert signer.public_text in out.stdout


def test_push_prints_each_status_and_exits_0_when_applied(remote_gw: RemoteGateway, tmp_path: Path) -> None:
    """A good push prints 'received' then 'applied' as JSON lines and exits 0."""
    rg = remote_gw
    file = tmp_path / "new.toml"
    file.write_text(rg.toml(pipeline_extra="batch_max_rows = 777"))
    rg.toml()

    out = _push(rg, file, "--version", "5")

    assert out.returncode == 0, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(s["state"], s["verified"]) for s in lines] == [("received", True), ("applied", True)]
    assert _retained_push(rg) is None


def test_push_without_the_gateway_key_is_unverified_and_stays_retained(remote_gw: RemoteGateway,
                                                                       tmp_path: Path) -> None:
    """Without --gateway-key the tool cannot tell the gateway's outcome from a forgery: it prints it marked
    unverified, exits 4, and leaves the push retained (clearing it on a forged word would starve an offline
    gateway)."""
    rg = remote_gw
    file = tmp_path / "new.toml"
    file.write_text(rg.toml(pipeline_extra="batch_max_rows = 778"))
    rg.toml()

    out = _push(rg, file, "--version", "6", verify=False)

    assert out.returncode == 4, out.stdout + out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(s["state"], s["verified"]) for s in lines] == [("received", False), ("applied", False)]
    assert "NOT verified" in out.stderr
    assert _retained_push(rg) is not None


def _retained_push(rg: RemoteGateway) -> bytes | None:
    """What a gateway connecting now would receive on its config topic."""
    return asyncio.run(_retained(rg.broker, f"mine/{rg.gw.id}/config"))


def test_push_exits_1_when_the_gateway_refuses(remote_gw: RemoteGateway, tmp_path: Path) -> None:
    """A push the gateway refuses (a version already tried) exits 1 and prints the reason."""
    rg = remote_gw
    file = tmp_path / "new.toml"
    file.write_text(rg.toml())
    assert _push(rg, file, "--version", "1").returncode == 0

    again = _push(rg, file, "--version", "1")

    assert again.returncode == 1
    assert json.loads(again.stdout.splitlines()[-1])["reasons"] == [
        "version 1 is not newer than 1, the highest this gateway has tried (a replayed or older push)"]


def test_push_exits_3_when_no_gateway_answers(remote_gw: RemoteGateway, tmp_path: Path) -> None:
    """A push to a gateway that never answers (here: an id nobody uses) exits 3 after --timeout."""
    rg = remote_gw
    file = tmp_path / "new.toml"
    file.write_text(rg.toml())
    key = rg.gw.root / "operator" / "operator.key"

    out = _cli("config", "push", "--gateway", "gw-absent", "--key", str(key), "--broker", rg.broker.url,
               "--timeout", "2", str(file))

    assert out.returncode == 3
    assert "no outcome within 2 s" in out.stderr


def test_push_refuses_an_invalid_file_before_sending(tmp_path: Path, broker: Mosquitto) -> None:
    """An invalid configuration is refused locally with its problems, exit 1, nothing published."""
    key_dir = tmp_path / "op"
    _cli("config", "keys", "init", str(key_dir))
    file = tmp_path / "bad.toml"
    file.write_text('[gateway]\nid = "gw-1"\n')

    out = _cli("config", "push", "--gateway", "gw-1", "--key", str(key_dir / "operator.key"), "--broker",
               broker.url, str(file))

    assert out.returncode == 1
    assert "nothing was pushed" in out.stderr
    assert "gateway: missing required key 'key_file'" in out.stderr


HOSTILE_STATUSES = [
    b'{"state": ["applied"], "push": "PUSH"}',  # an unhashable state: TypeError in the tool before
    b"[" * 50_000 + b"]" * 50_000,  # deeper than the JSON parser's recursion
    b'{"state": 7, "push": "PUSH", "version": 1e999, "reasons": {"a": 1}, "changed": [1]}',
    b'{"state": "received", "push": "PUSH", "version": -1, "reasons": {"a": 1}, "changed": [1], "ts": NaN}',
    b'{"state": "applied", "push": {"x": 1}}',
    b"\xff\xfe not json",
    b"",
]


def test_push_survives_hostile_statuses(broker: Mosquitto, tmp_path: Path) -> None:
    """Whatever someone publishes on the status topic while 'config push' waits, the tool keeps waiting and
    returns the gateway's real outcome (here published by hand, after the hostile ones), checked and trimmed."""
    push = "0123456789abcdef"
    topic = "mine/gw-h/config/status"

    async def scenario() -> dict[str, object] | None:
        waiting = asyncio.create_task(push_and_wait(BrokerAddress("127.0.0.1", broker.port, tls=False), b"x",
                                                    prefix="mine", gateway="gw-h", push=push, wait_s=30.0))
        async with aiomqtt.Client("127.0.0.1", broker.port) as attacker:
            await asyncio.sleep(1.0)  # the tool has subscribed
            for payload in HOSTILE_STATUSES:
                await attacker.publish(topic, payload.replace(b"PUSH", push.encode()), qos=1)
            final = {"state": "applied", "push": push, "version": 5, "reasons": ["ok"], "extra": "x" * 10}
            await attacker.publish(topic, json.dumps(final).encode(), qos=1)
        return await waiting

    status = asyncio.run(scenario())

    assert status is not None
    assert (status["state"], status["version"], status["reasons"], status["verified"]) == (
        "applied", 5, ["ok"], False)
    assert "extra" not in status


GATEWAY = BatchSigner(Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
STRANGER = BatchSigner(Ed25519PrivateKey.from_private_bytes(bytes([8]) * 32))


def _applied(push: str, **extra: object) -> dict[str, object]:
    return {"gateway": "gw-h", "push": push, "state": "applied", "reasons": [], "version": 1, **extra}


def _tampered(push: str) -> bytes:
    _, body, sig = msgpack.unpackb(sign_status(GATEWAY, _applied(push, state="rejected")))
    return msgpack.packb([1, body.replace(b'"rejected"', b'"applied"'), sig], use_bin_type=True)


def _other_type(push: str) -> bytes:
    body = json.dumps({**_applied(push), "type": "something-else", "alg": "ed25519", "signer": GATEWAY.kid}).encode()
    return msgpack.packb([1, body, GATEWAY.sign(body)], use_bin_type=True)


# forged "applied" statuses: none may pass for the gateway's outcome when the tool has the gateway key
FORGED_STATUSES: dict[str, Callable[[str], bytes]] = {
    "plain JSON, as before statuses were signed": lambda push: json.dumps(_applied(push)).encode(),
    "signed by another key": lambda push: sign_status(STRANGER, _applied(push)),
    "unsigned envelope": lambda push: sign_status(None, _applied(push)),
    "signature of a different status": _tampered,
    "gateway key, but not a config status": _other_type,
    "names the gateway key, signed by another": lambda push: msgpack.packb(
        [1, json.dumps({**_applied(push), "type": "config-status", "alg": "ed25519", "signer": GATEWAY.kid})
         .encode(), STRANGER.sign(b"x")], use_bin_type=True),
}


@pytest.mark.parametrize("forgery", list(FORGED_STATUSES), ids=list(FORGED_STATUSES))
def test_forged_statuses_are_ignored_with_the_gateway_key(broker: Mosquitto, forgery: str) -> None:
    """With the gateway key, a forged final status does not end the wait and does not clear the retained push;
    the gateway's own signed outcome then does both."""
    push = "0123456789abcdef"
    key = TrustStore({"gw": GATEWAY.public_raw})

    async def scenario() -> tuple[dict[str, Any] | None, bool, dict[str, Any] | None, bool]:
        address = BrokerAddress("127.0.0.1", broker.port, tls=False)
        forged = asyncio.create_task(push_and_wait(address, b"push-1", prefix="mine", gateway="gw-h", push=push,
                                                   wait_s=3.0, gateway_key=key))
        async with aiomqtt.Client("127.0.0.1", broker.port) as attacker:
            await asyncio.sleep(1.0)  # the tool has subscribed
            await attacker.publish("mine/gw-h/config/status", FORGED_STATUSES[forgery](push), qos=1)
            first = await forged
            kept = await _retained(broker, "mine/gw-h/config") == b"push-1"
            genuine = asyncio.create_task(push_and_wait(address, b"push-1", prefix="mine", gateway="gw-h",
                                                        push=push, wait_s=30.0, gateway_key=key))
            await asyncio.sleep(1.0)
            await attacker.publish("mine/gw-h/config/status", sign_status(GATEWAY, _applied(push)), qos=1)
            second = await genuine
            cleared = await _retained(broker, "mine/gw-h/config") is None
        return first, kept, second, cleared

    first, kept, second, cleared = asyncio.run(scenario())

    assert first is None
    assert kept, "a forged status cleared the retained push"
    assert second is not None
    assert (second["state"], second["verified"]) == ("applied", True)
    assert cleared


def test_an_unverified_outcome_never_clears_the_push(broker: Mosquitto) -> None:
    """Without the gateway key, even a correctly signed final status is only shown: the push stays retained."""
    push = "0123456789abcdef"

    async def scenario() -> tuple[dict[str, Any] | None, bytes | None]:
        waiting = asyncio.create_task(push_and_wait(BrokerAddress("127.0.0.1", broker.port, tls=False), b"push-2",
                                                    prefix="mine", gateway="gw-h", push=push, wait_s=30.0))
        async with aiomqtt.Client("127.0.0.1", broker.port) as gateway:
            await asyncio.sleep(1.0)
            await gateway.publish("mine/gw-h/config/status", sign_status(GATEWAY, _applied(push)), qos=1)
        final = await waiting
        return final, await _retained(broker, "mine/gw-h/config")

    final, retained = asyncio.run(scenario())

    assert final is not None
    assert (final["state"], final["verified"]) == ("applied", False)
    assert retained == b"push-2"


async def _retained(broker: Mosquitto, topic: str) -> bytes | None:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(topic, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                async for message in client.messages:
                    return bytes(message.payload) if message.payload else None  # type: ignore[arg-type]
    return None
