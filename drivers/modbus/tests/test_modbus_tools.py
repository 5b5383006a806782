"""Technician tools: probe and scan URLs, and both commands against real servers."""

from __future__ import annotations

import argparse
import asyncio
import io
import struct
from typing import Any

import pytest

from agent import cli
from drivers.modbus import probe, scan
from drivers.modbus.tests.rtu_line import RtuLine, RtuUnit
from drivers.modbus.tests.server import ModbusTestServer, encode_registers
from drivers.modbus.url import UrlError, parse_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "modbus://10.0.0.5:5020/3/hr/40001?type=float32&order=cdab",
            {
                "device": {"protocol": "modbus-tcp", "host": "10.0.0.5", "port": 5020, "unit": 3},
                "table": "holding",
                "address": 0,
                "tag": {"type": "float32", "order": "CDAB"},
            },
        ),
        (
            "modbus://plc/1/ir/30010",
            {
                "table": "input",
                "address": 9,
                "device": {"protocol": "modbus-tcp", "host": "plc", "port": 502, "unit": 1},
            },
        ),
        ("modbus://plc/1/hr/100", {"table": "holding", "address": 100}),
        ("modbus://plc/1/hr/40001?base=0", {"table": "holding", "address": 40001}),
        ("modbus://plc/1/hr/400001", {"address": 0}),
        ("modbus://plc/1/co/00005", {"table": "coil", "address": 4}),
        ("modbus://plc/1/di/10002", {"table": "discrete", "address": 1}),
        (
            "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=e&unit=3&table=hr&address=40001&type=uint16",
            {
                "device": {
                    "protocol": "modbus-rtu",
                    "serial_port": "/dev/ttyUSB0",
                    "baudrate": 9600,
                    "parity": "E",
                    "unit": 3,
                },
                "address": 0,
            },
        ),
        (
            "modbus-rtu-tcp://gw:4001/7/hr/0",
            {"device": {"protocol": "modbus-rtu-tcp", "host": "gw", "port": 4001, "unit": 7}},
        ),
    ],
)
def test_url_forms(url: str, expected: dict[str, Any]) -> None:
    """Each URL form resolves to the documented connection, table and protocol address."""
    parsed = parse_url(url)

    assert {k: getattr(parsed, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://plc/1/hr/0", "unknown scheme http://"),
        ("modbus:///1/hr/0", "needs a host"),
        ("modbus://plc:99999/1/hr/0", "is not a number 1-65535"),
        ("modbus://plc/1/xx/0", "table 'xx' is not one of hr, ir, co, di"),
        ("modbus://plc/1/hr", "give the table and address"),
        ("modbus://plc/300/hr/0", "unit 300 is outside 0-255"),
        ("modbus://plc/1/hr/70000", "beyond 65535"),
        ("modbus://plc/1/hr/40000", "is not a valid holding number"),
        ("modbus://plc/1/hr/0?typ=float32", "unknown query key 'typ'"),
        ("modbus://plc/1/hr/0?baud=9600", "baud applies to modbus-rtu only"),
        ("modbus-rtu://host/dev/ttyUSB0", "takes a device path, not a host"),
        ("modbus-rtu://", "needs the serial device path"),
        ("modbus://plc/1/hr/0?count=0", "count 0 is outside 1-125"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    """A wrong URL is an error naming the part that is wrong."""
    with pytest.raises(UrlError, match=message):
        parse_url(url)


def run_tool(module: Any, argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    out = io.StringIO()
    status = module.main(parser.parse_args(argv), out=out)
    return status, out.getvalue()


async def in_thread(module: Any, argv: list[str]) -> tuple[int, str]:
    """The commands run their own event loop (asyncio.run), so call them off the test's loop."""
    return await asyncio.to_thread(run_tool, module, argv)


async def test_probe_prints_value_and_raw_registers() -> None:
    """probe reads a float in CDAB order and prints the value, the address reading and the raw words."""
    async with ModbusTestServer(registers=10) as server:
        await server.set_registers(0, encode_registers(struct.pack(">f", 1.5), "CDAB"))
        status, text = await in_thread(
            probe, [f"modbus://127.0.0.1:{server.port}/1/hr/40001?type=float32&order=CDAB"]
        )

    assert status == 0
    assert text.splitlines() == [
        f"127.0.0.1:{server.port} unit 1: holding 40001 = protocol address 0, float32 CDAB",
        "  value 1.5",
        "  raw registers 0x0000 0x3FC0  (0, 16320)",
    ]


async def test_probe_reports_exception_with_status_1() -> None:
    """probe of an address the device refuses prints the exception and exits 1."""
    async with ModbusTestServer(registers=10) as server:
        status, text = await in_thread(probe, [f"modbus://127.0.0.1:{server.port}/1/hr/500"])

    assert status == 1
    assert text.strip() == "no value: modbus exception 2 (illegal data address)"


async def test_probe_over_rtu_reads_a_serial_unit() -> None:
    """probe with a modbus-rtu URL reads a unit on a serial line."""
    unit = RtuUnit()
    unit.input[9] = 0x1234
    async with RtuLine({3: unit}, baudrate=38400, parity="N") as line:
        status, text = await in_thread(
            probe, [f"modbus-rtu://{line.port}?baud=38400&parity=N&unit=3&table=ir&address=30010&type=bcd16"]
        )

    assert status == 0
    assert "  value 1234" in text.splitlines()


def test_probe_bad_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong URL exits 2 with the reason and examples on stderr."""
    status, _ = run_tool(probe, ["modbus://plc/1/zz/0"])

    assert status == 2
    assert "table 'zz' is not one of hr, ir, co, di (hint: examples:" in capsys.readouterr().err


def test_probe_inconsistent_tag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A URL whose settings contradict each other is refused with the config validator's message."""
    status, _ = run_tool(probe, ["modbus://plc/1/hr/0?type=string"])

    assert status == 2
    assert "type string needs 'length'" in capsys.readouterr().err


async def test_probe_unreachable_device_exits_1() -> None:
    """probe of a host where nothing listens says it cannot connect and exits 1."""
    server = ModbusTestServer()  # never started: its port is free
    status, text = await in_thread(probe, [f"modbus://127.0.0.1:{server.port}/1/hr/0?timeout=0.5"])

    assert status == 1
    assert text.startswith("cannot connect:")


async def test_scan_lists_units_that_answer_on_a_serial_line() -> None:
    """scan finds exactly the units wired on the line, including one answering with an exception."""
    units = {2: RtuUnit(), 5: RtuUnit(exception=2)}
    units[2].holding[0] = 42
    async with RtuLine(units, baudrate=115200, parity="N") as line:
        status, text = await in_thread(
            scan, [f"modbus-rtu://{line.port}?baud=115200&parity=N", "--units", "1-6", "--timeout", "0.1"]
        )

    assert status == 0
    assert text.splitlines()[1:] == [
        "unit 2: answers (holding 0 = 42)",
        "unit 5: answers with modbus exception 2 (illegal data address)",
        "2 unit(s) answer: 2, 5",
    ]


@pytest.mark.parametrize(
    ("units", "message"), [("1-x", "is not a number"), ("9-3", "low to high"), ("256", "within 0-255")]
)
def test_scan_bad_unit_list_exits_2(units: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --units list exits 2 naming the bad part."""
    status, _ = run_tool(scan, ["modbus://plc", "--units", units])

    assert status == 2
    assert message in capsys.readouterr().err


def test_commands_are_reachable_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """'mine-agent probe' and 'mine-agent scan' dispatch to these modules."""
    assert cli.main(["probe", "modbus://plc/1/zz/0"]) == 2
    assert cli.main(["scan", "modbus://plc", "--units", "x"]) == 2
