"""Alarm rules per tag, evaluated on the samples and on the injected clock; raise and clear events out.

The agent only *reports* alarms (rows of table ``alarm``, batches of kind ``alarm``, docs/protocol.md); it
never writes to a control system. Each configured tag has a :class:`TagAlarms` with up to seven alarms:

* ``high_high``, ``high``, ``low``, ``low_low``: the good value crosses a threshold. ``high``/``high_high``
  raise at ``value >= limit`` and clear once ``value < limit - deadband``; ``low``/``low_low`` raise at
  ``value <= limit`` and clear once ``value > limit + deadband`` (hysteresis, so a reading hovering at the
  limit does not chatter). Several can be active at once (a value over ``high_high`` is also over ``high``).
* ``rate``: the change between two consecutive good values, per second, exceeds ``rate_per_s`` in either
  direction; clears on the first rate within it.
* ``stuck``: good values stayed within a band (``max - min <= stuck_band``) for ``stuck_s`` seconds without
  a break (a non-good sample restarts the watch): a sensor frozen or replaced by a fixed signal, a known way
  of faking gas readings. Clears on the first value outside the band.
* ``bad_quality``: no good sample for ``bad_quality_s`` seconds, whether the samples are bad, uncertain or
  do not come at all (a silent device). The watch starts when the rules are created. Clears on the first
  good sample.

**Time.** Conditions are sample-and-hold: a value holds from its timestamp until the tag's next sample,
and non-good samples leave the threshold and rate conditions as they were. ``on_delay_s`` (raise only
after the condition held that long) and ``off_delay_s`` (clear only after the clear condition held that
long) apply to the threshold and rate alarms; ``stuck`` and ``bad_quality`` carry their own duration and
clear at once. Every event carries the exact time the transition took effect (``ts``: the sample's time,
or the start of the condition plus the delay), whether it was noticed at a later sample or by the timer,
and the clock time it was noticed (``detected_ms``).

**Timer path.** A delay can expire, and a device can fall silent, with no sample arriving to notice it.
:class:`AlarmEngine` keeps a heap of per-tag deadlines; :meth:`AlarmEngine.tick` evaluates what is due on
the injected clock, and the runtime sleeps until :meth:`AlarmEngine.next_deadline_ms` (or until woken by
``on_wake``, which fires when events are waiting or an earlier deadline appears). A deadline that moves
later (``bad_quality`` after each good sample) is not re-pushed: the old entry fires, finds nothing due
and reschedules, so the hot path never touches the heap for it.
"""

from __future__ import annotations

__all__ = ["ALARM_KINDS", "AlarmEngine", "TagAlarms"]

import heapq
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from agent.core.clock import Clock, SystemClock

log = structlog.get_logger(__name__)

ALARM_KINDS = ("high_high", "high", "low", "low_low", "rate", "stuck", "bad_quality")
_LOGGED_EVENTS = 5  # events named in the log line; the rest are counted (all of them are in the batch)
RAISED = "raised"
CLEARED = "cleared"
RESET = "reset"
"""The state of an alarm row saying the gateway starts (or stops) watching that alarm with no memory of its
state: at every start of the agent, and when a reload changes or removes a tag's rules. Alarm state lives in
memory only, so without it a receiver could not tell an alarm raised before a restart and never cleared from
one still active (docs/protocol.md §3.2, alarm state across restarts). Rejected: keeping the state on disk,
which would have to be written in the same transaction as the batch carrying the rows, or a restart would
resurrect or lose transitions."""

Emit = Callable[[str, int, str, str, Any, float], None]
"""emit(tag, ts_ms, alarm, state, value, limit)"""


