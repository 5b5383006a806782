"""Window statistics against a straightforward reference implementation (property-based), and by example."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.clock import FakeClock
from agent.core.sample import Quality, Sample
from agent.pipeline.pipeline import Pipeline
from agent.protocol.tables import WIN_COLUMNS

T0 = 1_700_000_000_000
W = 10_000
TAG = "d.a"


def _rows(samples: list[Sample], **kw: Any) -> list[dict[str, Any]]:
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=W // 1000, clock=clock, late_grace_s=2.0, **kw)
    rows = []
    for sample in samples:  # each delivered 0.5 s after it was read (within the 2 s grace)
        clock._now = max(clock._now, (sample.ts_ms - T0) / 1000 + 0.5)
        rows += pipeline.collect().win  # the flush tick may close the previous window just before the sample
        pipeline.ingest([sample])
    clock._now += 3600
    rows += pipeline.collect().win
    return [dict(zip(WIN_COLUMNS, row, strict=True)) for row in rows]


def _in_stats(value: Any, quality: int, max_quality: int) -> bool:
    return quality <= max_quality and isinstance(value, int | float) and math.isfinite(value)


def _reference(samples: list[Sample], max_quality: int = 0) -> dict[int, dict[str, Any]]:
    """Per window start, the row computed the slow, obvious way (samples arrive in time order)."""
    out: dict[int, dict[str, Any]] = {}
    starts = sorted({s.ts_ms - s.ts_ms % W for s in samples})
    for start in starts:
        mine = [s for s in samples if start <= s.ts_ms < start + W]
        stat = [(s.ts_ms, float(s.value)) for s in mine if _in_stats(s.value, s.quality, max_quality)]  # type: ignore[arg-type]
        values = [v for _, v in stat]
        n = len(values)
        mean = math.fsum(values) / n if n else None
        row: dict[str, Any] = {
            "count": len(mine),
            "good": sum(1 for s in mine if s.quality == 0 and _in_stats(s.value, 0, 0)),
            "bad": sum(1 for s in mine if s.quality != 0 or not _in_stats(s.value, 0, 0)),
            "uncertain": sum(1 for s in mine if s.quality == 1),
            "n": n,
            "min": min(values) if n else None,
            "max": max(values) if n else None,
            "mean": mean,
            "std": math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n) if n and mean is not None else None,
            "first": values[0] if n else None,
            "last": values[-1] if n else None,
            "first_ms": stat[0][0] if n else None,
            "last_ms": stat[-1][0] if n else None,
            "min_ms": min(t for t, v in stat if v == min(values)) if n else None,
            "max_ms": min(t for t, v in stat if v == max(values)) if n else None,
        }
        # Quality: 2 when nothing entered the statistics, else 1 if any sample was bad, uncertain or not finite.
        row["quality"] = 2 if not n else 1 if row["bad"] else 0
        # Sample-and-hold timeline: the previous window's last sample holds into this one.
        before = [s for s in samples if start - W <= s.ts_ms < start]
        points: list[tuple[int, float | None]] = []
        if before:
            last = before[-1]
            points.append((start, float(last.value) if _in_stats(last.value, last.quality, max_quality) else None))  # type: ignore[arg-type]
        points += [(s.ts_ms, float(s.value) if _in_stats(s.value, s.quality, max_quality) else None)  # type: ignore[arg-type]
                   for s in mine]
        points.append((start + W, None))
        area = covered = 0.0
        for (t1, v1), (t2, _) in itertools.pairwise(points):
            if v1 is not None:
                area += v1 * (t2 - t1)
                covered += t2 - t1
        row["twa"] = area / covered if covered else None
        out[start] = row
    return out


_values = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=-1000, max_value=1000),
    st.sampled_from([math.nan, math.inf, None, True]),
)


@st.composite
def _samples(draw: st.DrawFn) -> list[Sample]:
    """Samples of one tag over three windows, in time order (ties allowed), with mixed quality."""
    steps = draw(st.lists(st.integers(min_value=0, max_value=4_000), min_size=1, max_size=40))
    ts = T0 + draw(st.integers(min_value=0, max_value=W - 1))
    out = []
    for step in steps:
        ts += step
        value = draw(_values)
        quality = draw(st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN, Quality.BAD]))
        if quality == Quality.BAD:
            value = None
        out.append(Sample(TAG, ts, value, quality, None if quality == Quality.GOOD else "x"))
    return out


def _close(a: Any, b: Any, scale: float) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * max(1.0, scale))


@pytest.mark.parametrize("quality", ["good", "good_and_uncertain"])
@settings(max_examples=150, deadline=None)
@given(samples=_samples())
def test_rows_match_the_reference(samples: list[Sample], quality: str) -> None:
    """Every statistic of every window equals the reference computation, for either quality setting."""
    max_quality = 1 if quality == "good_and_uncertain" else 0
    rows = _rows(samples, statistics_quality=Quality(max_quality))
    expected = _reference(samples, max_quality)

    assert [r["start"] for r in rows] == sorted(expected)
    for row in rows:
        ref = expected[row["start"]]
        scale = max([abs(v) for v in (ref["min"], ref["max"]) if v is not None], default=1.0)
        exact = ["count", "good", "bad", "uncertain", "n", "min", "max", "first", "last",
                 "first_ms", "last_ms", "min_ms", "max_ms", "quality"]
        if max_quality:  # good counts good quality; with uncertain in the statistics first/last follow them
            exact.remove("good")
        assert {k: row[k] for k in exact} == {k: ref[k] for k in exact}
        for key in ("mean", "std", "twa"):
            assert _close(row[key], ref[key], scale), (key, row[key], ref[key])


def test_std_is_stable_on_a_large_offset() -> None:
    """Welford keeps small variations on a large offset exact where a sum of squares would cancel."""
    values = [1e9 + x for x in (4.0, 7.0, 13.0, 16.0)]  # variance 22.5 around 1e9 + 10
    rows = _rows([Sample(TAG, T0 + i * 1000, v) for i, v in enumerate(values)])

    assert (rows[0]["mean"], rows[0]["std"]) == (1e9 + 10.0, math.sqrt(22.5))


def test_twa_weighs_values_by_how_long_they_held() -> None:
    """1.0 held 9.8 s and 3.0 held 0.1 s average to about 1.02, where the mean is 2.0."""
    (row,) = _rows([Sample(TAG, T0 + 100, 1.0), Sample(TAG, T0 + 9_900, 3.0)])

    assert (row["mean"], row["twa"]) == (2.0, (1.0 * 9_800 + 3.0 * 100) / 9_900)


def test_twa_carries_the_previous_windows_value_in() -> None:
    """The last value of the previous window holds from the window start until the first sample."""
    rows = _rows([Sample(TAG, T0 + 5_000, 2.0), Sample(TAG, T0 + W + 5_000, 4.0)])

    assert rows[1]["twa"] == (2.0 * 5_000 + 4.0 * 5_000) / W


def test_twa_does_not_count_time_held_by_a_bad_sample() -> None:
    """A bad sample holds 'unknown': its time is neither value nor weight."""
    (row,) = _rows([Sample(TAG, T0, 2.0), Sample(TAG, T0 + 4_000, None, Quality.BAD, "timeout"),
                    Sample(TAG, T0 + 8_000, 5.0)])

    assert row["twa"] == (2.0 * 4_000 + 5.0 * 2_000) / 6_000


def test_out_of_order_sample_enters_statistics_but_not_twa() -> None:
    """A sample older than the tag's latest one counts in min/mean/first but leaves the TWA timeline alone."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock)
    pipeline.ingest([Sample(TAG, T0 + 5_000, 2.0)])
    pipeline.ingest([Sample(TAG, T0 + 1_000, 8.0)])
    clock._now = 60
    (row,) = [dict(zip(WIN_COLUMNS, r, strict=True)) for r in pipeline.collect().win]

    assert (row["first"], row["first_ms"], row["mean"], row["twa"], pipeline.stats.out_of_order) == (
        8.0, T0 + 1_000, 5.0, 2.0, 1)


