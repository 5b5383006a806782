"""Alarm rules as scenario tables on an injected clock: exact raise and clear times.

Each scenario is a list of steps at seconds after T0. ``(t, value)`` is a good sample at t, ``(t, BAD)`` a bad
one, ``(t, None)`` no sample: the clock only moves to t and the timer path runs (as the runtime does when
it wakes for a deadline). The expected events are ``(seconds after T0, alarm, state)`` using the ``ts`` of
each event: when the transition took effect, not when it was noticed.
"""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from agent.core.clock import FakeClock
from agent.core.sample import Quality, Sample
from agent.pipeline.alarms import TagAlarms
from agent.pipeline.pipeline import Pipeline
from agent.protocol.tables import ALARM_COLUMNS

T0 = 1_700_000_000_000
TAG = "gas1.ch4"
BAD = object()
SKIP = object()


def _run(rule: dict[str, Any], steps: list[tuple[float, Any]]) -> list[tuple[float, str, str]]:
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, alarms=[TagAlarms(TAG, now_ms=T0, **rule)])
    events: list[list[Any]] = []
    for at, value in steps:
        clock._now = at  # the scenario is synchronous; moving the fake clock directly is enough
        ts = T0 + round(at * 1000)
        if value is BAD:
            pipeline.ingest([Sample(TAG, ts, None, Quality.BAD, "timeout")])
        elif value is not None:
            pipeline.ingest([Sample(TAG, ts, value)])
        events += pipeline.take_alarms().alarm
    return [(round((row[1] - T0) / 1000, 3), row[2], row[3]) for row in events]


SCENARIOS = {
    "high raises at the limit and clears below it without deadband": (
        {"high": 1.0},
        [(1, 0.5), (2, 1.0), (3, 0.99)],
        [(2, "high", "raised"), (3, "high", "cleared")],
    ),
    "hysteresis: a high alarm clears only below limit - deadband": (
        {"high": 1.0, "deadband": 0.1},
        [(1, 1.2), (2, 0.95), (3, 0.91), (4, 0.89)],
        [(1, "high", "raised"), (4, "high", "cleared")],
    ),
    "on delay: raised when the condition held long enough, at the exact time": (
        {"high": 1.0, "on_delay_s": 2},
        [(1, 1.1), (2, 1.2), (3.5, 1.3)],
        [(3, "high", "raised")],
    ),
    "on delay: a dip below the limit restarts the wait": (
        {"high": 1.0, "on_delay_s": 2},
        [(1, 1.1), (2, 0.9), (3, 1.1), (4.5, 1.1), (5, 1.1)],
        [(5, "high", "raised")],
    ),
    "on delay expires by the timer when no sample comes": (
        {"high": 1.0, "on_delay_s": 2},
        [(1, 1.1), (2.5, None), (3.0, None)],
        [(3, "high", "raised")],
    ),
    "off delay: cleared only after the clear condition held long enough": (
        {"high": 1.0, "off_delay_s": 5},
        [(1, 1.5), (2, 0.5), (4, 1.2), (5, 0.5), (9, 0.5), (10, None)],
        [(1, "high", "raised"), (10, "high", "cleared")],
    ),
    "high_high and high are separate alarms, both active above high_high": (
        {"high": 1.0, "high_high": 1.5, "deadband": 0.05},
        [(1, 1.2), (2, 1.6), (3, 1.3), (4, 0.9)],
        [(1, "high", "raised"), (2, "high_high", "raised"), (3, "high_high", "cleared"), (4, "high", "cleared")],
    ),
    "low and low_low with hysteresis above the limit": (
        {"low": 19.5, "low_low": 18.0, "deadband": 0.2},
        [(1, 20.9), (2, 19.5), (3, 17.9), (4, 18.1), (5, 18.3), (6, 19.6), (7, 19.8)],
        [(2, "low", "raised"), (3, "low_low", "raised"), (5, "low_low", "cleared"), (7, "low", "cleared")],
    ),
    "rate of change in either direction, per second": (
        {"rate_per_s": 0.5},
        [(0, 1.0), (1, 1.4), (2, 2.0), (4, 2.9), (5, 2.0), (6, 1.9)],
        [(2, "rate", "raised"), (4, "rate", "cleared"), (5, "rate", "raised"), (6, "rate", "cleared")],
    ),
    "stuck: values within the band for stuck_s raise at the exact time": (
        {"stuck_s": 10, "stuck_band": 0.01},
        [(0, 0.50), (4, 0.505), (8, 0.51), (12, 0.50), (13, 0.6)],
        [(10, "stuck", "raised"), (13, "stuck", "cleared")],
    ),
    "stuck: a value leaving the band restarts the watch": (
        {"stuck_s": 10, "stuck_band": 0.01},
        [(0, 0.50), (6, 0.52), (15, 0.52), (16, 0.521), (17, None)],
        [(16, "stuck", "raised")],
    ),
    "stuck: a bad sample breaks the frozen run": (
        {"stuck_s": 10, "stuck_band": 0.0},
        [(0, 0.5), (5, BAD), (6, 0.5), (15, 0.5), (16, 0.5)],
        [(16, "stuck", "raised")],
    ),
    "stuck: a silent tag holds its last value, so the timer raises it (subscriptions send changes only)": (
        {"stuck_s": 10},
        [(0, 0.5), (9, None), (10, None)],
        [(10, "stuck", "raised")],
    ),
    "bad quality for too long raises by the timer and clears on the first good sample": (
        {"bad_quality_s": 5},
        [(0, 1.0), (1, BAD), (2, BAD), (4.9, None), (5.0, None), (6, BAD), (7, 1.0)],
        [(5, "bad_quality", "raised"), (7, "bad_quality", "cleared")],
    ),
    "bad quality: a silent device raises it (the watch starts with the rules)": (
        {"bad_quality_s": 30},
        [(29.9, None), (30, None), (31, 0.2)],
        [(30, "bad_quality", "raised"), (31, "bad_quality", "cleared")],
    ),
    "bad quality noticed late, at the next sample, still carries the exact time": (
        {"bad_quality_s": 5},
        [(0, 1.0), (8, 1.0)],
        [(5, "bad_quality", "raised"), (8, "bad_quality", "cleared")],
    ),
    "bad samples leave threshold alarms as they were": (
        {"high": 1.0},
        [(1, 1.2), (2, BAD), (3, BAD), (4, 0.5)],
        [(1, "high", "raised"), (4, "high", "cleared")],
    ),
}


