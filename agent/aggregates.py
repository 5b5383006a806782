"""Exact statistics of one tag over one window: the accumulator behind each ``win`` row.

What a row holds (docs/protocol.md, table ``win``), for the samples of one tag whose timestamps fall in
``[start, end)``:

* ``count``, ``good``, ``uncertain``, ``bad``: samples by quality (``bad`` keeps its original meaning and
  includes uncertain and non-finite samples);
* over the values that *enter the statistics* -- finite numeric values (booleans as 0/1) of good quality, or
  of good and uncertain quality when ``pipeline.statistics_quality = "good_and_uncertain"``:
  ``n``, ``min``/``max`` with the timestamps ``min_ms``/``max_ms`` of their first occurrence, ``mean``,
  ``std`` (population standard deviation, ``sqrt(sum((x - mean)^2) / n)``), ``first``/``last`` (by timestamp)
  with ``first_ms``/``last_ms``, and ``twa``.

Mean and standard deviation use Welford's update (``delta = x - mean; mean += delta / n;
m2 += delta * (x - mean)``): one pass, no sum of squares, so a methane reading of 1e-3 on top of a large
offset keeps its digits where the textbook ``sum(x^2)/n - mean^2`` cancels to noise or goes negative.

**Time-weighted average** (sample-and-hold). Each sample holds its value from its own timestamp until the
next sample of the tag (of any quality) or the window end. A value that enters the statistics contributes
``value * held_ms``; a sample that does not (bad, uncertain, non-finite, text) holds "unknown" and
contributes nothing. The value held at the window start is the tag's last sample of the *previous* window
(``[start - window, start)``), carried in; with no sample there, the time before the first sample is not
covered. ``twa = sum(value * held_ms) / sum(held_ms over known values)``, nil when nothing is covered.
So a value read at :00 and :09 of a 10 s window weighs 9 s and 1 s, not half and half, which is what an
exposure figure needs when polls are irregular or a device answers slowly.

A sample older than the tag's latest one in the same window (out of order) enters every statistic except
the TWA, whose timeline has already been integrated past it; it is counted in ``out_of_order``.
"""

from __future__ import annotations

__all__ = ["WindowStats"]

import math
from typing import Any


class WindowStats:
    """Accumulator of one tag in one window. ``add`` is called once per sample on the hot path."""

    __slots__ = (
        "area", "bad", "count", "covered", "first", "first_ms", "good", "hold_ms", "hold_value", "last",
        "last_ms", "m2", "max", "max_ms", "mean", "min", "min_ms", "n", "out_of_order", "uncertain",
    )

    def __init__(self, carry_ms: int | None = None, carry_value: float | None = None) -> None:
        """``carry_ms``/``carry_value``: the window start and the value held into it from the previous
        window (``carry_value`` None means the held value is unknown)."""
        self.count = 0
        self.good = 0
        self.uncertain = 0
        self.bad = 0
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min: float | None = None
        self.min_ms = 0
        self.max: float | None = None
        self.max_ms = 0
        self.first: Any = None
        self.first_ms = 0
        self.last: Any = None
        self.last_ms = 0
        self.area = 0.0
        self.covered = 0
        self.out_of_order = 0
        self.hold_ms = carry_ms
        self.hold_value = carry_value

    def add_value(self, ts: int, value: float) -> None:
        """A finite number that enters the statistics (quality already counted by the caller).

        Written out in one method (the hold step inlined) because it runs once per sample."""
        n = self.n = self.n + 1
        mean = self.mean
        delta = value - mean
        mean += delta / n
        self.mean = mean
        self.m2 += delta * (value - mean)
        if n == 1:
            self.min = self.max = self.first = self.last = value
            self.min_ms = self.max_ms = self.first_ms = self.last_ms = ts
        else:
            low = self.min
            if value <= low and (value < low or ts < self.min_ms):  # type: ignore[operator]
                self.min, self.min_ms = value, ts
            high = self.max
            if value >= high and (value > high or ts < self.max_ms):  # type: ignore[operator]
                self.max, self.max_ms = value, ts
            if ts >= self.last_ms:
                self.last, self.last_ms = value, ts
            elif ts < self.first_ms:
                self.first, self.first_ms = value, ts
        since = self.hold_ms
        if since is not None:
            if ts < since:
                self.out_of_order += 1
                return
            held = self.hold_value
            if held is not None:
                self.area += held * (ts - since)
                self.covered += ts - since
        self.hold_ms = ts
        self.hold_value = value

    def add_text(self, ts: int, value: Any) -> None:
        """A good value without statistics (text): kept as first/last by time, holds "unknown"."""
        if self.first is None or ts < self.first_ms:
            self.first, self.first_ms = value, ts
        if self.last is None or ts >= self.last_ms:
            self.last, self.last_ms = value, ts
        self.hold(ts, None)

    def hold(self, ts: int, value: float | None) -> None:
        """Advance the sample-and-hold timeline to ``ts``, where ``value`` (None: unknown) starts holding."""
        since = self.hold_ms
        if since is None:
            self.hold_ms, self.hold_value = ts, value
            return
        if ts < since:
            self.out_of_order += 1
            return
        held = self.hold_value
        if held is not None:
            self.area += held * (ts - since)
            self.covered += ts - since
        self.hold_ms, self.hold_value = ts, value

    def twa(self, end_ms: int) -> float | None:
        """The time-weighted average of the window ending at ``end_ms`` (call once, at close)."""
        area, covered = self.area, self.covered
        since, held = self.hold_ms, self.hold_value
        if since is not None and held is not None and end_ms > since:
            area += held * (end_ms - since)
            covered += end_ms - since
        if covered <= 0:
            return None
        return area / covered

    def std(self) -> float | None:
        """Population standard deviation of the values in the statistics; nil without values."""
        if self.n == 0:
            return None
        return math.sqrt(max(0.0, self.m2 / self.n))
