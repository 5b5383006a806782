"""Window statistics of tags read in sample blocks, computed from whole columns at window close.

A sample block (agent.core.sample: a Modbus response as bytes, one timestamp, a shared layout) is kept, per
open window and layout, as a row of bytes; at window close each tag's statistics come from its column
(:func:`agent.pipeline.aggregates.columns_stats`), so the per-value work of a poll is nil (a ``raw = true``
tag without other hooks costs only its raw row). The window rows of a layout's tags leave as one
:class:`agent.pipeline.column_rows.ColumnRows` in ``PipelineOutput.win_blocks`` (the statistics as columns,
turned into rows only when packed).

The result is the one the samples of the block would give (mean, std and twa up to the last bits), because a
tag leaves the column path for the rest of a window, with its rows so far replayed in order into a
:class:`~agent.pipeline.aggregates.WindowStats` of the per-sample path, whenever that path could differ: a tag
with hooks (deadband, alarms, calculated inputs; raw too when its layout has such tags) is always fed per
sample; a tag that also gets a sample (a failed poll's bad sample, a float layer decoded as samples because of
a NaN) or a row of another layout (a re-planned request) in the same window is replayed at that moment; a
layout whose timestamps go backwards is replayed whole; a block that arrives after its window closed is handled
as its samples by the pipeline (late, raw rows). The ``non_finite`` count of a column replayed at close is
counted then. tests/pipeline/test_blocks.py holds this module to the per-sample path on random polls.

Why a module of its own behind :class:`BlockWindows`: the column path has its own state (rows of bytes per
window and layout, which tags of a layout are fed per sample) and its own invariants; the pipeline's
per-sample loop only asks it three questions (take a tag over, what a tag holds at a window's end, close a
window) and hands it blocks. Rejected: a second accumulator type per tag beside ``WindowStats`` fed per block,
which would put back the per-value work at poll time that keeping the bytes avoids.
"""

from __future__ import annotations

__all__ = ["BlockWindows"]

import operator
from collections.abc import Callable, Iterable, Sequence
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any, Protocol

from agent.core.sample import BlockLayout, Sample, SampleBlock
from agent.pipeline.aggregates import WindowStats, column_stats, columns_stats, window_row
from agent.pipeline.column_rows import ColumnRows, Repeated

if TYPE_CHECKING:
    from agent.pipeline.calculated import Calculation

    Touched = dict[Calculation, None] | None

_first = operator.itemgetter(0)
_last = operator.itemgetter(-1)


def _held(value: Any) -> Any:
    """The value a reading leaves holding: itself, or None (unknown) for a non-finite float.

    ``type(value) is float`` because it is the cheapest exact test: an int (or bool) is always finite."""
    return None if type(value) is float and value - value else value


class _Counts(Protocol):
    """The pipeline's counters this path adds to."""

    samples: int
    non_finite: int


class _BlockRows:
    """The blocks of one layout in one open window, kept as bytes until the window closes.

    Tags whose index is in ``per_sample`` are fed per sample (hooks, or data from elsewhere in this window);
    the others have their statistics computed from the rows at close. ``carry`` is, per tag, the value held in
    from the previous window at the time the tag's first value of this window arrived (None: none)."""

    __slots__ = ("carry", "data", "layout", "per_sample", "per_sample_order", "ts")

    def __init__(self, layout: BlockLayout, per_sample: set[int], carry: list[Any]) -> None:
        self.layout = layout
        self.ts: list[int] = []
        self.data: list[bytes] = []
        self.per_sample = per_sample
        self.per_sample_order = tuple(sorted(per_sample))
        self.carry = carry


class _BlockWindow:
    """The block rows of one open window: per layout, and which rows hold each tag's column."""

    __slots__ = ("owner", "rows")

    def __init__(self) -> None:
        self.rows: dict[BlockLayout, _BlockRows] = {}
        self.owner: dict[str, _BlockRows] = {}


