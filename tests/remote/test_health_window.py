"""The health window as a scenario table on a fake clock: when a change is declared applied or rolled back.

The agent here is a stand-in with the real Agent's surface that the configuration service uses (config,
clock, drivers with DeviceStats, uplink, apply); everything else (validation, staging, state files, the
rollback call) is the real code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.core.clock import FakeClock
from agent.remote.service import ConfigService
from agent.runtime import ApplyResult
from config.loader import load_config
from config.schema import AgentConfig
from drivers import DeviceStats
from tests.e2e.harness import Gateway, modbus_device

WINDOW_S = 4.0


class StandInAgent:
    def __init__(self, config: AgentConfig, clock: FakeClock) -> None:
        self.config = config
        self.clock = clock
        self.drivers: dict[str, SimpleNamespace] = {}
        self.uplink = None
        self.applied: list[AgentConfig] = []
        self.first_apply = asyncio.Event()

    async def apply(self, new: AgentConfig, *, assume_running: AgentConfig | None = None) -> ApplyResult:
        old = assume_running or self.config
        result = ApplyResult()
        for name in sorted(old.devices.keys() - new.devices.keys()):
            self.drivers.pop(name, None)
            result.stopped.append(f"device:{name}")
        for name in sorted(new.devices.keys() - old.devices.keys()):
            self.drivers[name] = SimpleNamespace(stats=DeviceStats())
            result.started.append(f"device:{name}")
        self.config = new
        self.applied.append(new)
        self.first_apply.set()
        return result


def _configs(tmp_path: Path) -> tuple[Gateway, str, str]:
    gw = Gateway(tmp_path)
    remote = f'[remote_config]\ntrust_file = "{gw.trust_file}"\nhealth_window_s = {WINDOW_S}\n\n'
    gw.write_config(mqtt_port=1883, devices=remote + modbus_device("plc1", 5020, [("a", 0, "uint16")]))
    before = gw.config_path.read_text()
    gw.write_config(mqtt_port=1883, devices=remote + modbus_device("plc1", 5020, [("a", 0, "uint16")])
                    + "\n" + modbus_device("plc2", 5021, [("b", 0, "uint16")]))
    return gw, before, gw.config_path.read_text()


# (what plc2 does: (time it connects, good samples from then on) or None, outcome, time of the outcome)
SCENARIOS = {
    "healthy at 1 s: applied then": ((1.0, True), "applied", 1.0),
    "healthy just before the end": ((3.9, True), "applied", 3.9),
    "healthy only after the window": ((4.5, True), "rolled_back", WINDOW_S),
    "connected but only bad values": ((0.5, False), "rolled_back", WINDOW_S),
    "never connects": (None, "rolled_back", WINDOW_S),
}


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
async def test_health_window_scenario(tmp_path: Path, name: str) -> None:
    """A started device decides the outcome by what it achieves within the window, on the clock."""
    plc2, state, at = SCENARIOS[name]
    gw, before, after = _configs(tmp_path)
    clock = FakeClock()
    gw.config_path.write_text(before)
    agent = StandInAgent(load_config(gw.config_path), clock)
    gw.config_path.write_text(after)
    service = ConfigService(agent, gw.config_path)  # type: ignore[arg-type]

    task = asyncio.create_task(service.reload_local())
    await asyncio.wait_for(agent.first_apply.wait(), 30)
    t0 = clock.monotonic()
    decided_at = None
    while not task.done() and clock.monotonic() - t0 < 10:
        now = clock.monotonic() - t0
        driver = agent.drivers.get("plc2")
        if plc2 is not None and driver is not None and now >= plc2[0] - 1e-9:
            driver.stats.connected = True
            driver.stats.samples += 1
            driver.stats.bad_samples += 0 if plc2[1] else 1
        await clock.advance(0.05)
        await asyncio.sleep(0)
        if task.done():
            decided_at = clock.monotonic() - t0
    outcome = await asyncio.wait_for(task, 30)

    assert outcome.state == state
    assert decided_at == pytest.approx(at, abs=0.2)
    assert [sorted(c.devices) for c in agent.applied] == (
        [["plc1", "plc2"]] if state == "applied" else [["plc1", "plc2"], ["plc1"]])
