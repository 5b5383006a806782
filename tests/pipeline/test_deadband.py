"""Report by exception: which raw samples a deadband lets through, as tables."""

from __future__ import annotations

from typing import Any

import pytest

from agent.core.clock import FakeClock
from agent.core.sample import Quality, Sample
from agent.pipeline.deadband import Deadband
from agent.pipeline.pipeline import Pipeline
from agent.protocol.tables import WIN_COLUMNS

T0 = 1_700_000_000_000

CASES = {
    "absolute: only changes of more than 0.1 from the last sent value": (
        {"absolute": 0.1},
        [(0, 1.0), (1, 1.05), (2, 1.1), (3, 1.11), (4, 0.95), (5, 0.89)],
        [0, 3, 4],
    ),
    "a slow drift is sent once it adds up (compared with the last sent, not the last read)": (
        {"absolute": 0.1},
        [(0, 1.0), (1, 1.04), (2, 1.08), (3, 1.12)],
        [0, 3],
    ),
    "percent of the last sent value": (
        {"percent": 10.0},
        [(0, 20.0), (1, 21.9), (2, 22.1), (3, 24.0), (4, 24.4)],
        [0, 2, 4],
    ),
    "with both, exceeding either is enough": (
        {"absolute": 5.0, "percent": 1.0},
        [(0, 100.0), (1, 100.5), (2, 101.5)],
        [0, 2],
    ),
    "heartbeat confirms an unchanged value": (
        {"absolute": 0.1, "heartbeat_s": 10},
        [(0, 1.0), (5, 1.0), (9.999, 1.0), (10, 1.0), (15, 1.0), (20, 1.0)],
        [0, 3, 5],
    ),
    "a quality change is always sent, and so is the recovery": (
        {"absolute": 0.1},
        [(0, 1.0), (1, Quality.BAD), (2, Quality.BAD), (3, 1.0), (4, 1.0)],
        [0, 1, 3],
    ),
    "text values are sent when they change": (
        {"absolute": 0.1},
        [(0, "RUN"), (1, "RUN"), (2, "STOP")],
        [0, 2],
    ),
}


@pytest.mark.parametrize(("settings", "steps", "sent"), CASES.values(), ids=list(CASES))
def test_deadband_sends(settings: dict[str, Any], steps: list[tuple[float, Any]], sent: list[int]) -> None:
    """The samples at the listed step indexes, and only those, are sent."""
    deadband = Deadband(**settings)
    passed = []
    for i, (at, value) in enumerate(steps):
        quality = value if isinstance(value, Quality) else Quality.GOOD
        if deadband.passes(T0 + round(at * 1000), None if isinstance(value, Quality) else value, quality):
            passed.append(i)

    assert passed == sent


def test_suppressed_samples_still_enter_their_window() -> None:
    """A deadband filters raw rows only: the window counts every sample, and the suppressed ones are counted."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, deadbands={"d.a": Deadband(absolute=1.0)})
    pipeline.ingest([Sample("d.a", T0 + i * 1000, 5.0 + i / 10) for i in range(5)])
    clock._now = 60

    out = pipeline.collect()

    (row,) = [dict(zip(WIN_COLUMNS, r, strict=True)) for r in out.win]
    assert ([r[1] - T0 for r in out.raw], row["count"], pipeline.stats.raw_suppressed) == ([0], 5, 4)


def test_late_sample_suppressed_by_the_deadband_is_still_sent() -> None:
    """A sample for a closed window is sent raw even when its deadband would hold it back (nothing is lost)."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, deadbands={"d.a": Deadband(absolute=1.0)})
    pipeline.ingest([Sample("d.a", T0 + 20_000, 5.0)])
    clock._now = 40
    pipeline.collect()
    pipeline.ingest([Sample("d.a", T0 + 21_000, 5.0)])

    raw = pipeline.collect().raw

    assert raw == [["d.a", T0 + 21_000, 5.0, 0, None]]


def test_deadband_filters_a_tag_also_configured_raw() -> None:
    """A tag with raw = true and a [[deadbands]] table is sent by exception, not every sample."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, raw_tags={"d.a"}, deadbands={"d.a": Deadband(absolute=1.0)})
    pipeline.ingest([Sample("d.a", T0 + i, 5.0) for i in range(3)])

    assert len(pipeline.collect().raw) == 1
