"""Samples in, window aggregates, raw rows and alarm events out.

Each tag's samples are grouped into windows aligned to wall-clock multiples of ``window_s`` (a 10 s window
starts at :00, :10, :20 ... UTC), so windows from different gateways and from before and after a restart line
up. A window ``[start, start + window)`` is closed and emitted once the clock passes its end plus
``late_grace_s``: a poll that started at :09.9 and finished at :10.3 still lands its samples (stamped :09.9)
in the right window. A sample that arrives after its window was closed is counted in ``stats.late`` and still
sent as a raw row, so nothing disappears without a trace.

What a window row holds, exactly (min/max with their times, mean and standard deviation, first/last, the
sample-and-hold time-weighted average, counts by quality, and how each path computes them) is specified in
:mod:`agent.pipeline.aggregates`.
Statistics use good-quality finite numbers only, or good and uncertain ones with
``statistics_quality = "good_and_uncertain"``; ``count`` counts every sample.

Per sample, besides its window, a tag may have hooks: raw publishing (``raw = true``: every sample; a
``[[deadbands]]`` entry: report by exception, :mod:`agent.pipeline.deadband`), alarm rules
(:mod:`agent.pipeline.alarms`, whose events the runtime stores at once through ``on_alarm``), and being the
input of calculated tags (:mod:`agent.pipeline.calculated`, computed once per burst and fed back in as
samples of ``calc.<name>``).

Why not a stage per sample in a generic processor list: at 10,000 tags a second the per-sample cost is the
agent's budget (bench/pipeline_cost.py), so :meth:`Pipeline.ingest` is one tight loop; a tag without hooks
costs one failed dict look-up for them.

Sample blocks (agent.core.sample: a Modbus response as bytes, one timestamp, a shared layout) skip even that. A
block's bytes are kept, per open window and layout, as a row; at window close each tag's statistics come
from its column (:func:`agent.pipeline.aggregates.column_stats`), so the per-value work of a poll is nil (a
``raw = true`` tag without other hooks costs only its raw row). The result is the one the samples of the
block would give (mean, std and twa up to the last bits), because a tag leaves the column path for the rest
of a window, with its rows so far replayed in order into a :class:`WindowStats`, whenever that path could
differ: a tag with hooks (deadband, alarms, calculated inputs; raw too when its layout has such tags) is
always fed per sample; a tag that also gets a sample (a failed poll's bad sample, a float layer decoded as
samples because of a NaN) or a row of another layout (a re-planned request) in the same window is replayed
at that moment; a layout whose timestamps go backwards is replayed whole; a block that arrives after its
window closed is handled as its samples (late, raw rows). The ``non_finite`` count of a column replayed at
close is counted then. The window rows of a layout's column-path tags leave as one
:class:`agent.pipeline.column_rows.ColumnRows` in ``PipelineOutput.win_blocks`` (the statistics as columns, turned
into rows only when packed), the other window rows as lists in ``PipelineOutput.win``.
"""

from __future__ import annotations

__all__ = ["ALARM_COLUMNS", "RAW_COLUMNS", "WIN_COLUMNS", "Pipeline", "PipelineOutput", "PipelineStats"]

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

from agent.core.clock import Clock, SystemClock
from agent.core.sample import BlockLayout, Poll, Quality, Sample, SampleBlock
from agent.pipeline.aggregates import WindowStats, column_stats, columns_stats
from agent.pipeline.alarms import ALARM_COLUMNS, AlarmEngine, TagAlarms
from agent.pipeline.calculated import Calculation
from agent.pipeline.column_rows import ColumnRows, Repeated
from agent.pipeline.deadband import Deadband

if TYPE_CHECKING:
    from config.schema import AgentConfig

