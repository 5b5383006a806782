"""The operator's commands: 'mine-backend config keys init' and 'mine-backend config push', with their exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.demo.localbroker import Mosquitto
from agent.protocol.signing import load_signer
from tests.e2e.harness import env
from tests.remote.conftest import RemoteGateway


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], capture_output=True, text=True, env=env(),
                          timeout=timeout, check=False)


def _push(rg: RemoteGateway, file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli("config", "push", "--gateway", rg.gw.id, "--key", str(rg.gw.root / "operator" / "operator.key"),
                "--broker", rg.broker.url, *extra, str(file))


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
    assert [json.loads(line)["state"] for line in out.stdout.splitlines()] == ["received", "applied"]


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
    import asyncio

    import aiomqtt

    from backend.operator import push_and_wait
    from backend.receiver import BrokerAddress

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
    assert (status["state"], status["version"], status["reasons"]) == ("applied", 5, ["ok"])
    assert "extra" not in status