@pytest.mark.parametrize(("samples", "quality", "mean"), [
    ([Sample(TAG, T0 + 1_000, 1.0), Sample(TAG, T0 + 2_000, 3.0)], 0, 2.0),
    ([Sample(TAG, T0 + 1_000, 1.0), Sample(TAG, T0 + 2_000, None, Quality.BAD, "timeout")], 1, 1.0),
    ([Sample(TAG, T0 + 1_000, 1.0), Sample(TAG, T0 + 2_000, 9.0, Quality.UNCERTAIN)], 1, 1.0),
    ([Sample(TAG, T0 + 1_000, 1.0), Sample(TAG, T0 + 2_000, math.inf)], 1, 1.0),
    ([Sample(TAG, T0 + 1_000, None, Quality.BAD, "timeout")], 2, None),
    ([Sample(TAG, T0 + 1_000, 9.0, Quality.UNCERTAIN)], 2, None),
], ids=["all good", "one bad", "one uncertain", "one not finite", "only bad", "only uncertain"])
def test_window_quality_says_how_far_its_value_can_be_trusted(samples: list[Sample], quality: int,
                                                               mean: float | None) -> None:
    """quality is 0 good, 1 uncertain (values, but also bad samples), 2 bad (no value: mean, the value, nil)."""
    (row,) = _rows(samples)

    assert (row["quality"], row["mean"]) == (quality, mean)


