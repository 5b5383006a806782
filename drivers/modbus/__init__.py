"""Modbus TCP, RTU and RTU-over-TCP driver (see README.md beside this file).

Public surface: :class:`ModbusDriver` (registered for protocols ``modbus-tcp``, ``modbus-rtu`` and
``modbus-rtu-tcp``), the device models and :class:`RegisterPlanner`. The device models are imported by the
configuration schema, so this package imports pymodbus only when the driver itself is first used
(``ModbusDriver`` is loaded on attribute access): ``mine-agent validate`` does not pay for it.
"""

from __future__ import annotations

__all__ = [
    "ModbusDriver",
    "ModbusRtuDevice",
    "ModbusRtuTcpDevice",
    "ModbusTag",
    "ModbusTcpDevice",
    "ReadRequest",
    "RegisterPlanner",
]

from typing import TYPE_CHECKING, Any

from drivers.modbus.config import ModbusRtuDevice, ModbusRtuTcpDevice, ModbusTag, ModbusTcpDevice
from drivers.modbus.planner import ReadRequest, RegisterPlanner

if TYPE_CHECKING:
    from drivers.modbus.driver import ModbusDriver


def __getattr__(name: str) -> Any:
    if name == "ModbusDriver":
        from drivers.modbus.driver import ModbusDriver

        return ModbusDriver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