class _Delayed:
    """One threshold or rate alarm: active or not, and a pending transition waiting out its delay."""

    __slots__ = ("active", "kind", "limit", "off_ms", "on_ms", "pending_ms")

    def __init__(self, kind: str, limit: float, on_ms: int, off_ms: int) -> None:
        self.kind = kind
        self.limit = limit
        self.on_ms = on_ms
        self.off_ms = off_ms
        self.active = False
        self.pending_ms: int | None = None  # when the condition for the pending transition began

    def update(self, truth: bool, ts: int, value: Any, tag: str, emit: Emit) -> None:
        """The condition is ``truth`` from ``ts`` on (until the next update)."""
        if truth == self.active:
            self.pending_ms = None
            return
        since = self.pending_ms
        if since is None or ts < since:
            since = self.pending_ms = ts
        delay = self.on_ms if truth else self.off_ms
        if ts - since >= delay:
            self._flip(since + delay, value, tag, emit)

    def due(self, now_ms: int, value: Any, tag: str, emit: Emit) -> None:
        at = self.deadline()
        if at is not None and at <= now_ms:
            self._flip(at, value, tag, emit)

    def deadline(self) -> int | None:
        if self.pending_ms is None:
            return None
        return self.pending_ms + (self.off_ms if self.active else self.on_ms)

    def _flip(self, at: int, value: Any, tag: str, emit: Emit) -> None:
        self.active = not self.active
        self.pending_ms = None
        emit(tag, at, self.kind, RAISED if self.active else CLEARED, value, self.limit)


