"""docs/protocol.md §3.3 states the bounds of agent/protocol/limits.py, with their values."""

from __future__ import annotations

import pytest

from agent.protocol import limits
from tests.receiver.protocol_example import DOC


def _bounds_section() -> str:
    text = DOC.read_text()
    return text.split("### 3.3 Bounds", 1)[1].split("\n## ", 1)[0]


def _spaced(n: int) -> str:
    """A number as the document writes it: digits grouped by spaces, 200 000."""
    return f"{n:,}".replace(",", " ")


@pytest.mark.parametrize(("value", "text"), [
    (limits.MAX_FRAME_BYTES, f"16 MiB ({_spaced(limits.MAX_FRAME_BYTES)} bytes)"),
    (limits.MAX_BODY_BYTES, f"64 MiB ({_spaced(limits.MAX_BODY_BYTES)} bytes)"),
    (limits.MAX_ZSTD_WINDOW_BYTES, "window of at most 8 MiB"),
    (limits.MAX_ROWS_PER_BATCH, f"at most {_spaced(limits.MAX_ROWS_PER_BATCH)}"),
    (limits.MAX_BODY_CELLS, f"at most {_spaced(limits.MAX_BODY_CELLS)}"),
    (limits.MAX_TABLES, f"at most {limits.MAX_TABLES}\n"),
    (limits.MAX_COLUMNS, f"at most {limits.MAX_COLUMNS}\n"),
    (limits.MAX_STRING_BYTES, f"at most {_spaced(limits.MAX_STRING_BYTES)} bytes of UTF-8"),
    (limits.MAX_STRING_CHARS, f"({limits.MAX_STRING_CHARS} characters"),
    (limits.MAX_ID_CHARS, f"strings of 1 to {limits.MAX_ID_CHARS} characters"),
    (limits.MAX_TAG_CHARS, f"strings of 1 to {limits.MAX_TAG_CHARS} characters"),
    (limits.MAX_SEQ, "1 to 2⁶³ − 1"),
    (limits.MAX_TIME_MS, "from 0 to 2⁵³"),
    (limits.MAX_REASON_CHARS, f"at most {limits.MAX_REASON_CHARS} characters"),
    (limits.MAX_HEADER_KEYS, f"a map of at most {limits.MAX_HEADER_KEYS} keys"),
    (limits.MAX_HEADER_CONTAINERS, f"at most {limits.MAX_HEADER_CONTAINERS} arrays and maps, the header map"),
], ids=lambda v: str(v)[:20])
def test_each_bound_is_documented_with_its_value(value: int, text: str) -> None:
    """The bounds table (and its paragraph) states each value of limits.py as it is."""
    section = _bounds_section().replace(" |", "\n")
    assert text in section, f"docs/protocol.md §3.3 does not state {text!r}"


def test_the_named_powers_are_the_values() -> None:
    """The powers of two the document writes are the limits' values."""
    assert (limits.MAX_SEQ, limits.MAX_TIME_MS) == (2**63 - 1, 2**53)
    assert (limits.MAX_FRAME_BYTES, limits.MAX_BODY_BYTES, limits.MAX_ZSTD_WINDOW_BYTES) == (16 << 20, 64 << 20,
                                                                                              8 << 20)
