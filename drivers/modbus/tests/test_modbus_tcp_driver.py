"""The Modbus TCP driver against a real pymodbus server on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest
import structlog

from agent.core.sample import Quality
from drivers import create_driver
from drivers.modbus import ModbusDriver
from drivers.modbus.tests.harness import Collector, all_bad, all_good, tcp_device
from drivers.modbus.tests.server import ModbusTestServer, float32_registers


@contextlib.asynccontextmanager
async def running(driver: ModbusDriver) -> AsyncIterator[ModbusDriver]:
    task = asyncio.create_task(driver.run(), name=f"modbus[{driver.name}].run")
    try:
        yield driver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def server() -> AsyncIterator[ModbusTestServer]:
    async with ModbusTestServer(registers=300) as s:
        yield s


async def test_values_decode_as_served(server: ModbusTestServer) -> None:
    """Each data type, in holding and input registers and coils, reads back as the server holds it."""
    await server.set_registers(0, [65535, 0xFFFE])
    await server.set_registers(2, list(struct.unpack(">2H", struct.pack(">I", 4_000_000_000))))
    await server.set_registers(4, list(struct.unpack(">2H", struct.pack(">i", -123_456_789))))
    await server.set_registers(6, float32_registers(-2.25))
    await server.set_registers(10, [1234], table="input")
    await server.set_bits(3, [True])
    tags = [
        {"name": "u16", "address": 0, "type": "uint16"},
        {"name": "i16", "address": 1, "type": "int16"},
        {"name": "u32", "address": 2, "type": "uint32"},
        {"name": "i32", "address": 4, "type": "int32"},
        {"name": "f32", "address": 6, "type": "float32"},
        {"name": "in", "address": 10, "table": "input"},
        {"name": "coil", "address": 3, "table": "coil"},
    ]
    sink = Collector()
    driver = create_driver("plc1", tcp_device(server.port, tags), sink)
    async with running(driver):
        poll = await sink.wait_for(all_good)

    values = {s.tag: s.value for s in poll}
    assert values == {
        "plc1.u16": 65535,
        "plc1.i16": -2,
        "plc1.u32": 4_000_000_000,
        "plc1.i32": -123_456_789,
        "plc1.f32": -2.25,
        "plc1.in": 1234,
        "plc1.coil": True,
    }


async def test_scale_and_offset_apply(server: ModbusTestServer) -> None:
    """A tag's value is raw * scale + offset."""
    await server.set_registers(20, [250])
    sink = Collector()
    tags = [{"name": "temp", "address": 20, "type": "int16", "scale": 0.1, "offset": -5.0}]
    async with running(create_driver("plc1", tcp_device(server.port, tags), sink)):  # type: ignore[arg-type]
        poll = await sink.wait_for(all_good)

    assert poll[0].value == pytest.approx(20.0)


async def test_server_down_at_start_is_connected_when_it_comes_up() -> None:
    """A PLC that is off when the agent starts yields bad samples, then is found without a restart."""
    server = ModbusTestServer(registers=10)
    sink = Collector()
    device = tcp_device(server.port, [{"name": "a", "address": 0}], reconnect_max_s=0.2)
    driver = create_driver("plc1", device, sink)
    async with running(driver):  # type: ignore[arg-type]
        down = await sink.wait_for(all_bad)
        await server.start()
        try:
            await server.set_registers(0, [42])
            up = await sink.wait_for(lambda p: all_good(p) and p[0].value == 42)
        finally:
            await server.stop()

    assert down[0].reason is not None
    assert down[0].reason.startswith("not connected: ")
    assert up[0].quality == Quality.GOOD
    assert driver.stats.skipped_polls >= 0


async def test_server_restart_mid_run_gives_bad_then_good_samples(server: ModbusTestServer) -> None:
    """A PLC that powers off and back on yields bad samples meanwhile and good ones after, with no restart."""
    await server.set_registers(0, [7])
    sink = Collector()
    device = tcp_device(server.port, [{"name": "a", "address": 0}], reconnect_max_s=0.2, timeout_s=0.5)
    driver = create_driver("plc1", device, sink)
    with structlog.testing.capture_logs() as logs:
        async with running(driver):  # type: ignore[arg-type]
            await sink.wait_for(all_good)
            await server.stop()
            await sink.wait_for(all_bad)
            await sink.wait_for(all_bad)
            await server.start()
            await sink.wait_for(all_good)

    warnings = [e for e in logs if e["log_level"] == "warning"]
    recoveries = [e for e in logs if e["event"] == "modbus_device_recovered"]
    assert len(warnings) == 1
    assert warnings[0]["device"] == "plc1"
    assert len(recoveries) == 1
    assert driver.stats.bad_samples >= 2


async def test_overrunning_polls_never_overlap(server: ModbusTestServer) -> None:
    """When a poll takes longer than the interval, the next ticks are skipped and counted, never run
    concurrently."""
    server.delay_s = 0.25
    sink = Collector()
    device = tcp_device(server.port, [{"name": "a", "address": 0}], poll_interval_s=0.05, timeout_s=2.0)
    driver = create_driver("plc1", device, sink)
    async with running(driver):  # type: ignore[arg-type]
        for _ in range(3):
            await sink.wait_for(all_good)

    assert server.max_active == 1
    assert driver.stats.skipped_polls >= 3
    assert len(asyncio.all_tasks()) < 10


async def test_exception_response_becomes_bad_sample_naming_it(server: ModbusTestServer) -> None:
    """A Modbus exception response is a bad sample whose reason names the exception."""
    server.exception = 6
    sink = Collector()
    async with running(create_driver("plc1", tcp_device(server.port, [{"name": "a", "address": 0}]), sink)):  # type: ignore[arg-type]
        poll = await sink.wait_for(all_bad)

    assert poll[0].reason == "modbus exception 6 (server device busy)"
