"""What a driver produces: one reading of one tag.

A ``Sample`` is a plain named tuple because the agent creates one per register per poll: at 10,000 tags
a second it is the most numerous object in the process, and a tuple is the cheapest immutable record
Python offers.
"""

from __future__ import annotations

__all__ = ["Quality", "Sample", "SampleSink"]

import enum
from collections.abc import Callable, Sequence
from typing import NamedTuple


class Quality(enum.IntEnum):
    """How far a value can be trusted. Encoded on the wire as this integer (docs/protocol.md)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Sample(NamedTuple):
    """One reading.

    ``tag`` is the full tag name ``"<device>.<tag>"``; ``ts_ms`` is the acquisition time in Unix
    milliseconds (UTC). A bad sample has ``value`` None and a short ``reason`` such as
    ``"timeout"`` or ``"modbus exception 2 (illegal data address)"``.
    """

    tag: str
    ts_ms: int
    value: float | int | bool | str | None
    quality: Quality = Quality.GOOD
    reason: str | None = None


SampleSink = Callable[[Sequence[Sample]], None]
"""Where a driver hands the samples of one poll. Synchronous and non-blocking: it only queues work."""