@pytest.mark.parametrize(("rule", "steps", "expected"), SCENARIOS.values(), ids=list(SCENARIOS))
def test_alarm_scenario(rule: dict[str, Any], steps: list[tuple[float, Any]],
                        expected: list[tuple[float, str, str]]) -> None:
    """The rule raises and clears exactly at the times of the scenario table."""
    events = _run(rule, steps)

    assert events == expected


def test_event_row_has_the_documented_columns() -> None:
    """An alarm row is [tag, ts, alarm, state, value, limit, detected_ms] with the detection time on the clock."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, alarms=[TagAlarms(TAG, now_ms=T0, high=1.0, on_delay_s=2)])
    pipeline.ingest([Sample(TAG, T0 + 1000, 1.25)])
    clock._now = 3.5
    pipeline.ingest([Sample(TAG, T0 + 3500, 1.3)])

    (row,) = pipeline.take_alarms().alarm

    assert dict(zip(ALARM_COLUMNS, row, strict=True)) == {
        "tag": TAG, "ts": T0 + 3000, "alarm": "high", "state": "raised", "value": 1.3, "limit": 1.0,
        "detected_ms": T0 + 3500,
    }


def test_sample_that_raises_wakes_the_runtime() -> None:
    """The on_alarm callback fires in the same ingest call that produced an event."""
    woken: list[int] = []
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, alarms=[TagAlarms(TAG, now_ms=T0, high=1.0)],
                        on_alarm=lambda: woken.append(1))
    woken.clear()
    pipeline.ingest([Sample(TAG, T0 + 100, 0.2)])
    assert woken == []

    pipeline.ingest([Sample(TAG, T0 + 200, 1.2)])

    assert woken


def test_pending_delay_exposes_its_deadline() -> None:
    """A condition waiting out its on delay makes its end the next alarm deadline, so the runtime wakes then."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, alarms=[TagAlarms(TAG, now_ms=T0, high=1.0, on_delay_s=2)])
    assert pipeline.next_alarm_deadline() is None

    pipeline.ingest([Sample(TAG, T0 + 1000, 1.1)])

    assert pipeline.next_alarm_deadline() == (T0 + 3000) / 1000


def test_bad_quality_deadline_moves_with_good_samples_without_events() -> None:
    """Good samples keep pushing the bad-quality deadline later; the timer waking at the old one raises nothing."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, alarms=[TagAlarms(TAG, now_ms=T0, bad_quality_s=5)])
    for s in range(1, 9):
        clock._now = s
        pipeline.ingest([Sample(TAG, T0 + s * 1000, 1.0)])
        pipeline.tick()
    clock._now = 10
    pipeline.tick()

    assert (pipeline.take_alarms().alarm, pipeline.next_alarm_deadline()) == ([], (T0 + 13_000) / 1000)


def test_active_alarms_are_listed_for_the_status_page() -> None:
    """The engine lists the alarms active per tag."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, alarms=[TagAlarms(TAG, now_ms=T0, high=1.0, high_high=2.0)])
    pipeline.ingest([Sample(TAG, T0 + 1000, 2.5)])

    assert pipeline.alarms.active() == {TAG: ["high_high", "high"]}


def test_a_burst_of_events_is_one_log_line() -> None:
    """A device falling silent raises bad_quality on all its tags: one warning counts them, not one per tag."""
    clock = FakeClock(start=T0 / 1000)
    rules = [TagAlarms(f"gas1.t{i}", now_ms=T0, bad_quality_s=5) for i in range(20)]
    pipeline = Pipeline(window_s=10, clock=clock, alarms=rules)
    clock._now = 6

    with capture_logs() as logs:
        rows = pipeline.take_alarms().alarm

    assert (len(rows), [(e["event"], e["raised"], e["more"]) for e in logs]) == (20, [("alarm_events", 20, 15)])
