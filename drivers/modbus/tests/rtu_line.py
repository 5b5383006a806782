"""A simulated RS-485 line with Modbus RTU units behind a pseudo-terminal, honouring the line's timing.

The agent opens :attr:`RtuLine.port` (the slave side of an ``os.openpty()`` pair) as its serial port; this
simulator serves the master side. A pty moves bytes instantly, so the simulator models the wire itself:
a frame of ``n`` bytes occupies the line for ``n`` character times (start bit + 8 data bits + parity + stop
bits, over the baud rate), a unit recognises the end of a request after 3.5 character times of silence
(1.75 ms above 19200 baud, Modbus over Serial Line V1.02 §2.5.1.1), then answers after its turnaround time,
and the answer is handed to the pty when its last character would have arrived. A request that starts
before 3.5 characters of silence after the previous answer is counted in ``gap_violations``. Line busy time
and useful register bytes are counted so bus efficiency can be measured.

Faults for tests: a unit id not configured never answers (as on a real bus); ``RtuUnit.exception`` answers
every request with that exception code; ``RtuUnit.silent`` makes a configured unit stop answering;
``garbage`` bytes are sent before the next answer; ``corrupt_crc`` flips the CRC of the next answer.
"""

from __future__ import annotations

__all__ = ["RtuLine", "RtuUnit", "crc16"]

import asyncio
import contextlib
import os
import struct
import termios
import tty
from dataclasses import dataclass, field

from drivers.serial.checksum import crc16_modbus


def crc16(data: bytes) -> bytes:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF), low byte first as sent on the wire."""
    return struct.pack("<H", crc16_modbus(data))


@dataclass
class RtuUnit:
    """One unit on the line: 65536 of each table, all zero until set."""

    holding: list[int] = field(default_factory=lambda: [0] * 65536)
    input: list[int] = field(default_factory=lambda: [0] * 65536)
    coils: list[bool] = field(default_factory=lambda: [False] * 65536)
    discrete: list[bool] = field(default_factory=lambda: [False] * 65536)
    exception: int | None = None
    silent: bool = False
    turnaround_s: float = 0.0
    limit: int = 125  # most registers served per request; more is exception 3
    undefined: set[int] = field(default_factory=set)  # register addresses that answer exception 2
    requests: int = 0


class RtuLine:
    """The master side of a pty pair acting as an RS-485 line with several units (see module docstring)."""

    def __init__(
        self, units: dict[int, RtuUnit], *, baudrate: int = 19200, parity: str = "E", stopbits: int = 1
    ) -> None:
        self.units = units
        self.baudrate = baudrate
        self.bits_per_char = 1 + 8 + (0 if parity == "N" else 1) + stopbits
        self.char_s = self.bits_per_char / baudrate
        self.t35_s = 3.5 * self.char_s if baudrate <= 19200 else 0.00175
        self.garbage = b""
        self.corrupt_crc = False
        # accounting
        self.transactions = 0
        self.unanswered = 0
        self.gap_violations = 0
        self.crc_errors_seen = 0
        self.busy_s = 0.0
        self.useful_bytes = 0
        self._master = -1
        self._slave = -1
        self.port = ""
        self._buffer = bytearray()
        self._frame_started = 0.0
        self._line_free_at = 0.0
        self._pending: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._master, termios.TCSANOW)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._master, self._on_readable)

    async def stop(self) -> None:
        if self._loop is not None and self._master >= 0:
            self._loop.remove_reader(self._master)
        if self._pending is not None:
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    async def __aenter__(self) -> RtuLine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, OSError):
            return
        now = asyncio.get_running_loop().time()
        if not self._buffer:
            self._frame_started = now
            if now < self._line_free_at + self.t35_s - 1e-4:
                self.gap_violations += 1
        self._buffer += data
        self._try_frame()

    def _try_frame(self) -> None:
        # Every request this simulator understands (FC 1-4) is 8 bytes; hunt byte by byte on a bad CRC.
        while len(self._buffer) >= 8:
            frame = bytes(self._buffer[:8])
            if crc16(frame[:6]) != frame[6:]:
                self.crc_errors_seen += 1
                del self._buffer[0]
                continue
            del self._buffer[:8]
            started = self._frame_started
            self._pending = asyncio.get_running_loop().create_task(self._answer(frame, started))
            self._frame_started = asyncio.get_running_loop().time()

    async def _answer(self, request: bytes, started: float) -> None:
        loop = asyncio.get_running_loop()
        self.transactions += 1
        unit_id, function, address, count = struct.unpack(">BBHH", request[:6])
        request_end = started + len(request) * self.char_s
        unit = self.units.get(unit_id)
        if unit is None or unit.silent:
            self.unanswered += 1
            self._line_free_at = request_end
            self.busy_s += len(request) * self.char_s
            return
        unit.requests += 1
        pdu, useful = self._pdu(unit, function, address, count)
        response = bytes([unit_id]) + pdu
        response += crc16(response)
        if self.corrupt_crc:
            self.corrupt_crc = False
            response = response[:-1] + bytes([response[-1] ^ 0xFF])
        response = self.garbage + response
        self.garbage = b""
        answer_start = request_end + self.t35_s + unit.turnaround_s
        answer_end = answer_start + len(response) * self.char_s
        self._line_free_at = answer_end
        self.busy_s += (len(request) + len(response)) * self.char_s
        self.useful_bytes += useful
        await asyncio.sleep(max(0.0, answer_end - loop.time()))
        with contextlib.suppress(OSError):
            os.write(self._master, response)

    @staticmethod
    def _pdu(unit: RtuUnit, function: int, address: int, count: int) -> tuple[bytes, int]:
        if unit.exception is not None:
            return bytes([function | 0x80, unit.exception]), 0
        if function in (3, 4):
            if not 1 <= count <= unit.limit:
                return bytes([function | 0x80, 3]), 0
            table = unit.holding if function == 3 else unit.input
            if address + count > len(table) or any(
                a in unit.undefined for a in range(address, address + count)
            ):
                return bytes([function | 0x80, 2]), 0
            data = struct.pack(f">{count}H", *table[address : address + count])
            return bytes([function, len(data)]) + data, len(data)
        if function in (1, 2):
            if not 1 <= count <= 2000:
                return bytes([function | 0x80, 3]), 0
            bits = (unit.coils if function == 1 else unit.discrete)[address : address + count]
            packed = bytearray((count + 7) // 8)
            for i, bit in enumerate(bits):
                if bit:
                    packed[i // 8] |= 1 << (i % 8)
            return bytes([function, len(packed)]) + bytes(packed), len(packed)
        return bytes([function | 0x80, 1]), 0
