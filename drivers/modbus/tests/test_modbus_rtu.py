"""Modbus RTU on a simulated RS-485 line (pty pair with real line timing): shared bus, faults, byte orders."""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.core.sample import Quality
from drivers import create_driver
from drivers.modbus import ModbusDriver, ModbusRtuDevice, ModbusTag
from drivers.modbus.tests.harness import Collector, all_bad, all_good
from drivers.modbus.tests.rtu_line import RtuLine, RtuUnit
from drivers.modbus.tests.server import encode_registers


def rtu_device(line: RtuLine, unit: int, tags: list[dict[str, Any]], **settings: Any) -> ModbusRtuDevice:
    values: dict[str, Any] = {
        "protocol": "modbus-rtu",
        "serial_port": line.port,
        "baudrate": line.baudrate,
        "parity": "N",  # a pty refuses parity settings (EINVAL); the simulator models timing only
        "unit": unit,
        "poll_interval_s": 0.05,
        "timeout_s": 0.3,
        "retries": 1,
    }
    values.update(settings)
    return ModbusRtuDevice(**values, tags=[ModbusTag(**t) for t in tags])


@contextlib.asynccontextmanager
async def running(*drivers: ModbusDriver) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(d.run(), name=f"modbus[{d.name}].run") for d in drivers]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


@pytest.fixture
async def line() -> AsyncIterator[RtuLine]:
    units = {1: RtuUnit(), 2: RtuUnit()}
    async with RtuLine(units, baudrate=115200, parity="N") as rtu:
        yield rtu


async def test_two_units_share_one_serial_port(line: RtuLine) -> None:
    """Two devices on one serial port are both read over one shared line, one request at a time."""
    line.units[1].holding[0] = 111
    line.units[2].holding[0] = 222
    sink1, sink2 = Collector(), Collector()
    d1 = create_driver("m1", rtu_device(line, 1, [{"name": "a", "address": 0}]), sink1)
    d2 = create_driver("m2", rtu_device(line, 2, [{"name": "a", "address": 0}]), sink2)
    async with running(d1, d2):  # type: ignore[arg-type]
        p1 = await sink1.wait_for(all_good)
        p2 = await sink2.wait_for(all_good)
        for _ in range(3):
            await sink1.wait_for(all_good)

    assert (p1[0].value, p2[0].value) == (111, 222)
    assert line.gap_violations == 0


async def test_dead_unit_on_shared_bus_backs_off_and_does_not_stall_others(line: RtuLine) -> None:
    """A unit that never answers yields bad samples and is polled less often; its neighbour keeps polling."""
    line.units[1].holding[5] = 5
    del line.units[2]
    healthy, dead = Collector(), Collector()
    d1 = create_driver("ok", rtu_device(line, 1, [{"name": "a", "address": 5}]), healthy)
    d2 = create_driver(
        "dead",
        rtu_device(
            line, 2, [{"name": "a", "address": 0}], timeout_s=0.1, retries=0, failures_before_backoff=2
        ),
        dead,
    )
    async with running(d1, d2):  # type: ignore[arg-type]
        first = await dead.wait_for(all_bad)
        backing_off = await dead.wait_for(lambda p: all_bad(p) and "not answering" in (p[0].reason or ""))
        sent_when_backing_off = line.unanswered
        for _ in range(10):
            await healthy.wait_for(all_good)
        sent_later = line.unanswered

    assert first[0].reason == "no response within 0.1 s (1 attempts)"
    assert re.fullmatch(
        r"unit 2 not answering, retried every [0-9.]+ s \(no response within 0\.1 s \(1 attempts\)\)",
        backing_off[0].reason or "",
    )
    # Ten healthy polls took at least 0.5 s, in which an un-backed-off dead unit would have cost ~5 timeouts.
    assert sent_later - sent_when_backing_off <= 2
    assert d2.unit_backoff.backing_off


async def test_unit_that_comes_back_recovers_by_itself(line: RtuLine) -> None:
    """A unit that stops answering and comes back returns to good samples without a restart."""
    line.units[1].holding[0] = 9
    sink = Collector()
    device = rtu_device(
        line, 1, [{"name": "a", "address": 0}], timeout_s=0.1, failures_before_backoff=1, backoff_max_s=0.3
    )
    driver = create_driver("m1", device, sink)
    async with running(driver):  # type: ignore[arg-type]
        await sink.wait_for(all_good)
        line.units[1].silent = True
        await sink.wait_for(all_bad)
        await sink.wait_for(lambda p: "not answering" in (p[0].reason or ""))
        line.units[1].silent = False
        back = await sink.wait_for(all_good)

    assert back[0].value == 9


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (2, "modbus exception 2 (illegal data address)"),
        (6, "modbus exception 6 (server device busy)"),
        (10, "modbus exception 10 (gateway path unavailable)"),
        (11, "modbus exception 11 (gateway target device failed to respond)"),
    ],
)
async def test_exception_responses_are_named(line: RtuLine, code: int, reason: str) -> None:
    """Each exception response becomes a bad sample whose reason names the exception."""
    line.units[1].exception = code
    sink = Collector()
    async with running(create_driver("m1", rtu_device(line, 1, [{"name": "a", "address": 0}]), sink)):  # type: ignore[arg-type]
        poll = await sink.wait_for(all_bad)

    assert poll[0].reason == reason


