"""Turn a frame body into named fields: a regular expression for ASCII, a struct layout for binary.

A body either decodes completely or raises :class:`DecodeError` with a short reason that the driver counts;
there is no partial result. Regular expressions must match the *whole* body (``fullmatch``), so a line with
trailing garbage is rejected instead of being read as far as it happens to match.
"""

from __future__ import annotations

__all__ = ["DecodeError", "Decoder", "RegexDecoder", "StructDecoder", "struct_value_count"]

import re
import struct
from typing import Protocol

FieldValue = str | int | float | bool | bytes | None


class DecodeError(Exception):
    """The body is not what the profile describes. ``reason`` is the counter key."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Decoder(Protocol):
    fields: frozenset[str]

    def decode(self, body: bytes) -> dict[str, FieldValue]:
        """All named fields of one body, or :class:`DecodeError`."""
        ...


class RegexDecoder:
    """Named groups of the first pattern that matches the whole body (decoded as Latin-1, which never fails).

    Several patterns serve instruments that send several sentence types (a weather station's wind and
    temperature sentences); a body matching none is rejected as ``no match``.
    """

    def __init__(self, patterns: list[str]) -> None:
        self.patterns = [re.compile(p) for p in patterns]
        self.fields = frozenset(name for p in self.patterns for name in p.groupindex)

    def decode(self, body: bytes) -> dict[str, FieldValue]:
        text = body.decode("latin-1")
        for pattern in self.patterns:
            m = pattern.fullmatch(text)
            if m is not None:
                return m.groupdict()
        raise DecodeError("no match")


def struct_value_count(layout: str) -> int:
    """How many values ``struct.unpack(layout, ...)`` returns (pad ``x`` gives none, ``4s`` gives one)."""
    return len(struct.unpack(layout, bytes(struct.calcsize(layout))))


class StructDecoder:
    """Fields of a binary body unpacked with a ``struct`` layout whose byte order is its first character.

    The body must be exactly ``struct.calcsize(layout)`` bytes long; anything else is ``wrong length``.
    """

    def __init__(self, layout: str, names: list[str]) -> None:
        self.struct = struct.Struct(layout)
        self.names = tuple(names)
        if struct_value_count(layout) != len(self.names):
            raise ValueError(
                f"layout {layout!r} gives {struct_value_count(layout)} values for {len(names)} names"
            )
        self.fields = frozenset(n for n in self.names if n)

    def decode(self, body: bytes) -> dict[str, FieldValue]:
        if len(body) != self.struct.size:
            raise DecodeError("wrong length")
        return {name: value for name, value in zip(self.names, self.struct.unpack(body), strict=True) if name}