def test_text_values_are_first_and_last_without_statistics() -> None:
    """A text tag has first/last values and times but no min, mean or TWA."""
    (row,) = _rows([Sample(TAG, T0 + 1_000, "STOP"), Sample(TAG, T0 + 2_000, "RUN")])

    assert (row["first"], row["last"], row["first_ms"], row["last_ms"], row["n"], row["twa"]) == (
        "STOP", "RUN", T0 + 1_000, T0 + 2_000, 0, None)


def test_late_sample_within_grace_goes_to_its_own_window() -> None:
    """A sample stamped before a window end but delivered after it, within the grace, lands in that window."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, late_grace_s=2.0)
    pipeline.ingest([Sample(TAG, T0 + 1_000, 1.0)])
    clock._now = 11.5
    pipeline.collect()
    pipeline.ingest([Sample(TAG, T0 + 9_900, 3.0)])  # polled at :09.9, delivered at :11.5
    clock._now = 12.5

    (row,) = [dict(zip(WIN_COLUMNS, r, strict=True)) for r in pipeline.collect().win]

    assert (row["start"], row["count"], row["last"], pipeline.stats.late) == (T0, 2, 3.0, 0)


def test_text_longer_than_receivers_accept_is_cut() -> None:
    """A text value or a reason longer than MAX_STRING_CHARS is cut to it, in windows and raw rows alike: a
    receiver refuses a batch holding a longer string, every time it is sent."""
    from agent.protocol.limits import MAX_STRING_CHARS

    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, raw_tags=[TAG])
    pipeline.ingest([Sample(TAG, T0 + 1_000, "x" * 10_000), Sample(TAG, T0 + 2_000, None, Quality.BAD, "y" * 9_000)])
    clock._now = 60
    out = pipeline.collect()
    (row,) = [dict(zip(WIN_COLUMNS, r, strict=True)) for r in out.win]

    assert len(row["last"]) == MAX_STRING_CHARS
    assert [(len(r[2] or ""), len(r[4] or "")) for r in out.raw] == [(MAX_STRING_CHARS, 0), (0, MAX_STRING_CHARS)]
