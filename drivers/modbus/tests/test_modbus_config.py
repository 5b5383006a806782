"""Device and tag settings: every mistake is refused at load with a message a technician can act on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from config.schema import DeviceConfig
from drivers import driver_class
from drivers.modbus import ModbusDriver, ModbusRtuDevice, ModbusRtuTcpDevice, ModbusTcpDevice

DEVICE = TypeAdapter(DeviceConfig)
ROOT = Path(__file__).resolve().parents[3]


def tcp(*tags: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {
        "protocol": "modbus-tcp",
        "host": "10.0.0.5",
        "tags": list(tags) or [{"name": "a", "address": 0}],
    } | settings


@pytest.mark.parametrize(
    ("device", "cls"),
    [
        (tcp(), ModbusTcpDevice),
        (
            {"protocol": "modbus-rtu", "serial_port": "/dev/ttyUSB0", "tags": [{"name": "a", "address": 0}]},
            ModbusRtuDevice,
        ),
        (
            {
                "protocol": "modbus-rtu-tcp",
                "host": "10.0.0.9",
                "port": 4001,
                "tags": [{"name": "a", "address": 0}],
            },
            ModbusRtuTcpDevice,
        ),
    ],
)
def test_each_protocol_loads_through_the_schema_union(device: dict[str, Any], cls: type) -> None:
    """The three Modbus protocols are part of the configuration schema and map to the Modbus driver."""
    loaded = DEVICE.validate_python(device)

    assert isinstance(loaded, cls)
    assert driver_class(loaded.protocol) is ModbusDriver


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ({"table": "coil", "type": "uint16"}, "holds single bits: type must be bool"),
        ({"type": "bool"}, "needs 'bit' (0-15)"),
        ({"type": "uint16", "bit": 3}, "'bit' only applies to type bool"),
        ({"type": "string"}, "type string needs 'length'"),
        ({"type": "int32", "length": 2}, "'length' only applies to type string"),
        ({"type": "string", "length": 2, "scale": 2}, "scale/offset need a numeric type"),
        ({"type": "float32", "enum": {"1": "x"}}, "'enum' needs an integer type"),
        ({"type": "uint16", "enum": {"one": "x"}}, "enum key 'one' is not an integer"),
        ({"type": "uint16", "enum": {"1": "x"}, "scale": 0.1}, "'enum' maps the raw value"),
        ({"address": 65535, "type": "float32"}, "runs past 65535"),
        ({"type": "float32", "order": "BACD"}, "'ABCD', 'CDAB', 'BADC' or 'DCBA'"),
        ({"table": "holdings"}, "'coil', 'discrete', 'holding' or 'input'"),
        # A tag is a dataclass (see ModbusTag): pydantic's words for an unknown key differ from a model's;
        # the loader words both as "unknown key" (tests/config_cases).
        ({"adress": 3}, "adress\n  Unexpected keyword argument"),
    ],
)
def test_bad_tag_is_refused_with_a_clear_message(tag: dict[str, Any], message: str) -> None:
    """Each inconsistent tag setting is an error naming what to change."""
    with pytest.raises(ValidationError, match=re.escape(message)):
        DEVICE.validate_python(tcp({"name": "t", "address": 0} | tag))


def test_tag_longer_than_device_request_limit_is_refused() -> None:
    """A tag wider than max_registers_per_request cannot be read and is refused at load."""
    with pytest.raises(ValidationError, match="spans 4 registers but max_registers_per_request is 2"):
        DEVICE.validate_python(
            tcp({"name": "t", "address": 0, "type": "float64"}, max_registers_per_request=2)
        )


def test_duplicate_tag_name_is_refused() -> None:
    """Two tags with one name on a device are refused."""
    with pytest.raises(ValidationError, match="tag name 'a' is used twice"):
        DEVICE.validate_python(tcp({"name": "a", "address": 0}, {"name": "a", "address": 1}))


def test_devices_on_one_serial_port_share_a_connection_key() -> None:
    """Two units on one serial port have the same connection key, different line settings do not hide that."""
    a = ModbusRtuDevice(
        protocol="modbus-rtu", serial_port="/dev/ttyS1", unit=1, tags=[{"name": "a", "address": 0}]
    )
    b = ModbusRtuDevice(
        protocol="modbus-rtu", serial_port="/dev/ttyS1", unit=2, tags=[{"name": "a", "address": 0}]
    )

    assert a.connection_key() == b.connection_key()
    assert a.connection_settings() == b.connection_settings()


@pytest.mark.parametrize("unit", [0, 248])
def test_rtu_unit_outside_1_to_247_is_refused(unit: int) -> None:
    """On a serial line unit 0 is broadcast and 248-255 are reserved, so they cannot be polled."""
    device = {
        "protocol": "modbus-rtu",
        "serial_port": "/dev/ttyS0",
        "unit": unit,
        "tags": [{"name": "a", "address": 0}],
    }

    with pytest.raises(ValidationError, match="use the meter's address, 1-247"):
        DEVICE.validate_python(device)


def test_schema_import_does_not_load_pymodbus() -> None:
    """Loading the configuration schema does not import pymodbus (validate stays fast)."""
    code = "import sys, config.schema; print('pymodbus' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )

    assert result.stdout.strip() == "False"
