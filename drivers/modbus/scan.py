"""``mine-agent scan URL``: list the Modbus unit ids that answer on a bus or behind a gateway.

For commissioning an RS-485 line: which addresses are set on the meters actually wired. Each unit id is
asked for one register (holding register 0 unless the URL names another, e.g. ``/0/ir/30001``); a unit
that answers, even with an exception, is present. Exception 10/11 (gateway path unavailable / target did
not respond) mean nobody is there. ``mine-agent scan 'modbus-rtu:///dev/ttyUSB0?baud=9600&parity=E'
--units 1-32``.

Exit status: 0 some unit answered, 1 none did or the connection failed, 2 the URL or unit list is wrong.
"""

from __future__ import annotations

__all__ = ["add_arguments", "main", "parse_units", "scan"]

import argparse
import asyncio
import logging
import sys
from typing import TextIO

from pydantic import ValidationError

from agent.core.clock import SystemClock
from drivers.modbus.config import ModbusDevice
from drivers.modbus.link import (
    ExceptionResponseError,
    ModbusLink,
    NoResponseError,
    NotConnectedError,
    describe,
    registers_of,
)
from drivers.modbus.probe import _DEVICE, _validation_text
from drivers.modbus.url import UrlError, parse_url

GATEWAY_NOBODY_THERE = (10, 11)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url", help="the bus: 'modbus-rtu:///dev/ttyUSB0?baud=9600&parity=E' or 'modbus://HOST:PORT'"
    )
    parser.add_argument(
        "--units", default="1-247", help="unit ids to try, e.g. '1-32' or '1,2,10-12' (default 1-247)"
    )
    parser.add_argument(
        "--timeout", type=float, default=0.3, help="seconds to wait for each unit (default 0.3)"
    )


def parse_units(text: str) -> list[int]:
    """'1-3,7' -> [1, 2, 3, 7]; raises UrlError for anything outside 0-255."""
    units: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise UrlError(f"unit list {text!r}: {part!r} is not a number or range like 1-32") from None
        if not 0 <= first <= last <= 255:
            raise UrlError(f"unit list {text!r}: {part!r} must be within 0-255, low to high")
        units.extend(range(first, last + 1))
    return sorted(set(units))


async def scan(device: ModbusDevice, units: list[int], out: TextIO) -> list[int]:
    """Try each unit once; print one line per unit that answers; return their ids."""
    link = ModbusLink(device, SystemClock())
    tag = device.tags[0]
    function_code = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}[tag.table]
    found: list[int] = []
    try:
        if not await link.ensure_connected():
            print(f"cannot connect: {link.last_error}", file=out)
            return []
        print(
            f"scanning {describe(device)}, units {units[0]}-{units[-1]} ({len(units)}), "
            f"{tag.table} {tag.address}",
            file=out,
        )
        for unit in units:
            try:
                values = await link.read(
                    unit, function_code, tag.address, 1, timeout_s=device.timeout_s, retries=0
                )
            except ExceptionResponseError as exc:
                if exc.code in GATEWAY_NOBODY_THERE:
                    continue
                found.append(unit)
                print(f"unit {unit}: answers with {exc.reason}", file=out)
            except NoResponseError:
                continue
            except NotConnectedError as exc:
                print(f"connection lost at unit {unit}: {exc.reason}", file=out)
                break
            else:
                found.append(unit)
                shown = bool(values[0]) if isinstance(values, list) else registers_of(values)[0]
                print(f"unit {unit}: answers ({tag.table} {tag.address} = {shown})", file=out)
    finally:
        link.close()
    print(f"{len(found)} unit(s) answer: {', '.join(map(str, found)) or 'none'}", file=out)
    return found


def main(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    # A one-shot tool reports every failure itself; pymodbus would add an ERROR line with a hex dump.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        parsed = parse_url(args.url, need_address=False)
        units = parse_units(args.units)
        table = parsed.table or "holding"
        address = parsed.address or 0
        device = _DEVICE.validate_python(
            {
                "timeout_s": args.timeout,
                "retries": 0,
                **parsed.device,
                "tags": [{"name": "probe", "table": table, "address": address}],
            }
        )
    except UrlError as exc:
        print(f"mine-agent scan: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"mine-agent scan: {_validation_text(exc)}", file=sys.stderr)
        return 2
    found = asyncio.run(scan(device, units, out))
    return 0 if found else 1
