"""The shipped sample, README and example files stay valid and in step with each other."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from config.schema import AgentConfig, DeviceConfig

HERE = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((HERE.parent.parent / "config" / "examples").glob("modbus-*.toml"))


def test_readme_contains_sample_verbatim() -> None:
    """README.md shows sample.toml exactly, so the documentation cannot drift from the sample."""
    sample = (HERE / "sample.toml").read_text()

    assert sample in (HERE / "README.md").read_text()


def test_sample_devices_validate() -> None:
    """Every device in sample.toml is valid for the schema."""
    devices = tomllib.loads((HERE / "sample.toml").read_text())["devices"]
    adapter = TypeAdapter(DeviceConfig)

    protocols = {adapter.validate_python(d).protocol for d in devices.values()}

    assert protocols == {"modbus-tcp", "modbus-rtu", "modbus-rtu-tcp"}


def test_there_are_modbus_examples() -> None:
    """config/examples holds the Modbus examples the README points to."""
    assert [p.name for p in EXAMPLES] == [
        "modbus-rtu-meters.toml",
        "modbus-rtu-tcp-gateway.toml",
        "modbus-tcp-plc.toml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_files_validate(path: Path) -> None:
    """Each Modbus example is a complete, valid gateway configuration."""
    config = AgentConfig.model_validate(tomllib.loads(path.read_text()))

    assert config.devices