async def test_garbage_on_the_line_is_recovered_by_a_retry(line: RtuLine) -> None:
    """Noise bytes before an answer cost one retry, not a bad sample, when retries >= 1."""
    line.units[1].holding[0] = 77
    sink = Collector()
    driver = create_driver(
        "m1", rtu_device(line, 1, [{"name": "a", "address": 0}], timeout_s=0.2, retries=1), sink
    )
    async with running(driver):  # type: ignore[arg-type]
        await sink.wait_for(all_good)
        line.garbage = b"\x55\x13\xff"
        await sink.wait_for(lambda p: line.garbage == b"")
        after = [await sink.wait_for(lambda p: True) for _ in range(3)]

    assert after[-1][0].value == 77
    assert driver.stats.bad_samples == 0


async def test_bad_crc_answer_becomes_bad_sample_without_retry(line: RtuLine) -> None:
    """A corrupted answer with no retry left is a bad sample (no response), and the next poll is good."""
    line.units[1].holding[0] = 5
    sink = Collector()
    driver = create_driver(
        "m1", rtu_device(line, 1, [{"name": "a", "address": 0}], timeout_s=0.15, retries=0), sink
    )
    async with running(driver):  # type: ignore[arg-type]
        await sink.wait_for(all_good)
        line.corrupt_crc = True
        bad = await sink.wait_for(all_bad)
        good = await sink.wait_for(all_good)

    assert bad[0].reason == "no response within 0.15 s (1 attempts)"
    assert good[0].value == 5


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
async def test_float_in_each_byte_order_over_rtu(line: RtuLine, order: str) -> None:
    """A float32 and a float64 served in a byte order read back exactly when the device declares it."""
    line.units[1].holding[10:12] = encode_registers(struct.pack(">f", -12.5), order)
    line.units[1].holding[20:24] = encode_registers(struct.pack(">d", 1234.5678), order)
    sink = Collector()
    tags = [{"name": "f", "address": 10, "type": "float32"}, {"name": "d", "address": 20, "type": "float64"}]
    async with running(create_driver("m1", rtu_device(line, 1, tags, order=order), sink)):  # type: ignore[arg-type]
        poll = await sink.wait_for(all_good)

    assert {s.tag: s.value for s in poll} == {"m1.f": -12.5, "m1.d": 1234.5678}


async def test_device_limit_of_16_registers_is_respected(line: RtuLine) -> None:
    """A device that serves at most 16 registers per request is read in requests of 16 or fewer."""
    line.units[1].limit = 16
    line.units[1].holding[0:40] = list(range(40))
    sink = Collector()
    tags = [{"name": f"r{i}", "address": i} for i in range(40)]
    driver = create_driver("m1", rtu_device(line, 1, tags, max_registers_per_request=16), sink)
    async with running(driver):  # type: ignore[arg-type]
        poll = await sink.wait_for(all_good)

    assert [s.value for s in poll] == list(range(40))
    assert driver.requests_per_cycle == 3  # type: ignore[attr-defined]


async def test_undefined_register_inside_a_request_leaves_only_its_tag_bad(line: RtuLine) -> None:
    """A merged request refused with "illegal address" is re-planned so only the undefined tag is bad."""
    unit = line.units[1]
    unit.holding[0:12] = list(range(100, 112))
    unit.undefined = {5, 9}
    sink = Collector()
    tags = [{"name": f"r{a}", "address": a} for a in (0, 1, 4, 5, 6, 11)]
    driver = create_driver("m1", rtu_device(line, 1, tags), sink)
    async with running(driver):  # type: ignore[arg-type]
        poll = await sink.wait_for(lambda p: len(p) == 6)
        again = await sink.wait_for(lambda p: True)

    assert {s.tag: s.value for s in poll} == {
        "m1.r0": 100,
        "m1.r1": 101,
        "m1.r4": 104,
        "m1.r5": None,
        "m1.r6": 106,
        "m1.r11": 111,
    }
    assert {s.tag: s.reason for s in again if s.quality == Quality.BAD} == {
        "m1.r5": "modbus exception 2 (illegal data address)"
    }
    assert driver.requests_per_cycle == 5  # type: ignore[attr-defined]


async def test_unplugged_serial_adapter_is_reopened(tmp_path: Path) -> None:
    """A USB serial adapter that disappears and comes back at the same path is reopened without a restart."""
    link_path = tmp_path / "ttyUSB0"
    first = RtuLine({1: RtuUnit()}, baudrate=115200, parity="N")
    await first.start()
    first.units[1].holding[0] = 1
    link_path.symlink_to(first.port)
    sink = Collector()
    device = rtu_device(
        first, 1, [{"name": "a", "address": 0}], serial_port=str(link_path), reconnect_max_s=0.2
    )
    driver = create_driver("m1", device, sink)
    second = RtuLine({1: RtuUnit()}, baudrate=115200, parity="N")
    try:
        async with running(driver):  # type: ignore[arg-type]
            await sink.wait_for(all_good)
            await first.stop()
            link_path.unlink()
            gone = await sink.wait_for(all_bad)
            await second.start()
            second.units[1].holding[0] = 2
            link_path.symlink_to(second.port)
            back = await sink.wait_for(lambda p: all_good(p) and p[0].value == 2)
    finally:
        await first.stop()
        await second.stop()

    assert gone[0].reason == f"not connected: cannot open {link_path} 115200 8N1: no such device (unplugged?)"
    assert back[0].quality == Quality.GOOD
