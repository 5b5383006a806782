"""Device and tag settings of the Modbus driver (see sample.toml beside this file).

One ``[devices.<name>]`` entry is one Modbus unit (one PLC, meter or drive answering to one unit id).
Several entries that name the same connection share it: devices with the same ``serial_port`` share that
serial line (RS-485 bus), devices with the same ``host`` and ``port`` share that TCP connection (a gateway
or a serial server in front of several units). On a shared connection requests go one at a time, with
``request_delay_s`` of silence between them. This is how a technician already thinks about a bus: one entry
per instrument with its unit id, and the wiring they have in common.

Every check here runs at load time without I/O, so a technician sees every mistake before the agent starts.
"""

from __future__ import annotations

__all__ = [
    "DataType",
    "ModbusDevice",
    "ModbusRtuDevice",
    "ModbusRtuTcpDevice",
    "ModbusTag",
    "ModbusTcpDevice",
    "RegisterTable",
    "WordOrder",
]

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from agent.core.fields import STRICT, DevicePath, Name, Port, Seconds, StrictModel, TagText, check_plausible_range

RegisterTable = Literal["coil", "discrete", "holding", "input"]
DataType = Literal[
    "bool",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
    "bcd16",
    "bcd32",
    "string",
]
WordOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

#: Registers each data type occupies (strings: ``length``).
TYPE_REGISTERS: dict[str, int] = {
    "bool": 1,
    "uint16": 1,
    "int16": 1,
    "bcd16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
    "bcd32": 2,
    "uint64": 4,
    "int64": 4,
    "float64": 4,
}
BIT_TABLES = ("coil", "discrete")
NUMERIC_TYPES = (
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float32",
    "float64",
    "bcd16",
    "bcd32",
)
INTEGER_TYPES = ("uint16", "int16", "uint32", "int32", "uint64", "int64", "bcd16", "bcd32")


# A slotted dataclass rather than a model, for memory: a PLC with 10,000 registers is 10,000 of these for as
# long as the agent runs, and a model instance carries a dict and a set of its own (about 600 bytes more per
# tag, 6 MB per 10,000). Validation and the loader's messages are the same as for a model. Every field is
# assigned a Field() so the JSON Schema lists them in this order.
@dataclass(frozen=True, slots=True, kw_only=True, config=STRICT)
class ModbusTag:
    name: Name = Field()
    table: RegisterTable = Field(
        "holding",
        description="coil (FC1), discrete (FC2, discrete inputs), holding (FC3) or input (FC4 registers).",
    )
    address: int = Field(ge=0, le=65535, description="Protocol address, 0-based (40001 is 0).")
    type: DataType = Field(
        "uint16", description="How the registers are decoded; bool by default for coil and discrete."
    )
    bit: Annotated[int, Field(ge=0, le=15)] | None = Field(
        None, description="For type bool on a holding/input register: the bit, 0 = least significant."
    )
    length: Annotated[int, Field(ge=1, le=125)] | None = Field(
        None, description="For type string: how many registers (2 characters each)."
    )
    order: WordOrder | None = Field(
        None, description="Byte order of this tag, as manuals name it; default: the device's order."
    )
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = Field(0.0)
    enum: dict[str, str] | None = Field(
        None, description='Status word labels: {"0" = "stopped", "1" = "running"}; value becomes the label.'
    )
    poll_interval_s: Seconds | None = Field(None, description="Poll this tag at its own interval.")
    unit: str | None = Field(None, description="Engineering unit, for documentation and displays.")
    # The tag catalogue's fields, as agent.core.fields.TagCatalogFields defines them for the other tag models:
    # this one is a slotted dataclass (read on every poll), which cannot inherit a pydantic model.
    description: TagText | None = Field(
        None, description="What the tag measures, for people reading the data (sent in the tag catalogue)."
    )
    location: TagText | None = Field(
        None, description="Where the sensor is, e.g. 'north heading, level -320' (sent in the tag catalogue)."
    )
    low: float | None = Field(None, description="Lowest plausible value, in the tag's unit (tag catalogue).")
    high: float | None = Field(None, description="Highest plausible value, in the tag's unit (tag catalogue).")
    raw: bool = Field(False, description="Also send every sample as read, not only window aggregates.")

    @model_validator(mode="before")
    @classmethod
    def _default_type(cls, data: Any) -> Any:
        """Coils and discrete inputs are bits: their type defaults to bool, registers' to uint16."""
        if isinstance(data, ArgsKwargs):  # built in code: ModbusTag(name=..., table="coil", ...)
            kwargs = data.kwargs or {}
            if kwargs.get("type") is None and kwargs.get("table") in BIT_TABLES:
                return ArgsKwargs(data.args, {**kwargs, "type": "bool"})
        elif isinstance(data, dict) and data.get("type") is None and data.get("table") in BIT_TABLES:
            return {**data, "type": "bool"}
        return data

    @property
    def data_type(self) -> str:
        """The data type (kept for readability at call sites; same as ``type``)."""
        return self.type

    @property
    def registers(self) -> int:
        """How many registers (or bits, for coil/discrete) this tag reads."""
        if self.table in BIT_TABLES:
            return 1
        if self.data_type == "string":
            return self.length or 1
        return TYPE_REGISTERS[self.data_type]

    @model_validator(mode="after")
    def _consistent(self) -> ModbusTag:
        kind = self.data_type
        if self.table in BIT_TABLES and kind != "bool":
            raise ValueError(f"table {self.table!r} holds single bits: type must be bool, not {kind!r}")
        if kind == "bool" and self.table not in BIT_TABLES and self.bit is None:
            raise ValueError(
                f"type bool on a {self.table} register needs 'bit' (0-15): which bit of the word"
            )
        if self.bit is not None and (kind != "bool" or self.table in BIT_TABLES):
            raise ValueError("'bit' only applies to type bool on a holding or input register")
        if kind == "string" and self.length is None:
            raise ValueError("type string needs 'length': how many registers the text occupies")
        if self.length is not None and kind != "string":
            raise ValueError("'length' only applies to type string")
        if (self.scale != 1.0 or self.offset != 0.0) and kind not in NUMERIC_TYPES:
            raise ValueError(f"scale/offset need a numeric type, not {kind!r}")
        if self.enum is not None:
            if kind not in INTEGER_TYPES:
                raise ValueError(f"'enum' needs an integer type, not {kind!r}")
            if self.scale != 1.0 or self.offset != 0.0:
                raise ValueError("'enum' maps the raw value: remove scale/offset")
            for key in self.enum:
                try:
                    int(key, 0)
                except ValueError:
                    raise ValueError(f'enum key {key!r} is not an integer (write "3" or "0x0003")') from None
        if self.address + self.registers - 1 > 65535:
            raise ValueError(f"address {self.address} + {self.registers} registers runs past 65535")
        check_plausible_range(self.low, self.high)
        return self


