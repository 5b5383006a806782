"""Exact statistics of one tag over one window: the accumulator behind each ``win`` row.

What a row holds (docs/protocol.md, table ``win``), for the samples of one tag whose timestamps fall in
``[start, end)``:

* ``count``, ``good``, ``uncertain``, ``bad``: samples by quality (``bad`` keeps its original meaning and
  includes uncertain and non-finite samples);
* over the values that *enter the statistics* -- finite numeric values (booleans as 0/1) of good quality, or
  of good and uncertain quality when ``pipeline.statistics_quality = "good_and_uncertain"``:
  ``n``, ``min``/``max`` with the timestamps ``min_ms``/``max_ms`` of their first occurrence, ``mean``,
  ``std`` (population standard deviation, ``sqrt(sum((x - mean)^2) / n)``), ``first``/``last`` (by timestamp)
  with ``first_ms``/``last_ms``, and ``twa``;
* ``quality`` (:func:`window_quality`): 0 good (``n > 0``, ``bad == 0``), 1 uncertain (``n > 0``, ``bad > 0``),
  2 bad (``n == 0``). The row's value is ``mean``, nil exactly when quality is 2.

Two ways to the same row. Samples that arrive one by one go through :class:`WindowStats`, in arrival order.
A tag that reaches the pipeline only in sample blocks during a window (agent.core.sample: all its values good,
in timestamp order, no hooks) has its row computed once, at window close, from its column of values by
:func:`column_stats` (:func:`columns_stats` for all the columns of a block layout at once, same arithmetic). Every
column except ``mean``, ``std`` and ``twa`` is identical on both paths; those
three may differ in the last bits, because they are computed differently:

* :class:`WindowStats`: mean and standard deviation use Welford's update (``delta = x - mean;
  mean += delta / n; m2 += delta * (x - mean)``): one pass, no sum of squares, so a methane reading of 1e-3
  on top of a large offset keeps its digits where the textbook ``sum(x^2)/n - mean^2`` cancels to noise or
  goes negative. The TWA area is summed sample by sample.
* :func:`column_stats`: ``mean = sum(x) / n``, with the sum exact for integer columns (raw register values)
  and correctly rounded (``math.fsum``) for float columns; then a second pass for the deviations,
  ``std = math.dist(x, [mean] * n) / sqrt(n)`` (``math.dist`` is the accurately rounded Euclidean norm of
  ``x - mean``, computed in C), so it cancels no more than Welford does. The TWA area is the exact integer
  sum, or ``fsum``, of ``value * held_ms``. A column with a non-finite value or result, or with deviations so
  large (norm above 1e150) that Welford's squares could overflow, goes through :class:`WindowStats`
  instead, so ``non_finite``, the bad count and the overflow behaviour stay those of the per-sample path.

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

__all__ = ["WindowStats", "column_stats", "columns_stats", "window_quality", "window_row"]

import math
import operator
from collections.abc import Sequence
from itertools import repeat
from typing import Any

_add = operator.add
_mul = operator.mul
_truediv = operator.truediv
_index = operator.indexOf
_fsum = math.fsum
_sqrt = math.sqrt
_dist = math.dist
_isfinite = math.isfinite
_NORM_LIMIT = 1e150  # below sqrt(float max), with room for the rounding of partial sums


def window_row(  # noqa: PLR0917 (the hot caller passes by position: see below)
    tag: Any, start: Any, dur_ms: Any, count: Any, good: Any, bad: Any, min_: Any, max_: Any, mean: Any,
    last: Any, uncertain: Any, n: Any, twa: Any, std: Any, first: Any, first_ms: Any, last_ms: Any,
    min_ms: Any, max_ms: Any, quality: Any,
) -> list[Any]:
    """The fields of a ``win`` row in the table's column order (``agent.protocol.tables.WIN_COLUMNS``, which
    the tests check these parameters against), the one place a row is laid out: each argument is one row's
    value, or, for rows kept as columns (:class:`agent.pipeline.column_rows.ColumnRows`), the column of every
    row's values.

    Callers name each field (``min_``/``max_`` are the columns ``min``/``max``), except where a row is made per
    tag and window on the per-sample path: there a call by keyword would cost about ten times one by position
    (some 0.8 µs more per row: near a tenth more per sample at one sample a second in 10 s windows)."""
    return [
        tag, start, dur_ms, count, good, bad, min_, max_, mean, last, uncertain, n, twa, std, first, first_ms,
        last_ms, min_ms, max_ms, quality,
    ]


def window_quality(n: int, bad: int) -> int:
    """A window row's ``quality``: 0 good (values in the statistics, no bad or uncertain sample), 1 uncertain
    (values, but also bad or uncertain samples), 2 bad (no value in the statistics, so ``mean``, the row's
    value, is nil)."""
    if not n:
        return 2
    return 1 if bad else 0


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


def column_stats(
    values: Sequence[Any], ts_ms: Sequence[int], held_ms: Sequence[int], lead_ms: int, carry: float | None
) -> tuple[Any, ...] | None:
    """``(mean, std, twa, min, min_ms, max, max_ms)`` of one tag's good values in one window, or None when
    the column needs the per-sample path (a non-finite value or sum).

    ``values`` arrive in timestamp order (``ts_ms`` non-decreasing; equal times keep arrival order);
    ``held_ms[i]`` is how long value ``i`` holds (to the next timestamp, the last one to the window end);
    ``carry`` is the value held in from the previous window, which holds for ``lead_ms`` (window start to
    the first timestamp), or None. Built from C-level builtins over the column: this runs once per tag per
    window instead of once per sample."""
    n = len(values)
    # A column holds one kind of number (its layout's raw format, transformed or not), so the first value's
    # exact type says whether the sums below can be exact integer sums.
    if type(values[0]) is int:  # raw integers: exact sums
        mean = sum(values) / n
        area: Any = sum(map(_mul, values, held_ms))
    else:
        try:
            total = _fsum(values)
            if total - total:  # NaN or infinite
                return None
            mean = total / n
            area = _fsum(map(_mul, values, held_ms))
        except (OverflowError, ValueError):  # an intermediate sum overflowed, or inf - inf
            return None
    norm = _dist(values, (mean,) * n)
    if not norm < _NORM_LIMIT:  # Welford's m2 (the square) may overflow there: let it, on its own path
        return None
    std = norm / _sqrt(n)
    covered = sum(held_ms)
    if carry is not None:
        area += carry * lead_ms
        covered += lead_ms
    twa = area / covered
    if twa - twa:
        return None
    low = min(values)
    high = max(values)
    return mean, std, twa, low, ts_ms[values.index(low)], high, ts_ms[values.index(high)]


def columns_stats(
    columns: Sequence[Sequence[Any]], ts_ms: Sequence[int], held_ms: Sequence[int], lead_ms: int,
    carries: Sequence[int | float | None], *, exact: bool,
) -> tuple[list[Any], ...] | None:
    """:func:`column_stats` of many columns sharing their timestamps, as lists
    ``(means, stds, twas, mins, min_ms, maxs, max_ms)``, with the same arithmetic (so the same results), or
    None when some column needs the per-sample path (then :func:`column_stats` tells which).

    ``exact``: every column holds raw integers (sums are exact ``sum``; never non-finite); otherwise sums
    are ``fsum``. Every step maps a builtin over all columns: the Python-level work is per window and
    layout, not per tag."""
    n = len(ts_ms)
    total: Any = sum if exact else _fsum
    try:
        totals = list(map(total, columns))
        if not exact and not all(map(_isfinite, totals)):
            return None
        means = list(map(_truediv, totals, repeat(n)))
        norms = list(map(_dist, columns, map(tuple, map(repeat, means, repeat(n)))))
        if not exact and not max(norms) < _NORM_LIMIT:
            return None
        areas = list(map(total, map(map, repeat(_mul), columns, repeat(held_ms))))
    except (OverflowError, ValueError):  # an intermediate sum overflowed, or inf - inf
        return None
    stds = list(map(_truediv, norms, repeat(_sqrt(n))))
    covered = sum(held_ms)
    known = carries.count(None)
    if known == 0:
        twas = list(map(_truediv, map(_add, areas, map(_mul, carries, repeat(lead_ms))), repeat(covered + lead_ms)))
    elif known == len(carries):
        twas = list(map(_truediv, areas, repeat(covered)))
    else:
        twas = [
            area / covered if carry is None else (area + carry * lead_ms) / (covered + lead_ms)
            for area, carry in zip(areas, carries, strict=True)
        ]
    if not exact and not all(map(_isfinite, twas)):
        return None
    lows = list(map(min, columns))
    highs = list(map(max, columns))
    at = ts_ms.__getitem__
    low_ms = list(map(at, map(_index, columns, lows)))
    high_ms = list(map(at, map(_index, columns, highs)))
    return means, stds, twas, lows, low_ms, highs, high_ms
