"""``mine-agent probe URL``: read one Modbus value once and print it decoded and raw.

For commissioning: check the address, type and byte order of a value against the device's display before
writing it into the configuration. The URL forms are described in :mod:`drivers.modbus.url`, e.g.
``mine-agent probe 'modbus://192.168.1.10/1/hr/40001?type=float32&order=CDAB'``.

Exit status: 0 value read, 1 the device did not answer or answered with an error, 2 the URL is wrong.
"""

from __future__ import annotations

__all__ = ["add_arguments", "main"]

import argparse
import asyncio
import logging
import sys
from typing import Any, TextIO

from pydantic import TypeAdapter, ValidationError

from agent.core.clock import SystemClock
from agent.core.sample import Quality, Sample
from drivers.modbus.config import BIT_TABLES, ModbusDevice, ModbusTag
from drivers.modbus.decode import BitBlockDecoder, RegisterBlockDecoder, compile_tag
from drivers.modbus.link import ModbusLink, ReadError, describe, registers_of
from drivers.modbus.url import ModbusUrl, UrlError, parse_url

_DEVICE: TypeAdapter[ModbusDevice] = TypeAdapter(ModbusDevice)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        help="what to read, e.g. 'modbus://192.168.1.10:502/1/hr/40001?type=float32&order=CDAB' or "
        "'modbus-rtu:///dev/ttyUSB0?baud=9600&parity=E&unit=3&table=hr&address=40001'",
    )


def build_device(parsed: ModbusUrl, *, timeout_s: float = 1.0) -> ModbusDevice:
    """A device model for the URL, validated like a configuration file (same messages)."""
    if parsed.table is None or parsed.address is None:
        raise UrlError("give the table and address to read, e.g. /1/hr/40001")
    tags: list[ModbusTag] = []
    address = parsed.address
    for i in range(parsed.count):
        tag = ModbusTag(name=f"v{i}", table=parsed.table, address=address, **parsed.tag)
        tags.append(tag)
        address += tag.registers
    settings: dict[str, Any] = {"timeout_s": timeout_s, "retries": 0, "reconnect_max_s": 1.0}
    return _DEVICE.validate_python({**settings, **parsed.device, "tags": tags})


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'][-2:])}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )


async def probe(device: ModbusDevice, out: TextIO) -> tuple[int, list[Sample], list[int] | list[bool]]:
    """Read every tag of ``device`` in one request; print and return (status, samples, raw)."""
    link = ModbusLink(device, SystemClock())
    try:
        if not await link.ensure_connected():
            print(f"cannot connect: {link.last_error}", file=out)
            return 1, [], []
        tags = device.tags
        first = tags[0].address
        count = tags[-1].address + tags[-1].registers - first
        table = tags[0].table
        function_code = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[table]
        try:
            answer = await link.read(
                device.unit, function_code, first, count, timeout_s=device.timeout_s, retries=device.retries
            )
        except ReadError as exc:
            print(f"no value: {exc.reason}", file=out)
            return 1, [], []
        compiled = [compile_tag("probe", t, device.order) for t in tags]
        decoder = (
            BitBlockDecoder(first, count, compiled)
            if table in BIT_TABLES
            else RegisterBlockDecoder(first, count, compiled)
        )
        samples: list[Sample] = []
        decoder.decode(samples, answer, 0)  # type: ignore[arg-type]
        raw = answer if isinstance(answer, list) else registers_of(answer)
        return (0 if all(s.quality == Quality.GOOD for s in samples) else 1), samples, raw
    finally:
        link.close()


def _print_result(
    device: ModbusDevice, parsed: ModbusUrl, samples: list[Sample], raw: list[Any], out: TextIO
) -> None:
    tag = device.tags[0]
    order = tag.order or device.order
    kind = tag.data_type
    detail = kind if parsed.table in BIT_TABLES or tag.registers == 1 else f"{kind} {order}"
    print(f"{describe(device)} unit {device.unit}: {parsed.address_note}, {detail}", file=out)
    for t, sample in zip(device.tags, samples, strict=True):
        label = f"  [{t.address}]" if len(samples) > 1 else " "
        if sample.quality == Quality.GOOD:
            print(f"{label} value {sample.value!r}", file=out)
        else:
            shown = "" if sample.value is None else f"{sample.value!r} "
            print(f"{label} value {shown}({Quality(sample.quality).name.lower()}: {sample.reason})", file=out)
    if parsed.table in BIT_TABLES:
        print(f"  raw bits {' '.join('1' if b else '0' for b in raw[: len(samples)])}", file=out)
    else:
        print(
            f"  raw registers {' '.join(f'0x{r:04X}' for r in raw)}  ({', '.join(str(r) for r in raw)})",
            file=out,
        )


def main(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    # A one-shot tool reports every failure itself; pymodbus would add an ERROR line with a hex dump.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        parsed = parse_url(args.url)
        device = build_device(parsed)
    except UrlError as exc:
        print(f"mine-agent probe: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"mine-agent probe: {_validation_text(exc)}", file=sys.stderr)
        return 2
    status, samples, raw = asyncio.run(probe(device, out))
    if samples:
        _print_result(device, parsed, samples, list(raw), out)
    return status
