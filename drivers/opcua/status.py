"""OPC UA status codes to sample quality.

OPC UA Part 4 §7.39: the top two bits of a StatusCode are its severity (00 Good, 01 Uncertain, 10/11 Bad);
the low 16 bits are flags, of which the DataValue InfoType (bit 10) with the Overflow bit (bit 7) says the
server's monitored-item queue overflowed and dropped values before this one. Names are looked up on the
code with those flag bits masked off, so "Good, overflow" still reads "Good".
"""

from __future__ import annotations

__all__ = ["overflowed", "quality_of", "status_name"]

from functools import lru_cache

from agent.core.sample import Quality

_SEVERITY_SHIFT = 30
_CODE_MASK = 0xFFFF0000
_INFO_DATAVALUE = 0x400
_OVERFLOW = 0x80
_QUALITY_BY_SEVERITY = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)


def quality_of(code: int) -> Quality:
    """The sample quality a status code stands for."""
    return _QUALITY_BY_SEVERITY[(code >> _SEVERITY_SHIFT) & 3]


def overflowed(code: int) -> bool:
    """True when the server says values were lost in its queue before this one."""
    return code & (_INFO_DATAVALUE | _OVERFLOW) == (_INFO_DATAVALUE | _OVERFLOW)


@lru_cache(maxsize=256)
def status_name(code: int) -> str:
    """``BadNodeIdUnknown`` for 0x80340000; a hex number for codes the specification does not name."""
    from asyncua.ua import status_codes

    masked = code & _CODE_MASK
    try:
        name, doc = status_codes.get_name_and_doc(masked)
    except KeyError:
        return f"0x{masked:08X}"
    return f"0x{masked:08X}" if doc.startswith("Unknown StatusCode") else name
