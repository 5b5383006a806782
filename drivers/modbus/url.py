"""Modbus URLs for the technician tools (``mine-agent probe`` and ``mine-agent scan``).

Forms::

    modbus://HOST[:PORT]/UNIT/TABLE/ADDRESS?type=float32&order=CDAB
    modbus-rtu-tcp://HOST[:PORT]/UNIT/TABLE/ADDRESS?...
    modbus-rtu:///dev/ttyUSB0?baud=9600&parity=E&unit=3&table=hr&address=40001&type=uint16

TABLE is ``hr`` (holding registers), ``ir`` (input registers), ``co`` (coils) or ``di`` (discrete inputs);
the long names ``holding``, ``input``, ``coil``, ``discrete`` work too. ADDRESS is either the protocol
address (0-based, what goes on the wire) or the 1-based "Modicon" number that manuals print, recognised by
its table digit: 4xxxx / 4xxxxx for holding, 3xxxx for input, 1xxxx for discrete inputs and 0xxxx (five
digits with leading zero) for coils. 40001 is holding protocol address 0. Add ``base=0`` to take the number
as a protocol address anyway. The tools print how they read the address, so a mistake is visible.

Query keys: ``type``, ``order``, ``bit``, ``length``, ``scale``, ``offset``, ``count`` (probe: how many
consecutive values), ``timeout`` (s), ``retries``, and for RTU ``baud``, ``parity`` (N/E/O), ``bytesize``,
``stopbits``.
"""

from __future__ import annotations

__all__ = ["ModbusUrl", "UrlError", "parse_url"]

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from agent.core.errors import AgentError
from drivers.modbus.config import RegisterTable

TABLES: dict[str, RegisterTable] = {
    "hr": "holding",
    "holding": "holding",
    "ir": "input",
    "input": "input",
    "co": "coil",
    "coil": "coil",
    "coils": "coil",
    "di": "discrete",
    "discrete": "discrete",
}
MODICON_DIGIT = {"holding": "4", "input": "3", "discrete": "1", "coil": "0"}
SCHEMES = {
    "modbus": "modbus-tcp",
    "modbus-tcp": "modbus-tcp",
    "modbus-rtu": "modbus-rtu",
    "modbus-rtu-tcp": "modbus-rtu-tcp",
}
EXAMPLES = (
    "modbus://192.168.1.10:502/1/hr/40001?type=float32&order=CDAB, "
    "modbus-rtu:///dev/ttyUSB0?baud=9600&parity=E&unit=3&table=hr&address=40001"
)
TAG_KEYS = ("type", "order", "bit", "length", "scale", "offset")
DEVICE_KEYS = {
    "timeout": "timeout_s",
    "retries": "retries",
    "baud": "baudrate",
    "parity": "parity",
    "bytesize": "bytesize",
    "stopbits": "stopbits",
}


class UrlError(AgentError):
    """A probe or scan URL that cannot be used; the message says which part and shows an example."""

    def __init__(self, message: str) -> None:
        super().__init__(message, hint=f"examples: {EXAMPLES}")


@dataclass(frozen=True, slots=True)
class ModbusUrl:
    """A parsed URL: settings for a device model, and (for probe) the register to read."""

    protocol: str
    device: dict[str, Any]
    table: RegisterTable | None
    address: int | None
    address_note: str
    tag: dict[str, Any] = field(default_factory=dict)
    count: int = 1


def _number(key: str, text: str, kind: type = int) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise UrlError(f"{key}={text!r} is not a number") from None


def resolve_address(table: str, text: str, *, base0: bool = False) -> tuple[int, str]:
    """Protocol address for ADDRESS in TABLE, and a sentence saying how it was read."""
    if not text.isdigit():
        raise UrlError(f"address {text!r} is not a number")
    number = int(text)
    digit = MODICON_DIGIT[table]
    modicon = not base0 and len(text) in (5, 6) and text[0] == digit and (digit != "0" or len(text) == 5)
    if modicon:
        protocol = int(text[1:]) - 1
        if protocol < 0:
            raise UrlError(
                f"address {text} is not a valid {table} number (the first is {digit}{'0' * (len(text) - 2)}1)"
            )
        return protocol, f"{table} {text} = protocol address {protocol}"
    if number > 65535:
        raise UrlError(f"address {text} is beyond 65535 and not a {table} number starting with {digit}")
    return number, f"{table} protocol address {number}"


