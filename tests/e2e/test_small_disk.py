"""The measured failure, reproduced with real processes: an agent whose state directory is a 20 MiB file system,
with the default limits (4 GiB cap, 64 MiB free-disk watermark). It used to evict every batch the moment it
was written, gap batches included, so the backend saw silence; now it clamps the limits, says so, and
delivers."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from agent.demo.localbroker import Mosquitto
from agent.demo.simulator import SimulatedPlc
from tests.e2e.harness import Gateway, Process, agent_process, log_events, modbus_device, receiver_report, wait_until
from tests.e2e.test_spine import TAGS, plc, receiver  # noqa: F401 - fixtures
from tests.peers.tmpfs import tmpfs

pytestmark = pytest.mark.slow


@pytest.fixture
def small_state(receiver: tuple[Gateway, Process]) -> Iterator[Gateway]:  # noqa: F811 - fixture
    """The gateway's state directory on a fresh 20 MiB tmpfs (root only; skipped with the reason otherwise)."""
    gw, _ = receiver
    with tmpfs(gw.state, 20):
        yield gw


def test_default_limits_on_a_20_mib_state_directory_are_clamped_and_batches_arrive(
    broker: Mosquitto, plc: SimulatedPlc, small_state: Gateway  # noqa: F811 - fixture
) -> None:
    gw = small_state
    gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", plc.port, TAGS), max_bytes="4 GiB")
    agent = agent_process(gw)
    agent.start()
    try:
        wait_until(lambda: receiver_report(gw.root)["gateways"].get(gw.id, {}).get("batches", 0) >= 10, 60,
                   "batches to reach the receiver", interval=0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.health_port}/health", timeout=10) as resp:
            health = json.load(resp)
    finally:
        agent.terminate()

    (clamped,) = log_events(gw.root / "agent.log", "buffer_limits_clamped")
    assert clamped["min_free_bytes"] == 10 << 20
    assert clamped["max_bytes"] == (20 << 20) - (10 << 20) - (4 << 20)
    assert any("buffer.min_free_bytes" in r for r in health["reasons"])
    assert health["buffer"]["dropped_batches"] == 0
    r = receiver_report(gw.root)["gateways"][gw.id]
    assert (r["missing"], r["declared_gaps"]) == ([], [])