# The first ten columns are the original ones, unchanged in name and meaning; the rest were appended.
WIN_COLUMNS = [
    "tag", "start", "dur_ms", "count", "good", "bad", "min", "max", "mean", "last",
    "uncertain", "n", "twa", "std", "first", "first_ms", "last_ms", "min_ms", "max_ms",
]
RAW_COLUMNS = ["tag", "ts", "value", "quality", "reason"]
_first = operator.itemgetter(0)
_last = operator.itemgetter(-1)
_NOTHING: Any = object()  # no reading of the tag in the previous window: no value held in


class _Hooks:
    """What a tag needs besides its window. Only tags with at least one hook have an entry."""

    __slots__ = ("alarms", "calcs", "deadband", "raw")

    def __init__(self) -> None:
        self.raw = False
        self.deadband: Deadband | None = None
        self.alarms: TagAlarms | None = None
        self.calcs: list[Calculation] = []


class _BlockRows:
    """The blocks of one layout in one open window, kept as bytes until the window closes.

    Tags whose index is in ``slow`` are fed per sample (hooks, or data from elsewhere in this window); the
    others have their statistics computed from the rows at close. ``carry`` is, per tag, the value held in
    from the previous window at the time the tag's first value of this window arrived (None: none)."""

    __slots__ = ("carry", "data", "layout", "slow", "slow_order", "ts")

    def __init__(self, layout: BlockLayout, slow: set[int], carry: list[Any]) -> None:
        self.layout = layout
        self.ts: list[int] = []
        self.data: list[bytes] = []
        self.slow = slow
        self.slow_order = tuple(sorted(slow))
        self.carry = carry


class _BlockWindow:
    """The block rows of one open window: per layout, and which rows hold each tag's column."""

    __slots__ = ("owner", "rows")

    def __init__(self) -> None:
        self.rows: dict[BlockLayout, _BlockRows] = {}
        self.owner: dict[str, _BlockRows] = {}


def _held(value: Any) -> Any:
    """The value a reading leaves holding: itself, or None (unknown) for a non-finite float."""
    return None if type(value) is float and value - value else value


@dataclass(slots=True)
class PipelineStats:
    samples: int = 0
    windows: int = 0
    raw_rows: int = 0
    late: int = 0
    non_finite: int = 0
    out_of_order: int = 0  # samples older than their tag's latest in the same window: not in that TWA
    raw_suppressed: int = 0  # raw samples held back by a deadband (the window still has them)
    calculated: int = 0
    alarm_events: int = 0


@dataclass(slots=True)
class PipelineOutput:
    """Rows ready for the batcher; tags are full names, times absolute Unix ms. ``alarm`` rows are stored
    as batches of kind "alarm" whatever kind the rest is submitted as."""

    win: list[list[Any]] = field(default_factory=list)
    raw: list[list[Any]] = field(default_factory=list)
    alarm: list[list[Any]] = field(default_factory=list)
    #: More window rows, of tags read in sample blocks: one ColumnRows per block layout and window.
    win_blocks: list[ColumnRows] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.win or self.raw or self.alarm or self.win_blocks)

    def window_rows(self) -> list[list[Any]]:
        """Every window row as a list: ``win`` then the rows of ``win_blocks``."""
        return [*self.win, *(row for rows in self.win_blocks for row in rows)]