class _ModbusDeviceBase(StrictModel):
    unit: Annotated[int, Field(ge=0, le=255, description="Modbus unit id (slave id), 0-255.")] = 1
    poll_interval_s: Seconds = 1.0
    timeout_s: Seconds = Field(
        1.0, description="Wait for each answer; a dead unit costs timeout x (retries+1)."
    )
    retries: Annotated[int, Field(ge=0, le=5)] = Field(
        1, description="Extra attempts after a timeout (line noise on RS-485 is recovered by retrying)."
    )
    order: WordOrder = Field("ABCD", description="Default byte order for multi-register values.")
    max_registers_per_request: Annotated[int, Field(ge=1, le=125)] = Field(
        125, description="Some devices serve at most 16 or 32 registers per request."
    )
    max_bits_per_request: Annotated[int, Field(ge=1, le=2000)] = 2000
    max_gap_registers: Annotated[int, Field(ge=0, le=124)] = Field(
        8, description="Read over unused registers up to this many when it saves a request."
    )
    max_gap_bits: Annotated[int, Field(ge=0, le=1999)] = 64
    request_delay_s: Annotated[float, Field(ge=0, le=10)] = Field(
        0.0, description="Silence between two requests on this connection (slow gateways and meters)."
    )
    reconnect_max_s: Seconds = Field(30.0, description="Longest wait between two connection attempts.")
    failures_before_backoff: Annotated[int, Field(ge=1, le=1000)] = Field(
        3, description="Consecutive unanswered polls before this unit is polled less often."
    )
    backoff_max_s: Seconds = Field(
        60.0, description="Longest wait between two polls of a unit that does not answer."
    )
    tags: list[ModbusTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _tags_fit(self) -> _ModbusDeviceBase:
        seen: set[str] = set()
        for tag in self.tags:
            if tag.name in seen:
                raise ValueError(f"tag name {tag.name!r} is used twice on this device")
            seen.add(tag.name)
            if tag.table not in BIT_TABLES and tag.registers > self.max_registers_per_request:
                raise ValueError(
                    f"tag {tag.name!r} spans {tag.registers} registers but max_registers_per_request is "
                    f"{self.max_registers_per_request}"
                )
        return self

    def connection_key(self) -> tuple[object, ...]:
        """What identifies the physical connection; devices with the same key share it."""
        raise NotImplementedError

    def connection_settings(self) -> tuple[object, ...]:
        """Settings every device on a shared connection must agree on."""
        raise NotImplementedError


class ModbusTcpDevice(_ModbusDeviceBase):
    protocol: Literal["modbus-tcp"]
    host: str = Field(min_length=1, description="PLC address or host name.")
    port: Port = 502

    def connection_key(self) -> tuple[object, ...]:
        return ("tcp", self.host, self.port)

    def connection_settings(self) -> tuple[object, ...]:
        return ("modbus-tcp",)


class ModbusRtuTcpDevice(_ModbusDeviceBase):
    """Modbus RTU frames carried over TCP: serial servers and DTUs that forward bytes unchanged."""

    protocol: Literal["modbus-rtu-tcp"]
    host: str = Field(min_length=1, description="Serial server address or host name.")
    port: Port = 502

    def connection_key(self) -> tuple[object, ...]:
        return ("tcp", self.host, self.port)

    def connection_settings(self) -> tuple[object, ...]:
        return ("modbus-rtu-tcp",)


class ModbusRtuDevice(_ModbusDeviceBase):
    protocol: Literal["modbus-rtu"]
    serial_port: DevicePath = Field(description="Serial device, e.g. /dev/ttyUSB0 or /dev/ttyS1.")
    baudrate: Annotated[int, Field(ge=300, le=921600)] = 9600
    parity: Literal["N", "E", "O"] = Field(
        "E", description="N (none), E (even, the Modbus default) or O (odd)."
    )
    bytesize: Literal[7, 8] = 8
    stopbits: Literal[1, 2] = 1

    @model_validator(mode="after")
    def _addressable(self) -> ModbusRtuDevice:
        if not 1 <= self.unit <= 247:
            raise ValueError(
                f"unit {self.unit} cannot be polled on a serial line: 0 is broadcast (never answered) and "
                "248-255 are reserved; use the meter's address, 1-247"
            )
        return self

    def connection_key(self) -> tuple[object, ...]:
        return ("serial", self.serial_port)

    def connection_settings(self) -> tuple[object, ...]:
        return ("modbus-rtu", self.baudrate, self.parity, self.bytesize, self.stopbits)


ModbusDevice = ModbusTcpDevice | ModbusRtuDevice | ModbusRtuTcpDevice