class TagAlarms:
    """The alarm rules of one tag and their state. Times in the arguments are Unix ms."""

    __slots__ = (
        "bad_active", "bad_ms", "deadband", "high", "high_high", "last_good_ms", "low", "low_low", "prev_ms",
        "prev_value", "rate", "scheduled", "settings", "stuck_active", "stuck_band", "stuck_hi", "stuck_lo",
        "stuck_ms", "stuck_since", "tag", "thresholds", "value", "value_good",
    )

    def __init__(
        self,
        tag: str,
        *,
        now_ms: int,
        high_high: float | None = None,
        high: float | None = None,
        low: float | None = None,
        low_low: float | None = None,
        deadband: float = 0.0,
        on_delay_s: float = 0.0,
        off_delay_s: float = 0.0,
        rate_per_s: float | None = None,
        stuck_s: float | None = None,
        stuck_band: float = 0.0,
        bad_quality_s: float | None = None,
    ) -> None:
        self.tag = tag
        # What the rules are, so a reload that leaves them unchanged can keep this object and its state.
        self.settings = (high_high, high, low, low_low, deadband, on_delay_s, off_delay_s, rate_per_s, stuck_s,
                         stuck_band, bad_quality_s)
        on_ms, off_ms = round(on_delay_s * 1000), round(off_delay_s * 1000)
        self.deadband = deadband
        self.high_high = None if high_high is None else _Delayed("high_high", high_high, on_ms, off_ms)
        self.high = None if high is None else _Delayed("high", high, on_ms, off_ms)
        self.low = None if low is None else _Delayed("low", low, on_ms, off_ms)
        self.low_low = None if low_low is None else _Delayed("low_low", low_low, on_ms, off_ms)
        self.thresholds = [a for a in (self.high_high, self.high, self.low, self.low_low) if a is not None]
        self.rate = None if rate_per_s is None else _Delayed("rate", rate_per_s, on_ms, off_ms)
        self.stuck_ms = None if stuck_s is None else round(stuck_s * 1000)
        self.stuck_band = stuck_band
        self.stuck_since: int | None = None
        self.stuck_lo = self.stuck_hi = 0.0
        self.stuck_active = False
        self.bad_ms = None if bad_quality_s is None else round(bad_quality_s * 1000)
        self.bad_active = False
        self.last_good_ms = now_ms
        self.value: Any = None  # last good value, reported with timer-driven events
        self.value_good = False  # whether the latest sample was good (stuck holds only through good ones)
        self.prev_ms: int | None = None
        self.prev_value = 0.0
        self.scheduled: int | None = None  # the deadline this tag is registered at in the engine's heap

    def observe(self, ts: int, value: Any, quality: int, emit: Emit) -> None:
        """One sample of this tag."""
        tag = self.tag
        kind = type(value)
        good = quality == 0 and not (kind is float and not math.isfinite(value))
        numeric = good and (kind is float or kind is int or kind is bool)
        if self.bad_ms is not None:
            self._observe_quality(ts, good, emit)
        if not numeric:
            self.value_good = False
            self.stuck_since = None
            return
        if kind is bool:
            value = int(value)
        self.value = value
        self.value_good = True
        deadband = self.deadband
        for alarm in self.thresholds:
            limit = alarm.limit
            if alarm.kind in ("high", "high_high"):
                truth = value >= (limit - deadband if alarm.active else limit)
            else:
                truth = value <= (limit + deadband if alarm.active else limit)
            alarm.update(truth, ts, value, tag, emit)
        rate = self.rate
        if rate is not None:
            prev_ms = self.prev_ms
            if prev_ms is not None and ts > prev_ms:
                per_s = (value - self.prev_value) * 1000.0 / (ts - prev_ms)
                rate.update(abs(per_s) > rate.limit, ts, value, tag, emit)
            if prev_ms is None or ts > prev_ms:
                self.prev_ms, self.prev_value = ts, value
        if self.stuck_ms is not None:
            self._observe_stuck(ts, value, emit)

    def _observe_quality(self, ts: int, good: bool, emit: Emit) -> None:
        assert self.bad_ms is not None
        if not self.bad_active and ts - self.last_good_ms >= self.bad_ms:
            self.bad_active = True
            emit(self.tag, self.last_good_ms + self.bad_ms, "bad_quality", RAISED, None, self.bad_ms / 1000)
        if good:
            if self.bad_active:
                self.bad_active = False
                emit(self.tag, ts, "bad_quality", CLEARED, None, self.bad_ms / 1000)
            self.last_good_ms = max(self.last_good_ms, ts)

    def _observe_stuck(self, ts: int, value: float, emit: Emit) -> None:
        assert self.stuck_ms is not None
        since = self.stuck_since
        lo, hi = min(self.stuck_lo, value), max(self.stuck_hi, value)
        # A band of 0.01 holds 0.50 and 0.51 although 0.51 - 0.50 is 0.010000000000000009 in binary.
        if since is None or hi - lo > self.stuck_band + 1e-9 * max(abs(hi), abs(lo)):
            if self.stuck_active:
                self.stuck_active = False
                emit(self.tag, ts, "stuck", CLEARED, value, self.stuck_band)
            self.stuck_lo = self.stuck_hi = value
            self.stuck_since = ts
            return
        self.stuck_lo, self.stuck_hi = lo, hi
        if not self.stuck_active and ts - since >= self.stuck_ms:
            self.stuck_active = True
            emit(self.tag, since + self.stuck_ms, "stuck", RAISED, value, self.stuck_band)

    def on_timer(self, now_ms: int, emit: Emit) -> None:
        """Transitions that are due at ``now_ms`` without a new sample."""
        value = self.value
        for alarm in self.thresholds:
            alarm.due(now_ms, value, self.tag, emit)
        if self.rate is not None:
            self.rate.due(now_ms, value, self.tag, emit)
        stuck = self._stuck_deadline()
        if stuck is not None and stuck <= now_ms:
            self.stuck_active = True
            emit(self.tag, stuck, "stuck", RAISED, value, self.stuck_band)
        if self.bad_ms is not None and not self.bad_active and self.last_good_ms + self.bad_ms <= now_ms:
            self.bad_active = True
            emit(self.tag, self.last_good_ms + self.bad_ms, "bad_quality", RAISED, None, self.bad_ms / 1000)

    def _stuck_deadline(self) -> int | None:
        if self.stuck_ms is None or self.stuck_active or self.stuck_since is None or not self.value_good:
            return None
        return self.stuck_since + self.stuck_ms

    def next_deadline(self) -> int | None:
        """The earliest time something may become due without a sample, or None."""
        best: int | None = None
        for alarm in self.thresholds:
            d = alarm.deadline()
            if d is not None and (best is None or d < best):
                best = d
        if self.rate is not None:
            d = self.rate.deadline()
            if d is not None and (best is None or d < best):
                best = d
        d = self._stuck_deadline()
        if d is not None and (best is None or d < best):
            best = d
        if self.bad_ms is not None and not self.bad_active:
            d = self.last_good_ms + self.bad_ms
            if best is None or d < best:
                best = d
        return best

    def watched(self) -> list[tuple[str, float]]:
        """Each alarm these rules watch, with its limit as alarm rows report it."""
        out = [(a.kind, a.limit) for a in self.thresholds]
        if self.rate is not None:
            out.append(("rate", self.rate.limit))
        if self.stuck_ms is not None:
            out.append(("stuck", self.stuck_band))
        if self.bad_ms is not None:
            out.append(("bad_quality", self.bad_ms / 1000))
        return out

    def active(self) -> list[str]:
        """The alarms active now, for the status page."""
        out = [a.kind for a in self.thresholds if a.active]
        if self.rate is not None and self.rate.active:
            out.append("rate")
        if self.stuck_active:
            out.append("stuck")
        if self.bad_active:
            out.append("bad_quality")
        return out


