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

Sample blocks (agent.core.sample: a Modbus response as bytes, one timestamp, a shared layout) skip even that:
their tags take the column path, :mod:`agent.pipeline.block_windows`, which keeps the bytes until the window
closes and computes the statistics from whole columns, with the same result as the samples of the blocks. Its
window rows leave as :class:`agent.pipeline.column_rows.ColumnRows` in ``PipelineOutput.win_blocks``, the other
window rows as lists in ``PipelineOutput.win``.
"""

from __future__ import annotations

__all__ = ["Pipeline", "PipelineOutput", "PipelineStats"]

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.core.clock import Clock, SystemClock
from agent.core.sample import Poll, Quality, Sample, SampleBlock
from agent.pipeline.aggregates import WindowStats, window_quality, window_row
from agent.pipeline.alarms import AlarmEngine, TagAlarms
from agent.pipeline.block_windows import BlockWindows
from agent.pipeline.calculated import Calculation
from agent.pipeline.column_rows import ColumnRows
from agent.pipeline.deadband import Deadband
from agent.protocol.limits import MAX_STRING_CHARS

if TYPE_CHECKING:
    from config.schema import AgentConfig

_NOTHING: Any = object()  # no reading of the tag in the previous window: no value held in


class _Hooks:
    """What a tag needs besides its window. Only tags with at least one hook have an entry."""

    __slots__ = ("alarms", "calcs", "deadband", "raw")

    def __init__(self) -> None:
        self.raw = False
        self.deadband: Deadband | None = None
        self.alarms: TagAlarms | None = None
        self.calcs: list[Calculation] = []

    def raw_only(self) -> bool:
        """Whether the tag's one hook is ``raw = true`` (its blocks can still keep it as a column)."""
        return self.raw and self.deadband is None and self.alarms is None and not self.calcs


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
        raw_only = {tag for tag, hook in self._hooks.items() if hook.raw_only()}
        self._blocks = BlockWindows(
            self.window_ms, hooked=self._hooks.keys() - raw_only, raw_only=raw_only, windows=self._open,
            carry=self._carry, stats=self.stats, feed=self._ingest, held_in=self._held_in_or_none,
            close_window=self._close_window,
        )

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
        alarms, started = [], []
        for rule in config.alarms:
            fresh = TagAlarms(rule.tag, now_ms=now_ms, **rule.model_dump(exclude={"tag"}))
            old = kept.get(rule.tag)
            if old is not None and old.settings == fresh.settings:
                alarms.append(old)
            else:
                alarms.append(fresh)
                started.append(fresh)
        # Every alarm watched afresh is reset; so is one a reload stopped watching (its rule changed or went).
        reset = {(a.tag, kind): limit for a in started for kind, limit in a.watched()}
        configured = {a.tag: a for a in alarms}
        for tag, old_alarms in kept.items():
            if configured.get(tag) is not old_alarms:
                for kind, limit in old_alarms.watched():
                    reset.setdefault((tag, kind), limit)
        pipeline = cls(
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
        pipeline.alarms.reset([(tag, kind, limit) for (tag, kind), limit in sorted(reset.items())], now_ms)
        return pipeline

    def _hook(self, tag: str) -> _Hooks:
        hook = self._hooks.get(tag)
        if hook is None:
            hook = self._hooks[tag] = _Hooks()
        return hook

    def ingest(self, samples: Sequence[Sample]) -> None:
        """Account for one poll's samples (a list, or a ``Poll`` of samples and blocks). The drivers' sink:
        synchronous, no I/O."""
        # The sink's contract is "a list, or a Poll"; the exact type test is the cheapest way to tell them
        # apart (a Poll is a Sequence too) and runs once per poll.
        if type(samples) is Poll:
            touched = None
            for found in samples.each_part(self._ingest, self._ingest_block):
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
            # Exact types, the cheapest test per sample; a bool (an int subclass) must become 0/1 first.
            kind = type(value)
            if kind is float:
                # kind is float here; mypy does not narrow through the saved type(value), hence the ignore.
                if value - value:  # type: ignore[operator]  # non-zero only for NaN and infinities
                    stats.non_finite += 1
                    if not quality:
                        win.bad += 1
                    win.hold(ts, None)
                    continue
            elif kind is bool:
                value = int(value)  # type: ignore[arg-type]  # kind is bool
            elif kind is not int:
                if value is None:
                    if not quality:
                        win.bad += 1
                    win.hold(ts, None)
                    continue
                if not quality:
                    win.good += 1
                if kind is str and len(value) > MAX_STRING_CHARS:  # type: ignore[arg-type]  # kind is str
                    value = value[:MAX_STRING_CHARS]  # type: ignore[index]  # receivers refuse longer strings
                win.add_text(ts, value)  # strings and the like: counted and kept as first/last
                continue
            if not quality:
                win.good += 1
            win.add_value(ts, value)  # type: ignore[arg-type]  # float, int or a bool made int above
        return touched

    def _first_sample_window(self, tag: str, start: int, samples: Sequence[Sample]) -> WindowStats:
        """The accumulator for a sample of a tag that has none in ``start``'s bucket: its column taken over
        from the block rows of this window (with the tags of the same rows among ``samples``), or a new one
        with the value held in."""
        win = self._blocks.take_over(tag, start, samples)
        if win is None:
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
            held = self._blocks.held_at_end(tag, before, _NOTHING)
            if held is not _NOTHING:
                return held
        carry = self._carry.get(tag)
        if carry is not None and carry[0] == before:
            return carry[1]
        return _NOTHING

    def _held_in_or_none(self, tag: str, start: int) -> Any:
        """What the tag holds into window ``start`` now, None for nothing or unknown (the column path's carry)."""
        held = self._held_in(tag, start)
        return None if held is _NOTHING else held

    def _ingest_block(self, block: SampleBlock) -> dict[Calculation, None] | None:
        """Account for one block: on the column path, or as its samples when late or nothing of it is kept as
        a column."""
        ts = block.ts_ms
        if ts - ts % self.window_ms < self._closed_before or not self._blocks.keeps(block.layout):
            return self._ingest(block.samples())
        return self._blocks.add(block, self._raw)

    def tick(self) -> None:
        """Evaluate alarm deadlines due now (the runtime's timer path)."""
        self.alarms.tick(int(self.clock.time() * 1000))

    def next_alarm_deadline(self) -> float | None:
        """Wall-clock seconds of the next alarm deadline, or None."""
        d = self.alarms.next_deadline_ms()
        return None if d is None else d / 1000.0

    def take_alarms(self) -> PipelineOutput:
        """Alarm rows due or produced since the last call, without closing any window (the runtime stores
        them at once)."""
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
        out.raw = _bound_strings(self._raw)
        self._raw = []
        w_ms = self.window_ms
        rows = out.win
        for start in sorted(self._open):
            if not final and start + w_ms > horizon:
                break
            self._blocks.close(start, out.win_blocks, rows)
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
        out.append(window_row(  # by position, once per tag and window: see window_row
            tag, start, w_ms, win.count, win.good, win.bad, win.min, win.max, win.mean if n else None,
            win.last, win.uncertain, n, win.twa(start + w_ms), win.std(), win.first,
            win.first_ms if win.first is not None else None, win.last_ms if win.last is not None else None,
            win.min_ms if n else None, win.max_ms if n else None, window_quality(n, win.bad),
        ))
        if win.out_of_order:
            self.stats.out_of_order += win.out_of_order
        if win.hold_ms is not None:
            self._carry[tag] = (start, win.hold_value)


def _bound_strings(raw: list[list[Any]]) -> list[list[Any]]:
    """Raw rows with text values and reasons cut to MAX_STRING_CHARS, in place: a receiver refuses a batch
    holding a longer string (docs/protocol.md §3.3), and would refuse it every time it is sent again."""
    for row in raw:
        value, reason = row[2], row[4]
        if type(value) is str and len(value) > MAX_STRING_CHARS:
            row[2] = value[:MAX_STRING_CHARS]
        if reason is not None and len(reason) > MAX_STRING_CHARS:
            row[4] = reason[:MAX_STRING_CHARS]
    return raw


def raw_tag_names(config: AgentConfig) -> frozenset[str]:
    """Full names of the tags configured ``raw = true`` (device tags and calculated tags)."""
    names = {
        f"{name}.{tag.name}" for name, dev in config.devices.items() for tag in dev.tags if getattr(tag, "raw", False)
    }
    names.update(Calculation(c.name, c.op, c.inputs).name for c in config.calculated if c.raw)
    return frozenset(names)
