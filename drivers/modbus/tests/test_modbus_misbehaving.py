"""A Modbus TCP device that answers wrongly: wrong transaction or unit id, short frames, dropped connections.

The device is a few lines of raw asyncio on a loopback port so each fault is exact; it answers FC3 with
register i = i.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from drivers import create_driver
from drivers.modbus import ModbusDriver
from drivers.modbus.tests.harness import Collector, all_bad, all_good, tcp_device
from drivers.modbus.tests.server import free_port


class MisbehavingDevice:
    """Answers read-holding-registers; ``fault`` selects how it misbehaves (None = correctly)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.fault: str | None = None
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                tid, _, length, unit = struct.unpack(">HHHB", await reader.readexactly(7))
                function, address, count = struct.unpack(">BHH", await reader.readexactly(length - 1))
                data = struct.pack(f">{count}H", *range(address, address + count))
                fault = self.fault
                if fault == "close":
                    break
                if fault == "tid":
                    tid = (tid + 1) & 0xFFFF or 1
                elif fault == "unit":
                    unit = (unit + 1) & 0xFF
                elif fault == "short":
                    data = data[:-2]
                byte_count = len(data)
                if fault == "odd":  # one stray byte after the registers, counted
                    data += b"\xee"
                    byte_count += 1
                elif fault == "overcount":  # claims more bytes than the frame holds
                    byte_count += 2
                body = bytes([function, byte_count]) + data
                writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
                await writer.drain()
        writer.close()

    async def __aenter__(self) -> MisbehavingDevice:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)


@contextlib.asynccontextmanager
async def polling(
    device: MisbehavingDevice, sink: Collector, count: int = 3, table: str = "holding"
) -> AsyncIterator[ModbusDriver]:
    tags = [{"name": f"r{i}", "table": table, "address": 10 + i} for i in range(count)]
    config = tcp_device(
        device.port, tags, timeout_s=0.2, retries=0, reconnect_max_s=0.2, failures_before_backoff=50
    )
    driver = create_driver("plc", config, sink)
    task = asyncio.create_task(driver.run(), name="modbus[plc].run")
    try:
        yield driver  # type: ignore[misc]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("fault", ["tid", "unit"])
async def test_reply_with_wrong_id_is_no_answer_then_recovers(fault: str) -> None:
    """A reply with another transaction or unit id is never taken as the answer: bad samples, then good."""
    sink = Collector()
    async with MisbehavingDevice() as device, polling(device, sink):
        await sink.wait_for(all_good)
        device.fault = fault
        bad = await sink.wait_for(all_bad)
        device.fault = None
        good = await sink.wait_for(all_good)

    assert bad[0].reason == "no response within 0.2 s (1 attempts)"
    assert [s.value for s in good] == [10, 11, 12]


@pytest.mark.parametrize("table", ["holding", "input"])
async def test_registers_are_decoded_from_the_bytes_as_sent(table: str) -> None:
    """Function codes 3 and 4 both arrive as register bytes (the link's WordsResponse) and decode alike."""
    sink = Collector()
    async with MisbehavingDevice() as device, polling(device, sink, table=table):
        good = await sink.wait_for(all_good)

    assert [s.value for s in good] == [10, 11, 12]


async def test_odd_byte_count_ignores_the_stray_byte() -> None:
    """A byte count one more than the registers (a stray byte after them): the registers are read, as
    pymodbus itself reads such a reply."""
    sink = Collector()
    async with MisbehavingDevice() as device, polling(device, sink):
        device.fault = "odd"
        await sink.wait_for(all_good)  # anything polled before the fault took effect
        good = await sink.wait_for(all_good)

    assert [s.value for s in good] == [10, 11, 12]


async def test_byte_count_past_the_frame_is_no_answer() -> None:
    """A reply whose byte count claims more than the frame holds is dropped, never decoded: bad samples."""
    sink = Collector()
    async with MisbehavingDevice() as device, polling(device, sink):
        await sink.wait_for(all_good)
        device.fault = "overcount"
        bad = await sink.wait_for(all_bad)

    assert bad[0].reason == "no response within 0.2 s (1 attempts)"


async def test_short_response_is_bad_not_misaligned() -> None:
    """A well-formed reply with fewer registers than asked makes every tag of that request bad."""
    sink = Collector()
    async with MisbehavingDevice() as device, polling(device, sink):
        device.fault = "short"
        bad = await sink.wait_for(all_bad)

    assert {s.reason for s in bad} == {"short response: 2 of 3 registers"}


async def test_device_dropping_the_connection_is_reconnected() -> None:
    """A device that closes the connection mid-request yields bad samples, then is used again."""
    sink = Collector()
    async with MisbehavingDevice() as device, polling(device, sink) as driver:
        await sink.wait_for(all_good)
        device.fault = "close"
        bad = await sink.wait_for(all_bad)
        device.fault = None
        await sink.wait_for(all_good)
        connected = driver.stats.connected

    assert bad[0].reason is not None
    assert bad[0].reason.startswith(("not connected", "no response"))
    assert connected
