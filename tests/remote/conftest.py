"""Remote configuration against real peers: Mosquitto, simulated PLCs, the agent as a process, the operator's
push through the same code as ``mine-backend config push``."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.demo.localbroker import Mosquitto, free_port
from agent.demo.simulator import SimulatedPlc
from agent.protocol.push import push_id, sign_push
from agent.protocol.signing import BatchSigner, TrustStore, generate_key
from backend.operator import push_and_wait
from backend.receiver import BrokerAddress
from tests.e2e.harness import Gateway, LoopThread, Process, agent_process, log_events, modbus_device, wait_until

TAGS = [("a", 0, "uint16"), ("b", 1, "int16")]
HEALTH_WINDOW_S = 4.0  # short for tests; long enough for a loaded machine to connect a local PLC


class RemoteGateway:
    """A gateway with remote configuration enabled, its operator key, and the PLCs it may be pointed at."""

    def __init__(self, root: Path, broker: Mosquitto, plc_ports: list[int]) -> None:
        self.gw = Gateway(root)
        self.broker = broker
        self.plc_ports = plc_ports
        self.operator: BatchSigner = generate_key(root / "operator", "operator")
        self.trust_file = root / "operator.pub"
        self.trust_file.write_text(self.operator.public_text + "\n")
        self._trust_key = True  # name the trust file in [remote_config]
        self.agent: Process | None = None
        self.pushes = 0

    # -- configuration text --------------------------------------------------------------------------------

    def use_default_trust_file(self) -> None:
        """Move the operator trust list to where ``trust_file`` defaults to, and leave the key out."""
        default = self.gw.state / "operator.trust"
        default.parent.mkdir(parents=True, exist_ok=True)
        default.write_bytes(self.trust_file.read_bytes())
        self.trust_file, self._trust_key = default, False

    def toml(self, *, devices: dict[str, int] | None = None, mqtt_port: int | None = None,
             remote_extra: str = "", pipeline_extra: str = "", remote: bool = True,
             buffer_extra: str = "") -> str:
        """The gateway's TOML: ``devices`` maps a device name to a PLC port."""
        devices = {"plc1": self.plc_ports[0]} if devices is None else devices
        trust_key = f'trust_file = "{self.trust_file}"' if self._trust_key else ""
        remote_section = f"""
[remote_config]
{trust_key}
health_window_s = {HEALTH_WINDOW_S}
{remote_extra}
""" if remote else ""
        text = "\n".join(modbus_device(name, port, TAGS) for name, port in devices.items())
        self.gw.write_config(mqtt_port=mqtt_port or self.broker.port, devices=remote_section + text,
                             pipeline_extra=pipeline_extra, buffer_extra=buffer_extra)
        return self.gw.config_path.read_text()

    def write_local(self, text: str) -> None:
        self.gw.config_path.write_text(text)

    # -- the agent -----------------------------------------------------------------------------------------

    def start(self, log_name: str = "agent.log") -> Process:
        self.agent = agent_process(self.gw, log_name)
        self.agent.start()
        wait_until(lambda: self._alive() and self.pid_file.exists(), 60,
                   "the agent to start its configuration service")
        wait_until(lambda: self._alive() and self.channel_up(), 30, "the config channel to connect")
        return self.agent

    def _alive(self) -> bool:
        """True while the agent runs; fails at once, with its log, if it has exited."""
        assert self.agent is not None
        if not self.agent.running():
            raise AssertionError(f"the agent exited:\n{self.agent.tail()}")
        return True

    def stop(self) -> None:
        if self.agent is not None and self.agent.running():
            self.agent.terminate()

    @property
    def pid_file(self) -> Path:
        return self.gw.state / "agent.pid"

    def channel_up(self) -> bool:
        """The agent's config client has connected and subscribed."""
        assert self.agent is not None
        return bool(log_events(self.agent.log, "config_channel_connected"))

    # -- pushes --------------------------------------------------------------------------------------------

    def sign(self, toml: str, *, version: int, gateway: str | None = None, signer: BatchSigner | None = None,
             trust: list[str] | None = None, issued_ms: int | None = None) -> bytes:
        """A signed push; issued now (made unique per push, so equal texts give distinct pushes) unless given."""
        issued = int(time.time() * 1000) + self._bump() if issued_ms is None else issued_ms
        return sign_push(signer or self.operator, gateway=gateway or self.gw.id, version=version, toml=toml,
                         issued_ms=issued, trust=trust)

    @property
    def gateway_key(self) -> TrustStore:
        """The gateway's public key, which signs its statuses."""
        return TrustStore({"gw": self.gw.signer.public_raw})

    def _bump(self) -> int:
        self.pushes += 1
        return self.pushes

    def push(self, payload: bytes, wait_s: float = 60.0) -> dict[str, Any]:
        """Publish ``payload`` and return the gateway's final status for it."""
        statuses: list[dict[str, Any]] = []
        final = asyncio.run(push_and_wait(BrokerAddress("127.0.0.1", self.broker.port, tls=False), payload,
                                          prefix="mine", gateway=self.gw.id, push=push_id(payload),
                                          wait_s=wait_s, on_status=statuses.append,
                                          gateway_key=self.gateway_key))
        assert final is not None, f"no outcome for the push:\n{self.agent.tail() if self.agent else ''}"
        final["_all"] = [s["state"] for s in statuses]
        return final

    # -- what is on disk -----------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        path = self.gw.state / "config" / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def history_file(self) -> Path:
        return self.gw.state / "config" / "history.json"

    def history(self) -> list[dict[str, Any]]:
        path = self.history_file
        return json.loads(path.read_text()) if path.exists() else []

    def good_text(self) -> str:
        return (self.gw.state / "config" / "good.toml").read_text()

    def buffer_head(self) -> int:
        with sqlite3.connect(f"file:{self.gw.buffer_path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute("SELECT v FROM meta WHERE k = 'head_seq'").fetchone()
        return int(row[0]) if row else 0

    def buffer_inode(self) -> int:
        return self.gw.buffer_path.stat().st_ino

    def applied_events(self) -> list[dict[str, Any]]:
        assert self.agent is not None
        return log_events(self.agent.log, "config_applied")


@pytest.fixture
def plcs(peers: LoopThread) -> Iterator[list[SimulatedPlc]]:
    """Two simulated PLCs on free loopback ports."""
    sims = [SimulatedPlc(port=free_port(), registers=8) for _ in range(2)]
    for sim in sims:
        peers.call(sim.start())
    yield sims
    for sim in sims:
        peers.call(sim.stop())


@pytest.fixture
def remote_gw(tmp_path: Path, broker: Mosquitto, plcs: list[SimulatedPlc]) -> Iterator[RemoteGateway]:
    """A running agent with one device (plc1) and remote configuration enabled."""
    rg = RemoteGateway(tmp_path, broker, [p.port for p in plcs])
    rg.toml()
    rg.start()
    try:
        yield rg
    finally:
        rg.stop()
