"""``mine-agent serial sniff PORT``: show what an instrument sends, raw and as the profile decodes it.

For a technician at the instrument: every chunk read is printed in hex and ASCII; with ``--config`` and
``--device`` each frame the profile accepts is printed with the tag values decoded from it, and each skipped
segment with the reason the driver would count (noise, bad checksum, ...). ``--poll`` sends the device's
poll command to each address at its interval, for instruments that only speak when asked.
The port is opened exactly as the driver opens it (exclusive lock): stop the agent first.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import serial
from pydantic import ValidationError

from agent.core.errors import AgentError, ConfigError, ConfigProblem
from agent.core.sample import Quality
from drivers.serial.config import SerialDevice
from drivers.serial.decoding import DecodeError
from drivers.serial.samples import TagMapper

_ROW = 16
_PARITY = {"none": "N", "even": "E", "odd": "O", "mark": "M", "space": "S"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sniff = sub.add_parser(
        "sniff", help="print raw frames (hex + ASCII) and what a profile decodes from them"
    )
    sniff.add_argument("port", help="serial device, e.g. /dev/ttyUSB0")
    sniff.add_argument("--baud", type=int, help="baud rate (default: the device's, else 9600)")
    sniff.add_argument("--parity", choices=sorted(_PARITY), help="default: the device's, else none")
    sniff.add_argument("--bytesize", type=int, choices=[5, 6, 7, 8], help="default: the device's, else 8")
    sniff.add_argument("--stopbits", type=float, choices=[1, 1.5, 2], help="default: the device's, else 1")
    sniff.add_argument("--config", type=Path, help="agent configuration file holding the device's profile")
    sniff.add_argument("--device", help="device name in --config (optional if it has one serial device)")
    sniff.add_argument(
        "--poll", action="store_true", help="send the device's poll command (poll-mode profiles)"
    )
    sniff.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sniff.add_argument("--frames", type=int, default=None, help="stop after this many accepted frames")


def load_device(path: Path, name: str | None) -> tuple[str, SerialDevice]:
    """The named serial device of an agent config file, validated alone (other sections may be absent)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", str(exc))], path=str(path)) from exc
    devices = {k: v for k, v in data.get("devices", {}).items() if isinstance(v, dict)}
    serial_names = [k for k, v in devices.items() if v.get("protocol") == "serial"]
    if name is None:
        if len(serial_names) != 1:
            raise AgentError(f"{path}: name the device with --device (serial devices: {serial_names})")
        name = serial_names[0]
    if name not in serial_names:
        raise AgentError(f"{path}: no serial device {name!r} (serial devices: {serial_names})")
    try:
        return name, SerialDevice.model_validate(devices[name])
    except ValidationError as exc:
        problems = [
            ConfigProblem(str(path), None, ".".join(["devices", name, *map(str, e["loc"])]), e["msg"])
            for e in exc.errors()
        ]
        raise ConfigError(problems, path=str(path)) from exc


def hexdump(data: bytes) -> list[str]:
    """Rows of ``hex bytes |ascii|``, 16 bytes a row, non-printable bytes shown as '.'."""
    rows = []
    for at in range(0, len(data), _ROW):
        chunk = data[at : at + _ROW]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        rows.append(f"{chunk.hex(' '):<{_ROW * 3 - 1}}  |{text}|")
    return rows


class Sniffer:
    """Formats what is read; kept apart from the port loop so it can be fed bytes directly."""

    def __init__(
        self, out: TextIO, device_name: str | None = None, device: SerialDevice | None = None
    ) -> None:
        self.out = out
        self.device = device
        self.frames = 0
        self._events: list[tuple[str, bytes]] = []
        if device is not None and device_name is not None:
            self.framer = device.framer(trace=lambda kind, raw: self._events.append((kind, raw)))
            self.decoder = device.decoder()
            self.mapper = TagMapper(device_name, device.tags)
            self.units = {f"{device_name}.{t.name}": t.unit or "" for t in device.tags}

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def received(self, data: bytes) -> None:
        stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
        self._print(f"{stamp} rx {len(data)} bytes")
        if self.device is None:
            for row in hexdump(data):
                self._print(f"    {row}")
            return
        self.framer.feed(data)
        self._show_events()

    def quiet(self) -> None:
        """The line went quiet: give up unfinished frames, as the driver does after frame_gap_s."""
        if self.device is not None and self.framer.pending:
            self.framer.expire()
            self._show_events()

    def _show_events(self) -> None:
        for kind, raw in self._events:
            if kind != "frame":
                self._print(f"  skipped: {kind}, {len(raw)} bytes")
                for row in hexdump(raw[:256]):
                    self._print(f"    {row}")
                if len(raw) > 256:
                    self._print("    ...")
                continue
            self.frames += 1
            self._print(f"  frame, {len(raw)} bytes")
            for row in hexdump(raw):
                self._print(f"    {row}")
            self._decoded(raw)
        self._events.clear()

    def _decoded(self, raw: bytes) -> None:
        assert self.device is not None
        cs = self.device.checksum_spec()
        start = len(self.device.framing.start)
        end = len(getattr(self.device.framing, "end", b""))
        body = raw[start : len(raw) - end - (cs.trailer_len if cs else 0)]
        try:
            fields = self.decoder.decode(body)
        except DecodeError as exc:
            self._print(f"    not decoded: {exc.reason} (body {body!r})")
            return
        self._print("    fields: " + ", ".join(f"{k}={v!r}" for k, v in fields.items()))
        for s in self.mapper.samples(fields, 0):
            quality = "" if s.quality is Quality.GOOD else f"  [{s.quality.name}: {s.reason}]"
            value = "-" if s.value is None else f"{s.value:g}" if isinstance(s.value, float) else str(s.value)
            self._print(f"    {s.tag} = {value} {self.units.get(s.tag, '')}".rstrip() + quality)