class BlockWindows:
    """The column path of a :class:`agent.pipeline.pipeline.Pipeline`.

    It shares with the pipeline, by reference, the per-sample accumulators (``windows``: window start -> tag
    -> WindowStats; a tag moved off the column path gets its accumulator there), the values held past closed
    windows (``carry``: tag -> (window start, value)) and the counters; ``feed`` is the per-sample path (for
    hooked tags), ``held_in`` what a tag holds into a window (None: nothing or unknown), ``close_window`` the
    row of one accumulator.
    ``hooked`` are the tags with hooks other than ``raw = true``, ``raw_only`` those whose one hook it is."""

    def __init__(
        self,
        window_ms: int,
        *,
        hooked: Iterable[str],
        raw_only: Iterable[str],
        windows: dict[int, dict[str, WindowStats]],
        carry: dict[str, tuple[int, Any]],
        stats: _Counts,
        feed: Callable[[Sequence[Sample]], Touched],
        held_in: Callable[[str, int], Any],
        close_window: Callable[[str, int, WindowStats, list[list[Any]]], None],
    ) -> None:
        self.window_ms = window_ms
        self._hooked = frozenset(hooked)
        self._raw_only = frozenset(raw_only)
        self._windows = windows
        self._carry = carry
        self._stats = stats
        self._feed = feed
        self._held_in = held_in
        self._close_window = close_window
        # window start -> block rows of that window (the window also has an entry, maybe empty, in windows).
        self._by_start: dict[int, _BlockWindow] = {}
        # layout -> (indices of its tags always fed per sample, indices that only need raw rows): _plan.
        self._plans: dict[BlockLayout, tuple[frozenset[int], tuple[int, ...]]] = {}

    # -- what the pipeline asks ----------------------------------------------------------------------------

    def keeps(self, layout: BlockLayout) -> bool:
        """Whether blocks of ``layout`` keep any tag as a column (else they are only their samples)."""
        return len(self._plan(layout)[0]) != len(layout.names)

    def add(self, block: SampleBlock, raw: list[list[Any]]) -> Touched:
        """Account for one block of an open window whose layout :meth:`keeps` columns: normally one row
        appended (and raw rows of its ``raw = true`` tags, into ``raw``); its hooked or mixed tags fed per
        sample. Returns the calculations those samples touched."""
        layout = block.layout
        ts = block.ts_ms
        start = ts - ts % self.window_ms
        _, raw_only = self._plan(layout)
        blocks = self._by_start.get(start)
        if blocks is None:
            blocks = self._by_start[start] = _BlockWindow()
            self._windows.setdefault(start, {})
        rows = blocks.rows.get(layout)
        if rows is None:
            rows = self._start_rows(blocks, layout, start)
        elif ts < rows.ts[-1]:  # time went backwards: the column path assumes order, so leave it
            self._replay(rows, [i for i in range(len(layout.names)) if i not in rows.per_sample], start)
        rows.ts.append(ts)
        rows.data.append(block.data)
        per_sample = rows.per_sample_order
        names = layout.names
        self._stats.samples += len(names) - len(per_sample)
        if not per_sample and not raw_only:
            return None
        values = layout.values(block.data)
        if not raw_only:
            return self._feed([Sample(names[i], ts, values[i]) for i in per_sample])
        if not per_sample:
            raw.extend([[names[i], ts, values[i], 0, None] for i in raw_only])
            return None
        # Both: in layout order (the order of the samples), runs of per-sample tags between raw rows.
        touched: Touched = None
        run: list[Sample] = []
        fed_per_sample = rows.per_sample
        for i in sorted({*per_sample, *raw_only}):
            if i in fed_per_sample:
                run.append(Sample(names[i], ts, values[i]))
                continue
            if run:
                found = self._feed(run)
                if found:
                    touched = found if touched is None else {**touched, **found}
                run = []
            raw.append([names[i], ts, values[i], 0, None])
        if run:
            found = self._feed(run)
            if found:
                touched = found if touched is None else {**touched, **found}
        return touched

    def take_over(self, tag: str, start: int, samples: Sequence[Sample]) -> WindowStats | None:
        """Move ``tag`` off the column path of window ``start``, because a sample of it arrived: its rows so far
        replayed into a new accumulator in ``windows``, which is returned; None when the tag has no column
        there (no rows, or already fed per sample).

        A failed poll brings a sample for every tag of a request at once, so the tags of the same rows among
        ``samples`` are replayed with it, in one pass over the rows (replaying a tag early changes nothing:
        from then on it is fed per sample, which is what it would be anyway)."""
        blocks = self._by_start.get(start)
        if blocks is None:
            return None
        rows = blocks.owner.get(tag)
        if rows is None:
            return None
        index = rows.layout.index
        i = index[tag]
        per_sample = rows.per_sample
        if i in per_sample:
            return None
        w_ms = self.window_ms
        wanted = {i}
        for s in samples:
            j = index.get(s[0])
            if j is not None and j not in per_sample and s[1] - s[1] % w_ms == start:
                wanted.add(j)
        self._replay(rows, sorted(wanted), start)
        return self._windows[start][tag]

    def held_at_end(self, tag: str, start: int, default: Any) -> Any:
        """The value ``tag``'s block rows of window ``start`` leave holding (None: unknown), or ``default``
        when it has none there."""
        blocks = self._by_start.get(start)
        rows = blocks.owner.get(tag) if blocks is not None else None
        if rows is not None and rows.ts:
            return _held(rows.layout.value(rows.data[-1], rows.layout.index[tag]))
        return default

    def close(self, start: int, out_blocks: list[ColumnRows], out_rows: list[list[Any]]) -> None:
        """The window rows of window ``start``'s tags still on the column path: one ColumnRows per layout into
        ``out_blocks``; the rows of a layout with a column that is not finite, tag by tag, into ``out_rows``.
        Called before the window's accumulators in ``windows`` are closed (a column replayed here adds one)."""
        blocks = self._by_start.pop(start, None)
        if blocks is not None:
            for rows in blocks.rows.values():
                self._close_rows(rows, start, out_blocks, out_rows)

    # -- the column path -----------------------------------------------------------------------------------

    def _plan(self, layout: BlockLayout) -> tuple[frozenset[int], tuple[int, ...]]:
        """Which tags of a layout are always fed per sample, and which only need a raw row per block.

        A tag whose one hook is ``raw = true`` keeps its statistics on the column path and gets its raw row
        straight from the block. If the layout also has tags with other hooks, those raw-only tags are fed
        per sample too, so that raw rows keep the order of the samples."""
        plan = self._plans.get(layout)
        if plan is not None:
            return plan
        hooked: list[int] = []
        raw_only: list[int] = []
        for i, name in enumerate(layout.names):
            if name in self._raw_only:
                raw_only.append(i)
            elif name in self._hooked:
                hooked.append(i)
        plan = (frozenset(hooked + raw_only), ()) if hooked else (frozenset(), tuple(raw_only))
        self._plans[layout] = plan
        return plan

    def _start_rows(self, blocks: _BlockWindow, layout: BlockLayout, start: int) -> _BlockRows:
        """The first block of a layout in a window. Its tags already fed otherwise in this window (samples,
        another layout's rows, replayed first) are fed per sample from now on, like hooked ones."""
        names = layout.names
        owner = blocks.owner
        if not owner.keys().isdisjoint(names):
            for name in names:
                other = owner.get(name)
                if other is not None and other.layout.index[name] not in other.per_sample:
                    self._replay(other, (other.layout.index[name],), start)
        bucket = self._windows[start]
        per_sample = set(self._plan(layout)[0])
        if bucket and not bucket.keys().isdisjoint(names):
            per_sample.update(i for i, name in enumerate(names) if name in bucket)
        rows = blocks.rows[layout] = _BlockRows(layout, per_sample, self._carry_in(layout, start))
        owner.update(zip(names, repeat(rows)))
        return rows

    def _carry_in(self, layout: BlockLayout, start: int) -> list[Any]:
        """Per tag of the layout, the value held into window ``start`` now (None: none or unknown)."""
        before = start - self.window_ms
        blocks = self._by_start.get(before)
        prev = blocks.rows.get(layout) if blocks is not None else None
        if prev is not None and prev.ts:  # the usual case: the same request in the previous window
            values = list(map(_held, layout.values(prev.data[-1])))
            if prev.per_sample:
                bucket = self._windows[before]
                for i in prev.per_sample:
                    win = bucket[layout.names[i]]
                    values[i] = win.hold_value if win.hold_ms is not None else None
            return values
        return [self._held_in(name, start) for name in layout.names]

    def _replay(self, rows: _BlockRows, indices: Sequence[int], start: int) -> None:
        """Move tags off the column path: feed their rows so far, in order, into new accumulators in the
        window's bucket, exactly as their samples would have been; later rows feed them per sample."""
        if not indices:
            return
        bucket = self._windows[start]
        layout = rows.layout
        names = layout.names
        wins = []
        for i in indices:
            carry = rows.carry[i]
            win = bucket[names[i]] = WindowStats(start, carry) if carry is not None else WindowStats()
            wins.append(win)
        unpack = layout.unpack
        transforms = layout.transforms
        for ts, data in zip(rows.ts, rows.data, strict=True):
            raw = unpack(data)
            for i, win in zip(indices, wins, strict=True):
                value = raw[i]
                transform = transforms[i]
                if transform is not None:
                    value = value * transform[0] + transform[1]
                self._add_good(win, ts, value)
        rows.per_sample.update(indices)
        rows.per_sample_order = tuple(sorted(rows.per_sample))

    def _add_good(self, win: WindowStats, ts: int, value: Any) -> None:
        """One good number into an accumulator, as the pipeline's per-sample loop adds it (the same
        ``type(value) is float`` test, so the same counts)."""
        win.count += 1
        if type(value) is float and value - value:
            self._stats.non_finite += 1
            win.bad += 1
            win.hold(ts, None)
            return
        win.good += 1
        win.add_value(ts, value)

    def _close_rows(
        self, rows: _BlockRows, start: int, out_blocks: list[ColumnRows], out_rows: list[list[Any]]
    ) -> None:
        """The window rows of a layout's tags still on the column path."""
        if not rows.ts:
            return
        layout = rows.layout
        names = layout.names
        per_sample = rows.per_sample
        w_ms = self.window_ms
        end = start + w_ms
        ts = rows.ts
        n = len(ts)
        held = list(map(operator.sub, ts[1:], ts))
        held.append(end - ts[-1])
        lead = ts[0] - start
        first_ms, last_ms = ts[0], ts[-1]
        columns: list[Sequence[Any]] = list(zip(*map(layout.unpack, rows.data), strict=True))
        exact = not any(layout.transforms)  # raw integers
        if not exact:
            columns = list(map(layout.column, columns, range(len(names))))
        result = columns_stats(columns, ts, held, lead, rows.carry, exact=exact)
        if result is not None:
            # Every statistic of every tag at once, kept as columns (agent.pipeline.column_rows), all C-level.
            fields: list[Sequence[Any]] = [names, *result, list(map(_first, columns)), list(map(_last, columns))]
            if per_sample:
                on_column = [i not in per_sample for i in range(len(names))]
                fields = [list(compress(column, on_column)) for column in fields]
            tags, means, stds, twas, lows, low_ms, highs, high_ms, firsts, lasts = fields
            k = len(tags)
            n_k = Repeated(n, k)
            zero_k = Repeated(0, k)
            out_blocks.append(ColumnRows(window_row(
                tag=tags, start=Repeated(start, k), dur_ms=Repeated(w_ms, k), count=n_k, good=n_k, bad=zero_k,
                min_=lows, max_=highs, mean=means, last=lasts, uncertain=zero_k, n=n_k, twa=twas, std=stds,
                first=firsts, first_ms=Repeated(first_ms, k), last_ms=Repeated(last_ms, k), min_ms=low_ms,
                max_ms=high_ms, quality=zero_k,  # every sample good and in the statistics: quality 0
            )))
            self._carry.update(zip(tags, zip(repeat(start), lasts, strict=False), strict=True))
            return
        # Some column is not finite (or overflows): tag by tag, those ones through WindowStats.
        carry = self._carry
        carried_in = rows.carry
        replay: list[int] = []
        for i, name in enumerate(names):
            if i in per_sample:
                continue
            values = columns[i]
            one = column_stats(values, ts, held, lead, carried_in[i])
            if one is None:
                replay.append(i)
                continue
            mean, std, twa, low, low_ms_i, high, high_ms_i = one
            last = values[-1]
            out_rows.append(window_row(
                tag=name, start=start, dur_ms=w_ms, count=n, good=n, bad=0, min_=low, max_=high, mean=mean,
                last=last, uncertain=0, n=n, twa=twa, std=std, first=values[0], first_ms=first_ms,
                last_ms=last_ms, min_ms=low_ms_i, max_ms=high_ms_i, quality=0,
            ))
            carry[name] = (start, last)
        if replay:
            self._replay(rows, replay, start)
            bucket = self._windows[start]
            for i in replay:
                name = names[i]
                self._close_window(name, start, bucket.pop(name), out_rows)
