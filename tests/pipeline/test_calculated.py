"""Calculated tags: each fixed operation by example, and how missing, bad and stale inputs show."""

from __future__ import annotations

import pytest

from agent.core.clock import FakeClock
from agent.core.sample import Quality, Sample
from agent.pipeline.calculated import Calculation
from agent.pipeline.pipeline import Pipeline
from agent.protocol.tables import WIN_COLUMNS

T0 = 1_700_000_000_000


@pytest.mark.parametrize(("op", "inputs", "kw", "values", "expected"), [
    ("sum", ["d.a", "d.b", "d.c"], {}, [1.5, 2.0, -0.5], 3.0),
    ("difference", ["d.a", "d.b"], {}, [10.0, 7.5], 2.5),
    ("mean", ["d.a", "d.b"], {}, [1.0, 2.0], 1.5),
    ("min", ["d.a", "d.b"], {}, [1.0, 2.0], 1.0),
    ("max", ["d.a", "d.b"], {}, [1.0, 2.0], 2.0),
    ("scale", ["d.a"], {"factor": 1.8, "offset": 32.0}, [25.0], 77.0),
])
def test_operation(op: str, inputs: list[str], kw: dict[str, float], values: list[float], expected: float) -> None:
    """One burst with every input gives one good result at the burst's time."""
    calc = Calculation("x", op, inputs, **kw)
    for tag, value in zip(inputs, values, strict=True):
        calc.observe(tag, T0, value, Quality.GOOD)

    result = calc.compute()

    assert result == Sample("calc.x", T0, pytest.approx(expected), Quality.GOOD, None)


def test_integral_is_sample_and_hold() -> None:
    """A flow of 3600 m3/h held 10 s then 1800 m3/h held 20 s totals 10 + 10 m3 with factor 1/3600."""
    calc = Calculation("total", "integral", ["d.flow"], factor=1 / 3600)
    for at, flow in ((0, 3600.0), (10, 1800.0), (30, 0.0)):
        calc.observe("d.flow", T0 + at * 1000, flow, Quality.GOOD)

    result = calc.compute()

    assert result is not None
    assert (result.ts_ms, result.value) == (T0 + 30_000, pytest.approx(20.0))


def test_nothing_before_every_input_reported() -> None:
    """Until each input has a value there is nothing to compute."""
    calc = Calculation("x", "sum", ["d.a", "d.b"])
    calc.observe("d.a", T0, 1.0, Quality.GOOD)

    assert calc.compute() is None


def test_bad_input_makes_a_bad_result_naming_it() -> None:
    """A bad input gives a bad sample whose reason names the input, not a silently wrong sum."""
    calc = Calculation("x", "sum", ["d.a", "d.b"])
    calc.observe("d.a", T0, 1.0, Quality.GOOD)
    calc.observe("d.b", T0, None, Quality.BAD)

    assert calc.compute() == Sample("calc.x", T0, None, Quality.BAD, "input d.b is not good")


@pytest.mark.parametrize(("op", "values", "kw"), [
    ("sum", [1e308, 1e308], {}),
    ("mean", [1e308, 1e308], {}),
    ("difference", [1e308, -1e308], {}),
    ("scale", [1e308, 0.0], {"factor": 10.0}),
])
def test_result_out_of_range_is_a_bad_sample(op: str, values: list[float], kw: dict[str, float]) -> None:
    """Finite inputs whose result does not fit a float give a bad sample saying so, never an exception in the
    drivers' sink or an infinity in the statistics."""
    calc = Calculation("x", op, ["d.a", "d.b"], **kw)
    calc.observe("d.a", T0, values[0], Quality.GOOD)
    calc.observe("d.b", T0, values[1], Quality.GOOD)

    assert calc.compute() == Sample("calc.x", T0, None, Quality.BAD, "result out of range")


def test_stale_input_makes_a_bad_result() -> None:
    """An input older than max_age_s when another updates makes the result bad."""
    calc = Calculation("x", "sum", ["d.a", "e.b"], max_age_s=5)
    calc.observe("d.a", T0, 1.0, Quality.GOOD)
    calc.observe("e.b", T0, 1.0, Quality.GOOD)
    calc.observe("d.a", T0 + 6_000, 2.0, Quality.GOOD)

    assert calc.compute() == Sample("calc.x", T0 + 6_000, None, Quality.BAD, "input e.b is stale")


def test_calculated_tag_is_aggregated_once_per_burst() -> None:
    """Inputs arriving in one poll produce one calculated sample, which gets its own window row."""
    clock = FakeClock(start=T0 / 1000)
    pipeline = Pipeline(window_s=10, clock=clock, calculated=[Calculation("total", "sum", ["d.a", "d.b"])])
    pipeline.ingest([Sample("d.a", T0 + 1_000, 1.0), Sample("d.b", T0 + 1_000, 2.0)])
    pipeline.ingest([Sample("d.a", T0 + 2_000, 3.0), Sample("d.b", T0 + 2_000, 4.0)])
    clock._now = 60

    rows = {r[0]: dict(zip(WIN_COLUMNS, r, strict=True)) for r in pipeline.collect().win}

    assert (rows["calc.total"]["count"], rows["calc.total"]["min"], rows["calc.total"]["max"]) == (2, 3.0, 7.0)
