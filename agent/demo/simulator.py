"""A simulated PLC: a real Modbus TCP server whose registers move like field sensors.

Used by ``mine-agent demo`` and by the benchmarks, which run it in a separate process
(``python3 -m agent.demo.simulator --port 5020 --registers 10000``) so its CPU is not counted as the agent's.
Register values follow slow bounded random walks, one 16-bit value per register; the demo's named signals
(methane, CO, ...) are written as float32 / scaled integers at fixed addresses by :class:`DemoSignals`.
"""

from __future__ import annotations

__all__ = ["DemoSignals", "SimulatedPlc"]

import argparse
import asyncio
import contextlib
import logging
import random
import struct
from typing import ClassVar

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

_FC_HOLDING = 3
_MAX_WRITE = 120  # registers per setValues call, a comfortable slice


class SimulatedPlc:
    """A Modbus TCP server on ``host:port`` with ``registers`` holding registers (also served as input
    registers) for unit ``unit``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5020, *, registers: int = 100, unit: int = 1) -> None:
        self.host = host
        self.port = port
        self.unit = unit
        self.registers = registers
        self._server: ModbusTcpServer | None = None

    async def start(self) -> None:
        """Listen. The server is built here because pymodbus binds it to the running loop."""
        logging.getLogger("pymodbus").setLevel(logging.ERROR)  # the simulator's own deprecation chatter
        device = SimDevice(id=self.unit, simdata=[SimData(address=0, count=self.registers, values=0,
                                                          datatype=DataType.REGISTERS)])
        self._server = ModbusTcpServer(device, address=(self.host, self.port))
        await self._server.serve_forever(background=True)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    async def write(self, address: int, values: list[int]) -> None:
        if self._server is None:
            raise RuntimeError("the simulated PLC is not started")
        for i in range(0, len(values), _MAX_WRITE):
            await self._server.async_setValues(self.unit, _FC_HOLDING, address + i, values[i:i + _MAX_WRITE])

    async def write_float32(self, address: int, value: float) -> None:
        await self.write(address, list(struct.unpack(">2H", struct.pack(">f", value))))

    async def random_walk(self, period_s: float, *, seed: int = 1) -> None:
        """Move every register by a small random step every ``period_s`` until cancelled."""
        rng = random.Random(seed)
        values = [rng.randrange(1000, 60000) for _ in range(self.registers)]
        while True:
            values = [min(65535, max(0, v + rng.randint(-50, 50))) for v in values]
            await self.write(0, values)
            await asyncio.sleep(period_s)


class DemoSignals:
    """The demo's gas, water and machine signals and where they live in the simulated PLC."""

    #: name -> (address, type, unit, description) as they appear in the demo configuration
    TAGS: ClassVar[dict[str, tuple[int, str, str, str]]] = {
        "ch4": (0, "float32", "%CH4", "methane at the return airway"),
        "co": (2, "uint16", "ppm", "carbon monoxide"),
        "o2": (3, "float32", "%vol", "oxygen"),
        "water_level": (5, "int16", "cm", "sump water level"),
        "fan_speed": (6, "uint16", "rpm", "main fan speed"),
    }

    def __init__(self, plc: SimulatedPlc, seed: int = 7) -> None:
        self.plc = plc
        self.rng = random.Random(seed)
        self.state = {"ch4": 0.35, "co": 8.0, "o2": 20.8, "water_level": 120.0, "fan_speed": 980.0}

    async def run(self, period_s: float = 0.5) -> None:
        r = self.rng
        s = self.state
        while True:
            s["ch4"] = min(2.0, max(0.0, s["ch4"] + r.gauss(0, 0.02)))
            s["co"] = min(60.0, max(0.0, s["co"] + r.gauss(0, 0.5)))
            s["o2"] = min(21.0, max(18.5, s["o2"] + r.gauss(0, 0.02)))
            s["water_level"] = min(400.0, max(0.0, s["water_level"] + r.gauss(0.2, 1.0)))
            s["fan_speed"] = min(1200.0, max(0.0, s["fan_speed"] + r.gauss(0, 5)))
            await self.plc.write_float32(0, s["ch4"])
            await self.plc.write(2, [round(s["co"])])
            await self.plc.write_float32(3, s["o2"])
            await self.plc.write(5, [struct.unpack(">H", struct.pack(">h", round(s["water_level"])))[0]])
            await self.plc.write(6, [round(s["fan_speed"])])
            await asyncio.sleep(period_s)


async def _serve(args: argparse.Namespace) -> None:
    plc = SimulatedPlc(args.host, args.port, registers=args.registers)
    await plc.start()
    print(f"simulated PLC on {args.host}:{args.port} with {args.registers} registers", flush=True)
    try:
        await plc.random_walk(args.period)
    finally:
        await plc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--registers", type=int, default=100)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between value changes")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