def _open(args: argparse.Namespace, device: SerialDevice | None) -> serial.Serial:
    def pick(cli: object, attr: str, default: object) -> object:
        return cli if cli is not None else getattr(device, attr) if device is not None else default

    parity = str(pick(args.parity, "parity", "none"))
    try:
        return serial.Serial(
            port=args.port,
            baudrate=pick(args.baud, "baudrate", 9600),
            bytesize=pick(args.bytesize, "bytesize", 8),
            parity=_PARITY[parity],
            stopbits=pick(args.stopbits, "stopbits", 1),
            timeout=0,
            exclusive=True,
        )
    except (OSError, serial.SerialException, ValueError) as exc:
        raise AgentError(
            f"cannot open {args.port}: {exc}",
            hint="stop the agent if it holds the port; check the path and the 'dialout' group",
        ) from exc


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    name, device = (None, None)
    if args.config is not None:
        name, device = load_device(args.config, args.device)
    elif args.device is not None or args.poll:
        raise AgentError("--device and --poll need --config FILE")
    if args.poll and (device is None or device.poll is None):
        raise AgentError(f"device {name!r} has no [poll] table; --poll needs a poll-mode profile")
    port = _open(args, device)
    sniffer = Sniffer(out, name, device)
    print(
        f"sniffing {args.port} at {port.baudrate} baud"
        + (f", decoding as device {name!r}" if name else "")
        + "; Ctrl-C stops",
        file=out,
        flush=True,
    )
    poller = _poller(port, device, out) if args.poll and device is not None else None
    deadline = None if args.duration is None else time.monotonic() + args.duration
    last_rx = time.monotonic()
    gap = device.frame_gap_s if device is not None else 0.5
    try:
        while deadline is None or time.monotonic() < deadline:
            if args.frames is not None and sniffer.frames >= args.frames:
                break
            if poller is not None:
                poller()
            ready, _, _ = select.select([port.fileno()], [], [], 0.1)
            if not ready:
                if time.monotonic() - last_rx >= gap:
                    sniffer.quiet()
                continue
            data = os.read(port.fileno(), 65536)
            if not data:
                print(f"{args.port}: the device disappeared (unplugged?)", file=out, flush=True)
                return 1
            last_rx = time.monotonic()
            sniffer.received(data)
    except OSError as exc:
        print(f"{args.port}: read failed: {exc}", file=out, flush=True)
        return 1
    finally:
        port.close()
    return 0


def _poller(port: serial.Serial, device: SerialDevice, out: TextIO) -> Callable[[], None]:
    """Send one address's command per call when due: the next address after timeout_s, the next round
    after interval_s, so each answer is read (by the main loop) before the next command goes out."""
    assert device.poll is not None
    poll = device.poll
    state = {"index": 0, "due": time.monotonic(), "round": time.monotonic()}

    def tick() -> None:
        now = time.monotonic()
        if now < state["due"]:
            return
        address = poll.addresses[int(state["index"])]
        command = device.poll_command(address)
        print(f"tx address {address}: {command.hex(' ')}", file=out, flush=True)
        port.write(command)
        state["index"] = (state["index"] + 1) % len(poll.addresses)
        if state["index"] == 0:
            state["due"] = max(now + poll.timeout_s, state["round"] + device.interval_s)
            state["round"] = state["due"]
        else:
            state["due"] = now + poll.timeout_s

    return tick
