"""Session loss: a server that is absent, then restarted (a new server process state on the same port)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.core.clock import FakeClock
from agent.core.sample import Quality
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.tests.helpers import Collector, device, running
from drivers.opcua.tests.peer import FreezingProxy, PlcServer, free_port, wait_for

pytestmark = pytest.mark.asyncio


def warnings(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["log_level"] == "warning"]


async def test_absent_server_gives_bad_samples_and_one_warning() -> None:
    """While nothing listens, every attempt yields BAD samples, and the outage is logged once."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/plc/"
    cfg = device(url, [{"name": "t", "node": "ns=2;s=Plc.v0"}], reconnect_max_s=1.0)
    with capture_logs() as logs:
        async with running("d", cfg) as (driver, sink):
            await wait_for(lambda: len(sink.of("d.t")) >= 3)
            errors = driver.stats.errors

    assert all(
        s.quality is Quality.BAD and (s.reason or "").startswith("no session:") for s in sink.of("d.t")
    )
    assert errors >= 3
    assert [e["event"] for e in warnings(logs)] == ["opcua_connect_failed"]


@pytest.mark.slow
async def test_server_restart_recovers_and_flags_the_outage(tmp_path: Path) -> None:
    """A restarted server (same port, fresh state) is found again: the outage is BAD, fresh data GOOD."""
    port = free_port()
    first = PlcServer(port, tmp_path / "pki", n_vars=2)
    await first.start()
    cfg = device(first.url, [{"name": "t", "node": "ns=2;s=Plc.v1"}], publishing_interval_s=0.1)
    with capture_logs() as logs:
        async with running("d", cfg) as (driver, sink):
            await wait_for(lambda: sink.has("d.t", 1.0, Quality.GOOD))
            await first.stop()
            await wait_for(lambda: sink.has("d.t", quality=Quality.BAD))
            second = PlcServer(port, tmp_path / "pki", n_vars=2)
            await second.start()
            try:
                await second.write("v1", 77.0)
                await wait_for(lambda: sink.has("d.t", 77.0, Quality.GOOD), deadline_s=40)
            finally:
                await second.stop()
            stats = driver.stats

    samples = sink.of("d.t")
    first_bad = next(i for i, s in enumerate(samples) if s.quality is Quality.BAD)
    fresh = next(s for s in samples if s.value == 77.0)
    assert samples[first_bad].reason is not None
    assert samples[first_bad].reason.startswith("session lost:")
    assert fresh.ts_ms >= samples[first_bad].ts_ms
    assert (stats.outages, stats.reconnects) == (1, 1)
    assert [e["event"] for e in warnings(logs)] == ["opcua_session_lost"]
    assert any(e["event"] == "opcua_session_restored" for e in logs)


@pytest.mark.slow
async def test_silent_link_loss_is_detected_by_the_watchdog_and_recovered(tmp_path: Path) -> None:
    """A link that goes silent without closing is noticed by the session probe, marked BAD, then recovered."""
    server = PlcServer(free_port(), tmp_path / "pki", n_vars=2)
    await server.start()
    proxy = FreezingProxy(server.port)
    await proxy.start()
    url = f"opc.tcp://127.0.0.1:{proxy.port}/plc/"
    cfg = device(url, [{"name": "t", "node": "ns=2;s=Plc.v1"}], publishing_interval_s=0.1, timeout_s=2.0)
    try:
        async with running("d", cfg) as (driver, sink):
            await wait_for(lambda: sink.has("d.t", 1.0, Quality.GOOD))
            proxy.freeze()
            await wait_for(lambda: sink.has("d.t", quality=Quality.BAD), deadline_s=30)
            proxy.thaw()
            await server.write("v1", 55.0)
            await wait_for(lambda: sink.has("d.t", 55.0, Quality.GOOD), deadline_s=40)
            reconnects = driver.stats.reconnects
    finally:
        await proxy.stop()
        await server.stop()

    assert reconnects == 1


# (advance the clock by s, attempts made by then): backoff 0.5 s doubling, jitter shortens by <= 20 %.
BACKOFF_SCENARIO = [(0.0, 1), (0.5, 2), (1.0, 3), (2.0, 4), (4.0, 5), (8.0, 6), (10.0, 7), (10.0, 8)]


async def test_reconnect_attempts_follow_the_backoff_on_the_injected_clock() -> None:
    """Attempts come 0.5, 1, 2 ... s apart up to reconnect_max_s, each one BAD sample, one warning."""
    url = f"opc.tcp://127.0.0.1:{free_port()}/plc/"
    cfg = device(url, [{"name": "t", "node": "ns=2;s=Plc.v0"}], reconnect_max_s=10.0)
    clock = FakeClock()
    sink = Collector()
    driver = OpcUaDriver("d", cfg, sink, clock=clock)
    seen: list[tuple[int, int]] = []
    with capture_logs() as logs:
        task = asyncio.create_task(driver.run())
        try:
            for advance, attempts in BACKOFF_SCENARIO:
                await clock.advance(advance)
                await wait_for(lambda n=attempts: len(sink.samples) >= n)  # a refused connect is real I/O
                seen.append((attempts, len(sink.samples)))
            await asyncio.sleep(0.3)  # real time passes, the fake clock does not: no extra attempt
            seen.append((len(BACKOFF_SCENARIO), len(sink.samples)))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert seen == [(n, n) for _, n in BACKOFF_SCENARIO] + [(8, 8)]
    # Stamped on the injected clock, during the last advance (10 s): when exactly depends on how many loop
    # iterations a refused connect takes, which differs between Python versions.
    assert int((clock.time() - 10.0) * 1000) <= sink.samples[-1].ts_ms <= int(clock.time() * 1000)
    assert [e["event"] for e in warnings(logs)] == ["opcua_connect_failed"]