class AlarmEngine:
    """All tags' alarms: events collected as ``alarm`` rows, deadlines kept for the timer path."""

    def __init__(
        self,
        rules: Iterable[TagAlarms],
        *,
        clock: Clock | None = None,
        on_wake: Callable[[], None] | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.on_wake = on_wake
        self.by_tag: dict[str, TagAlarms] = {r.tag: r for r in rules}
        self.rows: list[list[Any]] = []
        self.raised = 0
        self.cleared = 0
        self.resets = 0
        self._heap: list[tuple[int, int, TagAlarms]] = []
        self._ids = itertools.count()
        for alarms in self.by_tag.values():
            self._schedule(alarms)

    def emit(self, tag: str, ts: int, alarm: str, state: str, value: Any, limit: float) -> None:  # noqa: PLR0917 - the Emit signature, called positionally on the hot path
        self.rows.append([tag, ts, alarm, state, value, limit, int(self.clock.time() * 1000)])
        if state == RAISED:
            self.raised += 1
        elif state == CLEARED:
            self.cleared += 1
        else:
            self.resets += 1

    def reset(self, watched: Iterable[tuple[str, str, float]], now_ms: int) -> None:
        """A ``reset`` row for every ``(tag, alarm, limit)`` given: the gateway starts watching it afresh (at
        start, or its rules changed or went away in a reload), so whatever a receiver last saw of it no longer
        holds."""
        for tag, kind, limit in watched:
            self.emit(tag, now_ms, kind, RESET, None, limit)

    def observe(self, alarms: TagAlarms, ts: int, value: Any, quality: int) -> None:
        """A sample of a tag with rules (the pipeline's hot loop calls this; :meth:`wake` after the burst)."""
        alarms.observe(ts, value, quality, self.emit)
        d = alarms.next_deadline()
        if d is not None and (alarms.scheduled is None or d < alarms.scheduled):
            self._push(alarms, d)

    def wake(self) -> None:
        """Tell the runtime that events wait or an earlier deadline appeared."""
        if self.on_wake is not None:
            self.on_wake()

    def tick(self, now_ms: int | None = None) -> None:
        """Evaluate every deadline due at ``now_ms`` (default: the clock's now)."""
        if now_ms is None:
            now_ms = int(self.clock.time() * 1000)
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            d, _, alarms = heapq.heappop(heap)
            if alarms.scheduled != d:
                continue  # superseded by an earlier deadline that already ran
            alarms.scheduled = None
            alarms.on_timer(now_ms, self.emit)
            self._schedule(alarms, after=now_ms)

    def next_deadline_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def take(self) -> list[list[Any]]:
        """The events since the last call. Logged as one line per call, not per event: a device that
        falls silent raises ``bad_quality`` on all its tags at once."""
        rows, self.rows = self.rows, []
        if rows:
            raised = sum(1 for r in rows if r[3] == RAISED)
            resets = sum(1 for r in rows if r[3] == RESET)
            log.warning("alarm_events", raised=raised, cleared=len(rows) - raised - resets, resets=resets,
                        events=[f"{r[0]} {r[2]} {r[3]}" for r in rows[:_LOGGED_EVENTS]],
                        more=max(0, len(rows) - _LOGGED_EVENTS))
        return rows

    def active(self) -> dict[str, list[str]]:
        return {tag: kinds for tag, a in self.by_tag.items() if (kinds := a.active())}

    def _schedule(self, alarms: TagAlarms, after: int | None = None) -> None:
        alarms.scheduled = None
        d = alarms.next_deadline()
        if d is None:
            return
        if after is not None and d <= after:
            d = after + 1  # cannot happen by construction; never spin on a deadline in the past
        self._push(alarms, d)

    def _push(self, alarms: TagAlarms, d: int) -> None:
        earlier = not self._heap or d < self._heap[0][0]
        alarms.scheduled = d
        heapq.heappush(self._heap, (d, next(self._ids), alarms))
        if earlier and self.on_wake is not None:
            self.on_wake()
