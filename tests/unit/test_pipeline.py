"""Window aggregation on an injected clock: exact rows for exact inputs."""

from __future__ import annotations

import inspect

import pytest

from agent.core.clock import FakeClock
from agent.core.sample import Quality, Sample
from agent.pipeline.aggregates import window_row
from agent.pipeline.pipeline import Pipeline
from agent.protocol.tables import WIN_COLUMNS

T0 = 1_700_000_000_000  # a multiple of 10 s


def _pipeline(clock: FakeClock, **kw: object) -> Pipeline:
    return Pipeline(window_s=10, late_grace_s=2.0, clock=clock, **kw)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0 / 1000)


async def test_window_closes_only_after_end_plus_grace(clock: FakeClock) -> None:
    """A window [T0, T0+10s) is emitted once the clock passes T0+12s, not before."""
    p = _pipeline(clock)
    p.ingest([Sample("d.a", T0 + 100, 1.0), Sample("d.a", T0 + 9_900, 3.0)])
    await clock.advance(11.9)
    assert p.collect().win == []

    await clock.advance(0.2)
    rows = [row[:10] for row in p.collect().win]  # the original columns; tests/pipeline covers the rest

    assert rows == [["d.a", T0, 10_000, 2, 2, 0, 1.0, 3.0, 2.0, 3.0]]


async def test_windows_align_to_wall_clock(clock: FakeClock) -> None:
    """Samples at :05 and :15 fall into windows starting at :00 and :10."""
    p = _pipeline(clock)
    p.ingest([Sample("d.a", T0 + 5_000, 1), Sample("d.a", T0 + 15_000, 2)])
    await clock.advance(30)

    starts = [row[1] for row in p.collect().win]

    assert starts == [T0, T0 + 10_000]


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        # tag, count, good, bad, min, max, mean, last
        ([(5.0, Quality.GOOD), (None, Quality.BAD)], [2, 1, 1, 5.0, 5.0, 5.0, 5.0]),
        ([(None, Quality.BAD)], [1, 0, 1, None, None, None, None]),
        ([(2.0, Quality.UNCERTAIN), (4.0, Quality.GOOD)], [2, 1, 1, 4.0, 4.0, 4.0, 4.0]),
        ([(float("nan"), Quality.GOOD), (1.0, Quality.GOOD)], [2, 1, 1, 1.0, 1.0, 1.0, 1.0]),
        ([(True, Quality.GOOD), (False, Quality.GOOD)], [2, 2, 0, 0, 1, 0.5, 0]),
        ([("RUN", Quality.GOOD)], [1, 1, 0, None, None, None, "RUN"]),
    ],
)
async def test_statistics_use_good_numeric_samples_only(
    clock: FakeClock, samples: list[tuple[object, Quality]], expected: list[object]
) -> None:
    """Bad, uncertain and non-finite samples are counted but kept out of min/max/mean."""
    p = _pipeline(clock)
    p.ingest([Sample("d.a", T0 + i, v, q, None if q is Quality.GOOD else "x") for i, (v, q) in enumerate(samples)])
    await clock.advance(20)

    (row,) = p.collect().win

    assert row[3:10] == expected


async def test_raw_tags_are_sent_as_read(clock: FakeClock) -> None:
    """A tag marked raw yields every sample as a raw row as well as its window."""
    p = _pipeline(clock, raw_tags={"d.r"})
    p.ingest([
        Sample("d.r", T0 + 1, 7.5),
        Sample("d.a", T0 + 2, 1.0),
        Sample("d.r", T0 + 3, None, Quality.BAD, "timeout"),
    ])

    out = p.collect()

    assert out.raw == [["d.r", T0 + 1, 7.5, 0, None], ["d.r", T0 + 3, None, 2, "timeout"]]


async def test_late_sample_is_counted_and_kept_as_raw(clock: FakeClock) -> None:
    """A sample for an already closed window is not lost: it is counted and sent as a raw row."""
    p = _pipeline(clock)
    await clock.advance(25)
    p.collect()
    p.ingest([Sample("d.a", T0 + 1_000, 4.0)])

    out = p.collect()

    assert (p.stats.late, out.raw, out.win) == (1, [["d.a", T0 + 1_000, 4.0, 0, None]], [])


async def test_final_collect_flushes_open_windows(clock: FakeClock) -> None:
    """On shutdown the open windows are emitted rather than lost."""
    p = _pipeline(clock)
    p.ingest([Sample("d.a", T0 + 1_000, 4.0)])
    await clock.advance(3)

    rows = [row[:10] for row in p.collect(final=True).win]

    assert rows == [["d.a", T0, 10_000, 1, 1, 0, 4.0, 4.0, 4.0, 4.0]]


def test_window_row_names_the_columns_in_table_order() -> None:
    """The one function that lays out a window row takes its fields by the table's column names, in order."""
    params = list(inspect.signature(window_row).parameters)

    assert [name.removesuffix("_") for name in params] == WIN_COLUMNS
    assert window_row(**{name: name for name in params}) == params
