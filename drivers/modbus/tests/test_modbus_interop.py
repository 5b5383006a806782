"""Interoperability: the driver against a Modbus TCP server from another implementation (npm modbus-serial).

The server runs under node from a cache directory (``$MINE_AGENT_INTEROP_DIR`` or
``~/.cache/mine-agent/interop``), where ``.ci/run`` or the first run installs ``modbus-serial`` with ``npm ci``
from ``interop/package-lock.json`` (the ``npm_peer`` fixture of the root conftest.py). Without node, npm or
the registry the tests skip and say why; in CI (``CI=true`` or ``MINE_AGENT_REQUIRE_INTEROP=1``) they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers import create_driver
from drivers.modbus import ModbusDriver
from drivers.modbus.tests.harness import Collector, all_bad, all_good, tcp_device
from drivers.modbus.tests.server import encode_registers, free_port

pytestmark = pytest.mark.slow  # the first run installs an npm package

SERVER_JS = Path(__file__).parent / "interop" / "modbus_serial_server.js"
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


@pytest.fixture(scope="module")
def node_modules(npm_peer: Callable[[Path, str], Path]) -> Path:
    """node_modules holding modbus-serial as interop/package-lock.json pins it (see the root conftest.py)."""
    return npm_peer(SERVER_JS.parent, "")


@contextlib.asynccontextmanager
async def js_server(modules: Path, tables: dict[str, list[int]]) -> AsyncIterator[int]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(SERVER_JS),
        str(port),
        json.dumps(tables),
        env={**os.environ, "NODE_PATH": str(modules)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            line = await proc.stdout.readline()
        if line.strip() != b"listening":
            assert proc.stderr is not None
            raise RuntimeError(f"modbus-serial server did not start: {line!r} {await proc.stderr.read()!r}")
        yield port
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def running(driver: ModbusDriver) -> AsyncIterator[None]:
    task = asyncio.create_task(driver.run(), name=f"modbus[{driver.name}].run")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_floats_in_each_byte_order_from_modbus_serial(node_modules: Path) -> None:
    """float32 and float64 in all four byte orders, served by modbus-serial, decode to the served values."""
    holding = [0] * 64
    tags: list[dict[str, Any]] = []
    for i, order in enumerate(ORDERS):
        holding[i * 2 : i * 2 + 2] = encode_registers(struct.pack(">f", -1.5 - i), order)
        holding[16 + i * 4 : 20 + i * 4] = encode_registers(struct.pack(">d", 1e6 + i / 8), order)
        tags.append({"name": f"f_{order}", "address": i * 2, "type": "float32", "order": order})
        tags.append({"name": f"d_{order}", "address": 16 + i * 4, "type": "float64", "order": order})
    sink = Collector()
    async with (
        js_server(node_modules, {"holding": holding}) as port,
        running(create_driver("js", tcp_device(port, tags), sink)),  # type: ignore[arg-type]
    ):
        poll = await sink.wait_for(all_good)

    expected = {f"js.f_{o}": -1.5 - i for i, o in enumerate(ORDERS)}
    expected |= {f"js.d_{o}": 1e6 + i / 8 for i, o in enumerate(ORDERS)}
    assert {s.tag: s.value for s in poll} == expected


async def test_tables_and_integers_from_modbus_serial(node_modules: Path) -> None:
    """Input registers, coils and 32-bit integers read from modbus-serial as served."""
    tables = {
        "holding": [*encode_registers(struct.pack(">i", -100_000)), 7],
        "input": [0, 0, 0, 4242],
        "coils": [0, 1, 0, 1],
    }
    tags = [
        {"name": "i32", "address": 0, "type": "int32"},
        {"name": "u16", "address": 2},
        {"name": "in", "address": 3, "table": "input"},
        {"name": "c1", "address": 1, "table": "coil"},
        {"name": "c2", "address": 2, "table": "coil"},
    ]
    sink = Collector()
    async with (
        js_server(node_modules, tables) as port,
        running(create_driver("js", tcp_device(port, tags, max_gap_registers=0), sink)),  # type: ignore[arg-type]
    ):
        poll = await sink.wait_for(all_good)

    assert {s.tag: s.value for s in poll} == {
        "js.i32": -100_000,
        "js.u16": 7,
        "js.in": 4242,
        "js.c1": True,
        "js.c2": False,
    }


async def test_exception_from_modbus_serial_is_named(node_modules: Path) -> None:
    """An illegal-address exception from modbus-serial becomes a bad sample naming it."""
    sink = Collector()
    async with (
        js_server(node_modules, {"holding": [1, 2]}) as port,
        running(create_driver("js", tcp_device(port, [{"name": "far", "address": 50}]), sink)),  # type: ignore[arg-type]
    ):
        poll = await sink.wait_for(all_bad)

    assert poll[0].reason == "modbus exception 2 (illegal data address)"