def parse_url(url: str, *, need_address: bool = True) -> ModbusUrl:
    """Parse a probe/scan URL; raises :class:`UrlError` naming the part that is wrong."""
    parts = urlsplit(url)
    protocol = SCHEMES.get(parts.scheme)
    if protocol is None:
        raise UrlError(
            f"unknown scheme {parts.scheme + '://' if parts.scheme else 'in ' + repr(url)}; use modbus://, "
            "modbus-rtu:// or modbus-rtu-tcp://"
        )
    query: dict[str, str] = {}
    for key, values in parse_qs(parts.query, keep_blank_values=True).items():
        query[key] = values[-1]
    known = {*TAG_KEYS, *DEVICE_KEYS, "unit", "table", "address", "count", "base"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise UrlError(f"unknown query key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    device, unit_text, table_text, address_text = _location(protocol, parts, query)
    unit = _number("unit", unit_text)
    if not 0 <= unit <= 255:
        raise UrlError(f"unit {unit} is outside 0-255")
    device["unit"] = unit
    device.update(_device_settings(protocol, query))
    table = address = None
    note = ""
    if table_text is not None:
        table = TABLES.get(table_text.lower())
        if table is None:
            raise UrlError(f"table {table_text!r} is not one of hr, ir, co, di")
    if need_address:
        if table is None or address_text is None:
            raise UrlError("give the table and address to read, e.g. /1/hr/40001 (or table=hr&address=40001)")
        address, note = resolve_address(table, address_text, base0=query.get("base") == "0")
    elif address_text is not None and table is not None:
        address, note = resolve_address(table, address_text, base0=query.get("base") == "0")
    tag = _tag_settings(query)
    count = _number("count", query.get("count", "1"))
    if not 1 <= count <= 125:
        raise UrlError(f"count {count} is outside 1-125")
    return ModbusUrl(protocol, device, table, address, note, tag, count)


def _location(
    protocol: str, parts: SplitResult, query: dict[str, str]
) -> tuple[dict[str, Any], str, str | None, str | None]:
    """Where to connect, and the unit/table/address texts (path for TCP forms, query for RTU)."""
    device: dict[str, Any] = {"protocol": protocol}
    path_parts = [p for p in parts.path.split("/") if p]
    if protocol == "modbus-rtu":
        if parts.netloc:
            raise UrlError(
                f"modbus-rtu takes a device path, not a host ({parts.netloc!r}): modbus-rtu:///dev/ttyUSB0"
            )
        if not parts.path or parts.path == "/":
            raise UrlError("modbus-rtu needs the serial device path: modbus-rtu:///dev/ttyUSB0?baud=9600")
        device["serial_port"] = parts.path
        unit_text, table_text, address_text = query.get("unit", "1"), query.get("table"), query.get("address")
    else:
        if not parts.hostname:
            raise UrlError(f"{parts.scheme}:// needs a host: {parts.scheme}://192.168.1.10:502/1/hr/40001")
        device["host"] = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise UrlError(f"port in {parts.netloc!r} is not a number 1-65535") from None
        device["port"] = port or 502
        if len(path_parts) > 3:
            raise UrlError(f"path {parts.path!r} has too many parts; expected /UNIT/TABLE/ADDRESS")
        unit_text = path_parts[0] if path_parts else query.get("unit", "1")
        table_text = path_parts[1] if len(path_parts) > 1 else query.get("table")
        address_text = path_parts[2] if len(path_parts) > 2 else query.get("address")
    return device, unit_text, table_text, address_text


def _device_settings(protocol: str, query: dict[str, str]) -> dict[str, Any]:
    device: dict[str, Any] = {}
    for key, target in DEVICE_KEYS.items():
        if key in query:
            if key in ("baud", "parity", "bytesize", "stopbits") and protocol != "modbus-rtu":
                raise UrlError(f"{key} applies to modbus-rtu only")
            if key == "parity":
                device[target] = query[key].upper()
            else:
                device[target] = _number(key, query[key], float if key == "timeout" else int)
    return device


def _tag_settings(query: dict[str, str]) -> dict[str, Any]:
    tag: dict[str, Any] = {}
    for key in TAG_KEYS:
        if key in query:
            if key in ("bit", "length"):
                tag[key] = _number(key, query[key])
            elif key in ("scale", "offset"):
                tag[key] = _number(key, query[key], float)
            else:
                tag[key] = query[key] if key == "type" else query[key].upper()
    return tag
