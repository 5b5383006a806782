"""Several units behind one TCP connection: Modbus TCP gateways and RTU-over-TCP serial servers."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from agent.core.sample import Quality
from drivers import create_driver
from drivers.modbus import ModbusDriver, ModbusRtuTcpDevice, ModbusTag
from drivers.modbus.link import _LINKS
from drivers.modbus.tests.harness import Collector, all_bad, all_good, tcp_device
from drivers.modbus.tests.server import ModbusTestServer


def rtu_tcp_device(port: int, unit: int, tags: list[dict[str, Any]], **settings: Any) -> ModbusRtuTcpDevice:
    values: dict[str, Any] = {
        "protocol": "modbus-rtu-tcp",
        "host": "127.0.0.1",
        "port": port,
        "unit": unit,
        "poll_interval_s": 0.05,
        "timeout_s": 0.2,
        "retries": 0,
    }
    values.update(settings)
    return ModbusRtuTcpDevice(**values, tags=[ModbusTag(**t) for t in tags])


@contextlib.asynccontextmanager
async def running(*drivers: ModbusDriver) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(d.run(), name=f"modbus[{d.name}].run") for d in drivers]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


async def test_rtu_over_tcp_serves_two_units_on_one_connection() -> None:
    """Two units behind a serial server are read over one TCP connection carrying RTU frames."""
    async with ModbusTestServer(units=(1, 2), registers=20, rtu_framing=True) as server:
        await server.set_registers(3, [31], unit=1)
        await server.set_registers(3, [32], unit=2)
        s1, s2 = Collector(), Collector()
        d1 = create_driver("m1", rtu_tcp_device(server.port, 1, [{"name": "a", "address": 3}]), s1)
        d2 = create_driver("m2", rtu_tcp_device(server.port, 2, [{"name": "a", "address": 3}]), s2)
        async with running(d1, d2):  # type: ignore[arg-type]
            p1 = await s1.wait_for(all_good)
            p2 = await s2.wait_for(all_good)
            users = [link.users for link in _LINKS.values() if link.where == f"127.0.0.1:{server.port}"]

    assert (p1[0].value, p2[0].value) == (31, 32)
    assert users == [2]
    assert server.max_active == 1


async def test_silent_unit_behind_gateway_does_not_stop_its_neighbour() -> None:
    """A unit id nobody answers on a shared connection gives bad samples; the other unit stays good."""
    async with ModbusTestServer(units=(1, 9), registers=20, rtu_framing=True) as server:
        server.silent_units.add(9)
        await server.set_registers(0, [5], unit=1)
        good, dead = Collector(), Collector()
        d1 = create_driver("ok", rtu_tcp_device(server.port, 1, [{"name": "a", "address": 0}]), good)
        d2 = create_driver("gone", rtu_tcp_device(server.port, 9, [{"name": "a", "address": 0}]), dead)
        async with running(d1, d2):  # type: ignore[arg-type]
            bad = await dead.wait_for(all_bad)
            for _ in range(10):
                await good.wait_for(all_good)

    assert bad[0].reason == "no response within 0.2 s (1 attempts)"
    assert d1.stats.bad_samples == 0  # type: ignore[attr-defined]


async def test_tcp_devices_with_same_address_share_one_connection() -> None:
    """Modbus TCP devices naming one host and port (a gateway) share a connection, one request at once."""
    async with ModbusTestServer(units=(1, 2), registers=20) as server:
        server.delay_s = 0.02
        s1, s2 = Collector(), Collector()
        d1 = create_driver("m1", tcp_device(server.port, [{"name": "a", "address": 0}], unit=1), s1)
        d2 = create_driver("m2", tcp_device(server.port, [{"name": "a", "address": 0}], unit=2), s2)
        async with running(d1, d2):  # type: ignore[arg-type]
            for _ in range(3):
                await s1.wait_for(all_good)
                await s2.wait_for(all_good)

    assert server.max_active == 1


async def test_conflicting_line_settings_are_reported_as_bad_samples() -> None:
    """A second device on the same address with another protocol gets bad samples saying why, no crash."""
    async with ModbusTestServer(registers=20) as server:
        s1, s2 = Collector(), Collector()
        d1 = create_driver("tcp", tcp_device(server.port, [{"name": "a", "address": 0}]), s1)
        d2 = create_driver("rtu", rtu_tcp_device(server.port, 1, [{"name": "a", "address": 0}]), s2)
        async with running(d1, d2):  # type: ignore[arg-type]
            await s1.wait_for(all_good)
            poll = await s2.wait_for(all_bad)

    assert poll[0].quality == Quality.BAD
    assert "already used with settings" in (poll[0].reason or "")


async def test_request_delay_keeps_silence_between_units_on_one_connection() -> None:
    """With request_delay_s, consecutive requests on a shared connection are at least that far apart."""
    async with ModbusTestServer(units=(1, 2), registers=20) as server:
        s1, s2 = Collector(), Collector()
        d1 = create_driver(
            "m1", tcp_device(server.port, [{"name": "a", "address": 0}], unit=1, request_delay_s=0.05), s1
        )
        d2 = create_driver(
            "m2", tcp_device(server.port, [{"name": "a", "address": 0}], unit=2, request_delay_s=0.05), s2
        )
        async with running(d1, d2):  # type: ignore[arg-type]
            for _ in range(3):
                await s1.wait_for(all_good)
                await s2.wait_for(all_good)
        times = list(server.request_times)

    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) >= 5
    assert min(gaps) >= 0.05