class Pipeline:
    def __init__(
        self,
        *,
        window_s: int,
        raw_tags: Iterable[str] = (),
        late_grace_s: float = 2.0,
        clock: Clock | None = None,
        deadbands: Mapping[str, Deadband] | None = None,
        alarms: Iterable[TagAlarms] = (),
        calculated: Iterable[Calculation] = (),
        statistics_quality: Quality = Quality.GOOD,
        on_alarm: Callable[[], None] | None = None,
    ) -> None:
        self.window_ms = int(window_s * 1000)
        self.grace_ms = int(late_grace_s * 1000)
        self.raw_tags = frozenset(raw_tags)
        self.clock = clock or SystemClock()
        self.stats = PipelineStats()
        self.statistics_quality = int(statistics_quality)
        self.alarms = AlarmEngine(alarms, clock=self.clock, on_wake=on_alarm)
        self.calculated = list(calculated)
        self.deadbands = dict(deadbands or {})
        self._hooks: dict[str, _Hooks] = {}
        for tag in self.raw_tags:
            self._hook(tag).raw = True
        for tag, deadband in self.deadbands.items():
            self._hook(tag).deadband = deadband
        for tag, tag_alarms in self.alarms.by_tag.items():
            self._hook(tag).alarms = tag_alarms
        for calc in self.calculated:
            for tag in calc.inputs:
                self._hook(tag).calcs.append(calc)
        # window start (ms) -> tag -> accumulator. Keyed by start first so closing a window is a dict pop.
        self._open: dict[int, dict[str, WindowStats]] = {}
        self._closed_before = 0  # windows starting before this are closed
        # tag -> (start of its last closed window, value held at that window's end), for the next TWA.
        self._carry: dict[str, tuple[int, float | None]] = {}
        self._raw: list[list[Any]] = []
        # window start -> block rows of that window (the window also has an entry, maybe empty, in _open).
        self._blocks: dict[int, _BlockWindow] = {}
        # layout -> (indices of its tags always fed per sample, indices that only need raw rows): _block_plan.
        self._hooked: dict[BlockLayout, tuple[frozenset[int], tuple[int, ...]]] = {}

    @classmethod
    def from_config(
        cls,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        on_alarm: Callable[[], None] | None = None,
        previous: Pipeline | None = None,
    ) -> Pipeline:
        """The pipeline a loaded configuration describes: [pipeline], raw tags, [[deadbands]], [[alarms]]
        and [[calculated]].

        With ``previous`` (a reload), a tag whose alarm rules did not change keeps its alarm state, so an
        alarm active before the reload is not raised a second time after it. Window contents, deadband
        references and integral totals start afresh (the runtime closes the open windows first)."""
        clock = clock or SystemClock()
        now_ms = int(clock.time() * 1000)
        p = config.pipeline
        kept = previous.alarms.by_tag if previous is not None else {}
        alarms = []
        for rule in config.alarms:
            fresh = TagAlarms(rule.tag, now_ms=now_ms, **rule.model_dump(exclude={"tag"}))
            old = kept.get(rule.tag)
            alarms.append(old if old is not None and old.settings == fresh.settings else fresh)
        return cls(
            window_s=p.window_s,
            raw_tags=raw_tag_names(config),
            late_grace_s=p.late_grace_s,
            clock=clock,
            deadbands={d.tag: Deadband(absolute=d.absolute, percent=d.percent, heartbeat_s=d.heartbeat_s)
                       for d in config.deadbands},
            alarms=alarms,
            calculated=[Calculation(c.name, c.op, c.inputs, factor=c.factor, offset=c.offset,
                                    max_age_s=c.max_age_s) for c in config.calculated],
            statistics_quality=Quality.UNCERTAIN if p.statistics_quality == "good_and_uncertain" else Quality.GOOD,
            on_alarm=on_alarm,
        )

    def _hook(self, tag: str) -> _Hooks:
        hook = self._hooks.get(tag)
        if hook is None:
            hook = self._hooks[tag] = _Hooks()
        return hook

    def ingest(self, samples: Sequence[Sample]) -> None:
        """Account for one poll's samples (a list, or a ``Poll`` of samples and blocks). The drivers' sink:
        synchronous, no I/O."""
        if type(samples) is Poll:
            touched = None
            for part in samples.parts:
                found = self._ingest(part) if type(part) is list else self._ingest_block(part)  # type: ignore[arg-type]
                if found:
                    if touched is None:
                        touched = found
                    else:
                        touched.update(found)
        else:
            touched = self._ingest(samples)
        if touched:
            derived = [s for calc in touched if (s := calc.compute()) is not None]
            self.stats.calculated += len(derived)
            self._ingest(derived)
        if self.alarms.rows:
            self.alarms.wake()

    def _ingest(self, samples: Sequence[Sample]) -> dict[Calculation, None] | None:
        w_ms = self.window_ms
        opened = self._open
        hooks = self._hooks
        raw = self._raw
        closed_before = self._closed_before
        stats = self.stats
        stat_q = self.statistics_quality
        engine = self.alarms
        touched: dict[Calculation, None] | None = None
        stats.samples += len(samples)
        # A poll stamps all its samples with one time, so consecutive samples almost always share a window:
        # the lateness test and the bucket lookup are redone only when the start changes.
        last_start = None
        late = False
        bucket: dict[str, WindowStats] = {}
        for tag, ts, value, quality, reason in samples:
            start = ts - ts % w_ms
            if start != last_start:
                last_start = start
                late = start < closed_before
                if not late:
                    bucket = opened.get(start)  # type: ignore[assignment]
                    if bucket is None:
                        bucket = opened[start] = {}
            hook = hooks.get(tag)
            sent = False
            if hook is not None:
                if hook.deadband is not None:  # a deadband filters even a tag configured raw = true
                    if hook.deadband.passes(ts, value, quality):
                        raw.append([tag, ts, value, int(quality), reason])
                        sent = True
                    else:
                        stats.raw_suppressed += 1
                elif hook.raw:
                    raw.append([tag, ts, value, int(quality), reason])
                    sent = True
                if hook.alarms is not None:
                    engine.observe(hook.alarms, ts, value, quality)
                if hook.calcs:
                    if touched is None:
                        touched = {}
                    for calc in hook.calcs:
                        calc.observe(tag, ts, value, quality)
                        touched[calc] = None
            if late:
                stats.late += 1
                if not sent:
                    raw.append([tag, ts, value, int(quality), reason])
                continue
            win = bucket.get(tag)
            if win is None:
                win = self._first_sample_window(tag, start, samples)
            win.count += 1
            if quality:  # GOOD is 0
                win.bad += 1
                if quality == 1:
                    win.uncertain += 1
                if quality > stat_q:
                    win.hold(ts, None)
                    continue
            kind = type(value)
            if kind is float:
                if value - value:  # non-zero only for NaN (NaN - NaN) and infinities (inf - inf is NaN)
                    stats.non_finite += 1
                    if not quality:
                        win.bad += 1
                    win.hold(ts, None)
                    continue
            elif kind is bool:
                value = int(value)
            elif kind is not int:
                if value is None:
                    if not quality:
                        win.bad += 1
                    win.hold(ts, None)
                    continue
                if not quality:
                    win.good += 1
                win.add_text(ts, value)  # strings and the like: counted and kept as first/last
                continue
            if not quality:
                win.good += 1
            win.add_value(ts, value)
        return touched

    def _first_sample_window(self, tag: str, start: int, samples: Sequence[Sample]) -> WindowStats:
        """The accumulator for a sample of a tag that has none in ``start``'s bucket: its block rows of this
        window replayed into a new one, or a new one with the value held in.

        A failed poll brings a sample for every tag of a request at once, so the tags of the same rows among
        ``samples`` are replayed with it, in one pass over the rows (replaying a tag early changes nothing:
        from then on it is fed per sample, which is what it would be anyway)."""
        blocks = self._blocks.get(start)
        if blocks is not None:
            rows = blocks.owner.get(tag)
            if rows is not None:
                index = rows.layout.index
                i = index[tag]
                if i not in rows.slow:
                    w_ms = self.window_ms
                    slow = rows.slow
                    wanted = {i}
                    for s in samples:
                        j = index.get(s[0])
                        if j is not None and j not in slow and s[1] - s[1] % w_ms == start:
                            wanted.add(j)
                    self._replay(rows, sorted(wanted), start)
                    return self._open[start][tag]
        win = self._open[start][tag] = self._new_window(tag, start)
        return win

    def _new_window(self, tag: str, start: int) -> WindowStats:
        """An accumulator with the value held in from the tag's previous window, for the TWA."""
        held = self._held_in(tag, start)
        if held is _NOTHING:
            return WindowStats()
        return WindowStats(start, held)

    def _held_in(self, tag: str, start: int) -> Any:
        """What the tag holds into window ``start`` now: a value, None (unknown) or _NOTHING (no reading in the
        previous window)."""
        before = start - self.window_ms
        previous = self._open.get(before)
        if previous is not None:
            prev_win = previous.get(tag)
            if prev_win is not None:
                return prev_win.hold_value if prev_win.hold_ms is not None else _NOTHING
            blocks = self._blocks.get(before)
            rows = blocks.owner.get(tag) if blocks is not None else None
            if rows is not None and rows.ts:
                return _held(rows.layout.value(rows.data[-1], rows.layout.index[tag]))
        carry = self._carry.get(tag)
        if carry is not None and carry[0] == before:
            return carry[1]
        return _NOTHING

    # -- sample blocks ---------------------------------------------------------------------------------------

    def _ingest_block(self, block: SampleBlock) -> dict[Calculation, None] | None:
        """Account for one block: normally one row appended (and raw rows of its ``raw = true`` tags); its
        hooked or mixed tags fed per sample."""
        layout = block.layout
        ts = block.ts_ms
        start = ts - ts % self.window_ms
        plan = self._hooked.get(layout)
        if plan is None:
            plan = self._hooked[layout] = self._block_plan(layout)
        hooked, raw_only = plan
        if start < self._closed_before or len(hooked) == len(layout.names):
            return self._ingest(block.samples())  # late, or nothing to keep as a column
        blocks = self._blocks.get(start)
        if blocks is None:
            blocks = self._blocks[start] = _BlockWindow()
            self._open.setdefault(start, {})
        rows = blocks.rows.get(layout)
        if rows is None:
            rows = self._start_rows(blocks, layout, start, hooked)
        elif ts < rows.ts[-1]:  # time went backwards: the column path assumes order, so leave it
            self._replay(rows, [i for i in range(len(layout.names)) if i not in rows.slow], start)
        rows.ts.append(ts)
        rows.data.append(block.data)
        slow = rows.slow_order
        names = layout.names
        self.stats.samples += len(names) - len(slow)
        if not slow and not raw_only:
            return None
        values = layout.values(block.data)
        if not raw_only:
            return self._ingest([Sample(names[i], ts, values[i]) for i in slow])
        raw = self._raw
        if not slow:
            raw.extend([[names[i], ts, values[i], 0, None] for i in raw_only])
            return None
        # Both: in layout order (the order of the samples), runs of per-sample tags between raw rows.
        touched: dict[Calculation, None] | None = None
        run: list[Sample] = []
        in_slow = rows.slow
        for i in sorted({*slow, *raw_only}):
            if i in in_slow:
                run.append(Sample(names[i], ts, values[i]))
                continue
            if run:
                found = self._ingest(run)
                if found:
                    touched = found if touched is None else {**touched, **found}
                run = []
            raw.append([names[i], ts, values[i], 0, None])
        if run:
            found = self._ingest(run)
            if found:
                touched = found if touched is None else {**touched, **found}
        return touched

    def _block_plan(self, layout: BlockLayout) -> tuple[frozenset[int], tuple[int, ...]]:
        """Which tags of a layout are always fed per sample, and which only need a raw row per block.

        A tag whose one hook is ``raw = true`` keeps its statistics on the column path and gets its raw row
        straight from the block. If the layout also has tags with other hooks, those raw-only tags are fed
        per sample too, so that raw rows keep the order of the samples."""
        hooks = self._hooks
        hooked: list[int] = []
        raw_only: list[int] = []
        for i, name in enumerate(layout.names):
            hook = hooks.get(name)
            if hook is None:
                continue
            if hook.raw and hook.deadband is None and hook.alarms is None and not hook.calcs:
                raw_only.append(i)
            else:
                hooked.append(i)
        if hooked:
            return frozenset(hooked + raw_only), ()
        return frozenset(), tuple(raw_only)

    def _start_rows(
        self, blocks: _BlockWindow, layout: BlockLayout, start: int, hooked: frozenset[int]
    ) -> _BlockRows:
        """The first block of a layout in a window. Its tags already fed otherwise in this window (samples,
        another layout's rows, replayed first) are fed per sample from now on, like hooked ones."""
        names = layout.names
        owner = blocks.owner
        if not owner.keys().isdisjoint(names):
            for name in names:
                other = owner.get(name)
                if other is not None and other.layout.index[name] not in other.slow:
                    self._replay(other, (other.layout.index[name],), start)
        bucket = self._open[start]
        slow = set(hooked)
        if bucket and not bucket.keys().isdisjoint(names):
            slow.update(i for i, name in enumerate(names) if name in bucket)
        rows = blocks.rows[layout] = _BlockRows(layout, slow, self._carry_in(layout, start))
        owner.update(zip(names, repeat(rows)))
        return rows

    def _carry_in(self, layout: BlockLayout, start: int) -> list[Any]:
        """Per tag of the layout, the value held into window ``start`` now (None: none or unknown)."""
        before = start - self.window_ms
        blocks = self._blocks.get(before)
        prev = blocks.rows.get(layout) if blocks is not None else None
        if prev is not None and prev.ts:  # the usual case: the same request in the previous window
            values = list(map(_held, layout.values(prev.data[-1])))
            if prev.slow:
                bucket = self._open[before]
                for i in prev.slow:
                    win = bucket[layout.names[i]]
                    values[i] = win.hold_value if win.hold_ms is not None else None
            return values
        held = [self._held_in(name, start) for name in layout.names]
        return [None if v is _NOTHING else v for v in held]

    def _replay(self, rows: _BlockRows, indices: Sequence[int], start: int) -> None:
        """Move tags off the column path: feed their rows so far, in order, into new accumulators in the
        window's bucket, exactly as their samples would have been; later rows feed them per sample."""
        if not indices:
            return
        bucket = self._open[start]
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
        rows.slow.update(indices)
        rows.slow_order = tuple(sorted(rows.slow))

    def _add_good(self, win: WindowStats, ts: int, value: Any) -> None:
        """One good number into an accumulator, as :meth:`_ingest` adds it."""
        win.count += 1
        if type(value) is float and value - value:
            self.stats.non_finite += 1
            win.bad += 1
            win.hold(ts, None)
            return
        win.good += 1
        win.add_value(ts, value)

    def _close_rows(self, rows: _BlockRows, start: int, out: PipelineOutput) -> None:
        """The window rows of a layout's tags still on the column path."""
        if not rows.ts:
            return
        layout = rows.layout
        names = layout.names
        slow = rows.slow
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
            firsts = list(map(_first, columns))
            lasts = list(map(_last, columns))
            fields: list[Sequence[Any]] = [names, *result, firsts, lasts]
            if slow:
                fast = [i not in slow for i in range(len(names))]
                fields = [list(compress(column, fast)) for column in fields]
            tags, means, stds, twas, lows, low_ms, highs, high_ms, firsts, lasts = fields
            k = len(tags)
            n_k = Repeated(n, k)
            zero_k = Repeated(0, k)
            out.win_blocks.append(ColumnRows([  # in WIN_COLUMNS order
                tags, Repeated(start, k), Repeated(w_ms, k), n_k, n_k, zero_k, lows, highs, means, lasts,
                zero_k, n_k, twas, stds, firsts, Repeated(first_ms, k), Repeated(last_ms, k), low_ms, high_ms,
            ]))
            self._carry.update(zip(tags, zip(repeat(start), lasts, strict=False), strict=True))
            return
        # Some column is not finite (or overflows): tag by tag, those ones through WindowStats.
        carry = self._carry
        carried_in = rows.carry
        replay: list[int] = []
        for i, name in enumerate(names):
            if i in slow:
                continue
            values = columns[i]
            one = column_stats(values, ts, held, lead, carried_in[i])
            if one is None:
                replay.append(i)
                continue
            mean, std, twa, low, low_ms_i, high, high_ms_i = one
            last = values[-1]
            out.win.append([
                name, start, w_ms, n, n, 0, low, high, mean, last, 0, n, twa, std, values[0], first_ms, last_ms,
                low_ms_i, high_ms_i,
            ])
            carry[name] = (start, last)
        if replay:
            self._replay(rows, replay, start)
            bucket = self._open[start]
            for i in replay:
                name = names[i]
                self._close_window(name, start, bucket.pop(name), out.win)

    def tick(self) -> None:
        """Evaluate alarm deadlines due now (the runtime's timer path)."""
        self.alarms.tick(int(self.clock.time() * 1000))

    def next_alarm_deadline(self) -> float | None:
        """Wall-clock seconds of the next alarm deadline, or None."""
        d = self.alarms.next_deadline_ms()
        return None if d is None else d / 1000.0

    def take_alarms(self) -> PipelineOutput:
        """Alarm rows due or produced since the last call (the fast path; windows stay open)."""
        self.tick()
        rows = self.alarms.take()
        self.stats.alarm_events += len(rows)
        return PipelineOutput(alarm=rows)

    def collect(self, *, final: bool = False) -> PipelineOutput:
        """Close the windows whose end plus grace has passed (all open ones if ``final``) and hand out
        their rows together with the raw rows and alarm events gathered since the last call."""
        out = self.take_alarms()
        now_ms = int(self.clock.time() * 1000)
        horizon = now_ms - self.grace_ms  # windows ending at or before this are complete
        out.raw = self._raw
        self._raw = []
        w_ms = self.window_ms
        rows = out.win
        for start in sorted(self._open):
            if not final and start + w_ms > horizon:
                break
            blocks = self._blocks.pop(start, None)
            if blocks is not None:
                for block_rows in blocks.rows.values():
                    self._close_rows(block_rows, start, out)
            bucket = self._open.pop(start)
            for tag, win in bucket.items():
                self._close_window(tag, start, win, rows)
        if final:
            self._closed_before = max(self._closed_before, now_ms - now_ms % w_ms + w_ms)
        else:
            self._closed_before = max(self._closed_before, horizon - horizon % w_ms)
        self.stats.windows += len(rows) + sum(map(len, out.win_blocks))
        self.stats.raw_rows += len(out.raw)
        return out

    def _close_window(self, tag: str, start: int, win: WindowStats, out: list[list[Any]]) -> None:
        """The window row of one accumulator; remembers the value it holds into the next window."""
        w_ms = self.window_ms
        n = win.n
        out.append([
            tag, start, w_ms, win.count, win.good, win.bad, win.min, win.max, win.mean if n else None,
            win.last, win.uncertain, n, win.twa(start + w_ms), win.std(), win.first,
            win.first_ms if win.first is not None else None, win.last_ms if win.last is not None else None,
            win.min_ms if n else None, win.max_ms if n else None,
        ])
        if win.out_of_order:
            self.stats.out_of_order += win.out_of_order
        if win.hold_ms is not None:
            self._carry[tag] = (start, win.hold_value)


def raw_tag_names(config: AgentConfig) -> frozenset[str]:
    """Full names of the tags configured ``raw = true`` (device tags and calculated tags)."""
    names = {
        f"{name}.{tag.name}" for name, dev in config.devices.items() for tag in dev.tags if getattr(tag, "raw", False)
    }
    names.update(Calculation(c.name, c.op, c.inputs).name for c in config.calculated if c.raw)
    return frozenset(names)
