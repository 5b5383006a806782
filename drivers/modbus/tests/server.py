"""A real Modbus TCP server for tests, end-to-end runs and benchmarks (pymodbus ``ModbusTcpServer``).

In-process::

    server = ModbusTestServer(units=(1, 2), registers=1000)
    await server.start()                       # listens on 127.0.0.1:server.port (a free port)
    await server.set_registers(10, [1, 2])     # holding registers 10 and 11 of unit 1
    await server.stop(); await server.start()  # same port again: a PLC that restarts

As a separate process (prints ``listening 127.0.0.1:<port>`` once it serves; values change every period)::

    python3 -m drivers.modbus.tests.server --port 15020 --registers 200 --period 0.1

Each unit has its own coils, discrete inputs, holding and input registers, ``registers`` of each, at
protocol addresses 0 .. registers-1. Knobs for fault tests: ``delay_s`` (each request is answered that
late), ``exception`` (answer every request with this exception code), ``rtu_framing`` (RTU frames over
TCP, as a serial server forwards them), ``silent_units`` (these units stop answering, as dead units on a
serial bus); ``requests``, ``request_times``, ``active`` and ``max_active`` record what the server saw.
Unit ids not served get exception 4 (pymodbus 3.16 ignores ``ignore_missing_devices`` with SimDevice);
use ``silent_units`` for units that must not answer.
"""

from __future__ import annotations

__all__ = ["ModbusTestServer", "free_port"]

import argparse
import asyncio
import contextlib
import logging
import socket
import struct
import sys
import time
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

FUNCTION_CODE = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def float32_registers(value: float, order: str = "ABCD") -> list[int]:
    """Two registers holding ``value`` in the given byte order (ABCD, CDAB, BADC, DCBA)."""
    return encode_registers(struct.pack(">f", value), order)


def encode_registers(big_endian: bytes, order: str = "ABCD") -> list[int]:
    """Registers that carry a big-endian value in the given byte order, as a device would send it."""
    data = big_endian
    if order in ("CDAB", "DCBA"):
        words = [data[i : i + 2] for i in range(0, len(data), 2)]
        data = b"".join(reversed(words))
    if order in ("BADC", "DCBA"):
        data = b"".join(data[i : i + 2][::-1] for i in range(0, len(data), 2))
    return list(struct.unpack(f">{len(data) // 2}H", data))


class ModbusTestServer:
    """A pymodbus TCP server on 127.0.0.1 with start/stop/restart and register setters."""

    def __init__(
        self,
        *,
        port: int | None = None,
        units: Sequence[int] = (1,),
        registers: int = 1000,
        delay_s: float = 0.0,
        rtu_framing: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.framer = FramerType.RTU if rtu_framing else FramerType.SOCKET
        self.units = tuple(units)
        self.size = registers
        self.delay_s = delay_s
        self.exception: int | None = None
        self.silent_units: set[int] = set()
        self.requests = 0
        self.request_times: list[float] = []
        self.active = 0
        self.max_active = 0
        self._server: ModbusTcpServer | None = None
        self._devices = [self._device(unit) for unit in self.units]

    def _device(self, unit: int) -> SimDevice:
        n = self.size
        return SimDevice(
            id=unit,
            simdata=(
                [SimData(address=0, count=n, values=False, datatype=DataType.BITS)],
                [SimData(address=0, count=n, values=False, datatype=DataType.BITS)],
                [SimData(address=0, count=n, values=0, datatype=DataType.REGISTERS)],
                [SimData(address=0, count=n, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if set_values is not None:  # our own setters and client writes: no fault injection
            return None
        self.requests += 1
        self.request_times.append(time.monotonic())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.exception is not None:
                return ExcCodes(self.exception)
            return None
        finally:
            self.active -= 1

    def _trace_packet(self, sending: bool, packet: bytes) -> bytes:
        """Swallow the answers of units in ``silent_units``: they look dead to the client."""
        if sending and self.silent_units and packet:
            unit = packet[0] if self.framer == FramerType.RTU else packet[6] if len(packet) > 6 else None
            if unit in self.silent_units:
                return b""
        return packet

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen on ``self.port``; returns once connections are accepted. Register values persist."""
        if self._server is not None:
            return
        server = ModbusTcpServer(
            self._devices,
            address=("127.0.0.1", self.port),
            framer=self.framer,
            trace_packet=self._trace_packet,
        )
        await server.serve_forever(background=True)
        self._server = server

    async def stop(self) -> None:
        """Close the listener and every client connection, as a PLC that powers off."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def __aenter__(self) -> ModbusTestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _require(self) -> ModbusTcpServer:
        if self._server is None:
            raise RuntimeError("start the server before setting values")
        return self._server

    async def set_registers(
        self, address: int, values: Sequence[int], *, table: str = "holding", unit: int = 1
    ) -> None:
        """Set holding (default) or input registers from ``address``."""
        await self._require().async_setValues(unit, FUNCTION_CODE[table], address, list(values))

    async def set_bits(
        self, address: int, values: Sequence[bool], *, table: str = "coil", unit: int = 1
    ) -> None:
        """Set coils (default) or discrete inputs from ``address``."""
        await self._require().async_setValues(unit, FUNCTION_CODE[table], address, [bool(v) for v in values])


async def _serve(port: int, registers: int, period: float, units: Sequence[int]) -> None:
    server = ModbusTestServer(port=port, registers=registers, units=units)
    await server.start()
    print(f"listening 127.0.0.1:{server.port}", flush=True)
    tick = 0
    try:
        while True:
            tick += 1
            values = [(tick + i) & 0xFFFF for i in range(registers)]
            for unit in units:
                await server.set_registers(0, values, unit=unit)
                await server.set_registers(0, values, table="input", unit=unit)
            await asyncio.sleep(period)
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve changing Modbus TCP registers on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (printed)")
    parser.add_argument("--registers", type=int, default=200, help="registers per table, from address 0")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between value changes")
    parser.add_argument("--units", type=int, nargs="+", default=[1], help="unit ids served")
    args = parser.parse_args(argv)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port or free_port(), args.registers, args.period, args.units))
    return 0


if __name__ == "__main__":
    sys.exit(main())
