"""Frame checksums of serial instruments, and where a checksum sits in a frame.

Supported algorithms (``ALGORITHMS``), each with its catalogue check value over ``b"123456789"``:

* ``sum8``: sum of the covered bytes modulo 256 (check 0xDD).
* ``xor8``: XOR of the covered bytes, as in NMEA 0183 (check 0x31).
* ``crc16-modbus``: CRC-16/MODBUS, poly 0x8005 reflected (0xA001), init 0xFFFF, no final XOR (check 0x4B37).
* ``crc16-ccitt``: CRC-16/CCITT-FALSE (also called CRC-16/IBM-3740), poly 0x1021 not reflected, init 0xFFFF,
  no final XOR (check 0x29B1). This is what most instrument manuals mean by "CRC-CCITT".
* ``crc16-xmodem``: CRC-16/XMODEM, the same polynomial with init 0x0000 (check 0x31C3), for the manuals
  whose "CCITT" example values do not match the one above.

Placement is one rule for every framing: the checksum field is the **last bytes of the frame before the end
marker** (or the last bytes of a length-framed frame), optionally preceded by a ``separator`` that is not
covered (NMEA's ``*``). It covers the frame bytes from offset ``cover_from`` (counted from the first byte
of the frame, start marker included) up to, not including, the separator or the checksum field. It is
written either in ``binary`` (1 or 2 bytes, in ``byte_order``) or as ``hex`` ASCII digits (2 or 4, either
case accepted).
"""

from __future__ import annotations

__all__ = ["ALGORITHMS", "ChecksumSpec", "crc16_ccitt", "crc16_modbus", "crc16_xmodem", "sum8", "xor8"]

import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def sum8(data: bytes) -> int:
    """Arithmetic sum of the bytes, modulo 256."""
    return sum(data) & 0xFF


def xor8(data: bytes) -> int:
    """XOR of all bytes; folds the data as one big integer: log2(n) C-level operations, not n Python steps."""
    n = len(data)
    if n == 0:
        return 0
    value = int.from_bytes(data, "little")
    width = 8 << (n - 1).bit_length()  # n bytes rounded up to a power of two, in bits
    while width > 8:
        width //= 2
        value = (value >> width) ^ (value & ((1 << width) - 1))
    return value


def _modbus_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_MODBUS_TABLE = _modbus_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (reflected 0x8005, init 0xFFFF). Sent low byte first on the wire in Modbus RTU."""
    crc = 0xFFFF
    table = _MODBUS_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (0x1021, init 0xFFFF); ``binascii.crc_hqx`` computes exactly this in C."""
    return binascii.crc_hqx(data, 0xFFFF)


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (0x1021, init 0x0000)."""
    return binascii.crc_hqx(data, 0)


ChecksumName = Literal["sum8", "xor8", "crc16-modbus", "crc16-ccitt", "crc16-xmodem"]

ALGORITHMS: dict[str, tuple[Callable[[bytes], int], int]] = {
    # name -> (function, width in bytes)
    "sum8": (sum8, 1),
    "xor8": (xor8, 1),
    "crc16-modbus": (crc16_modbus, 2),
    "crc16-ccitt": (crc16_ccitt, 2),
    "crc16-xmodem": (crc16_xmodem, 2),
}


@dataclass(frozen=True, slots=True)
class ChecksumSpec:
    """Which algorithm, how it is written, and which bytes it covers (see the module docstring)."""

    algorithm: str
    encoding: Literal["binary", "hex"] = "binary"
    byte_order: Literal["big", "little"] = "big"
    separator: bytes = b""
    cover_from: int = 0
    # Derived once, because check() runs for every frame.
    width: int = field(init=False, repr=False, compare=False)
    """Size of the checksum value in bytes (1 or 2)."""
    field_len: int = field(init=False, repr=False, compare=False)
    """Bytes the checksum field takes in the frame (two hex digits per byte in ``hex``)."""
    trailer_len: int = field(init=False, repr=False, compare=False)
    """Bytes at the end of the frame (before the end marker) that are separator plus checksum."""
    compute: Callable[[bytes], int] = field(init=False, repr=False, compare=False)
    """The algorithm's function."""

    def __post_init__(self) -> None:
        function, width = ALGORITHMS[self.algorithm]
        field_len = width * 2 if self.encoding == "hex" else width
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "field_len", field_len)
        object.__setattr__(self, "trailer_len", len(self.separator) + field_len)
        object.__setattr__(self, "compute", function)

    def encode(self, value: int) -> bytes:
        if self.encoding == "hex":
            return b"%0*X" % (self.field_len, value)
        return value.to_bytes(self.width, self.byte_order)

    def check(self, frame: bytes) -> bool:
        """True if ``frame`` (start marker to checksum, end marker excluded) carries a correct checksum."""
        trailer = self.trailer_len
        n = len(frame)
        if n < self.cover_from + trailer:
            return False
        field = frame[n - self.field_len :]
        if self.separator and frame[n - trailer : n - self.field_len] != self.separator:
            return False
        if self.encoding == "hex":
            if not _HEX_DIGITS.issuperset(field):
                return False
            received = int(field, 16)
        else:
            received = int.from_bytes(field, self.byte_order)
        return received == self.compute(frame[self.cover_from : n - trailer])

    def append(self, frame: bytes) -> bytes:
        """``frame`` (start marker and data, no end marker) with separator and checksum appended.

        Used to build poll commands and, in tests and profiles, instrument output.
        """
        return frame + self.separator + self.encode(self.compute(frame[self.cover_from :]))
