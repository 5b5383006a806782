"""Report by exception: which raw samples of a tag are worth sending.

A sample is sent when it differs from the *last sent* value by more than the absolute deadband, or by more
than the percent deadband of the last sent value's magnitude (whichever of the two is configured; with both,
exceeding either is enough), or when its quality differs from the last
sent one, or when ``heartbeat_s`` has passed since the last sent sample (so an unchanged value is still
confirmed: silence then means "no data", never "no change"). The first sample is always sent. Comparing with
the last *sent* value, not the last read one, keeps a slow drift from hiding below the deadband forever.

Values that cannot be compared (text, a number after text) are sent when they are not equal. Window
aggregates are not affected: every sample still enters its window.
"""

from __future__ import annotations

__all__ = ["Deadband"]

import math
from typing import Any


class Deadband:
    """The filter of one tag; :meth:`passes` is called once per sample of that tag."""

    __slots__ = (
        "absolute", "heartbeat_ms", "last_quality", "last_ts", "last_value", "percent", "sent", "suppressed",
    )

    def __init__(self, *, absolute: float | None = None, percent: float | None = None,
                 heartbeat_s: float = 0.0) -> None:
        """``absolute`` in the tag's unit, ``percent`` of the last sent value; None means not used (a change
        must exceed at least one deadband that is used). ``heartbeat_s`` 0 means no heartbeat."""
        self.absolute = math.inf if absolute is None else absolute
        self.percent = math.inf if percent is None else percent / 100.0
        self.heartbeat_ms = int(heartbeat_s * 1000)
        self.last_value: Any = None
        self.last_quality = -1
        self.last_ts = 0
        self.sent = 0
        self.suppressed = 0

    def passes(self, ts: int, value: Any, quality: int) -> bool:
        """Whether this sample is sent; if so it becomes the reference for the next ones."""
        last = self.last_value
        if quality == self.last_quality and not (self.heartbeat_ms and ts - self.last_ts >= self.heartbeat_ms):
            if value == last:
                self.suppressed += 1
                return False
            kind = type(value)
            if (kind is float or kind is int) and (type(last) is float or type(last) is int):
                change = abs(value - last)
                # Binary rounding: 1.1 - 1.0 is 0.10000000000000009, which must not "exceed" a 0.1 deadband.
                slack = 1e-9 * max(abs(value), abs(last))
                if change <= self.absolute + slack and change <= self.percent * abs(last) + slack:
                    self.suppressed += 1
                    return False
        self.last_value = value
        self.last_quality = quality
        self.last_ts = ts
        self.sent += 1
        return True
