"""Sample blocks give the pipeline's rows exactly as their samples do (mean/std/twa up to the last bits).

The pipeline keeps a block's bytes and computes its tags' statistics from columns at window close, leaving
that path for a tag whenever it could differ (hooks, samples of the same tag in the window, another layout,
time going backwards, late blocks, non-finite values). The property test feeds the same random polls to two
pipelines, once as ``Poll`` objects with blocks and once expanded to plain sample lists, and compares
everything they put out.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.clock import FakeClock
from agent.core.sample import BlockLayout, Poll, Quality, Sample, SampleBlock
from agent.pipeline.alarms import TagAlarms
from agent.pipeline.calculated import Calculation
from agent.pipeline.deadband import Deadband
from agent.pipeline.last_values import LastValues
from agent.pipeline.pipeline import Pipeline
from agent.protocol.tables import WIN_COLUMNS

T0 = 1_700_000_000_000
TAGS = [f"d.t{i}" for i in range(6)]
FLOAT_COLUMNS = {WIN_COLUMNS.index(c) for c in ("mean", "std", "twa")}
FORMATS = {
    "H": st.integers(0, 2**16 - 1),
    "h": st.integers(-(2**15), 2**15 - 1),
    "q": st.integers(-(2**63), 2**63 - 1),
    "f": st.floats(width=32),  # NaN and infinities included
    "d": st.one_of(st.floats(), st.sampled_from([1e308, -1e308, 5e307])),
}


class _Layout:
    """A layout with what the test needs to make its blocks as the Modbus decoder does."""

    def __init__(self, names: list[str], fmts: list[str], transforms: list[tuple[float, float] | None]) -> None:
        self.fmts = fmts
        self.struct = struct.Struct(">" + "".join(fmts))
        self.layout = BlockLayout(names, self.struct.unpack_from, transforms)

    def add_to(self, poll: Poll, ts: int, raw: list[Any]) -> None:
        """A block, or (a float the device sent as NaN or infinity) the samples the decoder would make."""
        data = self.struct.pack(*raw)
        values = self.struct.unpack(data)
        if all(math.isfinite(v) for v in values):
            poll.add_block(SampleBlock(self.layout, ts, data))
            return
        for name, v, t in zip(self.layout.names, values, self.layout.transforms, strict=True):
            if not math.isfinite(v):
                poll.append(Sample(name, ts, None, Quality.BAD, f"device sent {v} (no valid value)"))
            else:
                poll.append(Sample(name, ts, v if t is None else v * t[0] + t[1]))


@st.composite
def layouts(draw: st.DrawFn) -> list[_Layout]:
    """Two or three layouts over the same few tags: a re-planned request changes which layout holds a tag."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        names = draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=4, unique=True))
        fmts, transforms = [], []
        for _ in names:
            fmt = draw(st.sampled_from(sorted(FORMATS)))
            fmts.append(fmt)
            if fmt in "fd" or draw(st.booleans()):
                transforms.append(draw(st.sampled_from([(1.0, 0.0), (0.1, -5.0), (2.5, 0.25), (1e300, 0.0)])))
            else:
                transforms.append(None)
        out.append(_Layout(names, fmts, transforms))
    return out


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[_Layout], list[tuple[str, Any]], dict[str, Any]]:
    lays = draw(layouts())
    hooks = {
        "raw": draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
        "deadband": draw(st.lists(st.sampled_from(TAGS), max_size=1, unique=True)),
        "alarm": draw(st.lists(st.sampled_from(TAGS), max_size=1, unique=True)),
        "calc": draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True)),
    }
    events: list[tuple[str, Any]] = []
    now = 0  # ms after T0 of the latest poll
    for _ in range(draw(st.integers(1, 40))):
        action = draw(st.sampled_from(["poll"] * 6 + ["collect", "late", "back"]))
        if action == "collect":
            events.append(("collect", draw(st.integers(0, 3000))))
            continue
        if action == "poll":
            now += draw(st.sampled_from([0, 1, 250, 1000, 1000, 1000, 3000, 9999, 25_000]))
            ts = now
        elif action == "back":  # the clock stepped back a little (NTP): out of order within the window
            ts = max(0, now - draw(st.integers(1, 1500)))
        else:  # stamped long before: its window is closed if the pipeline collected since
            ts = max(0, now - draw(st.integers(12_000, 40_000)))
        parts: list[tuple[Any, ...]] = []
        for _ in range(draw(st.integers(1, 3))):
            if draw(st.integers(0, 3)) == 0:
                bad = draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=3, unique=True))
                parts.append(("bad", bad))
            else:
                i = draw(st.integers(0, len(lays) - 1))
                raw = [draw(FORMATS[f]) for f in lays[i].fmts]
                parts.append(("block", i, raw, draw(st.integers(0, 20))))
        events.append(("poll", (ts, parts)))
    return lays, events, hooks


def _pipeline(clock: FakeClock, hooks: dict[str, Any]) -> Pipeline:
    return Pipeline(
        window_s=10,
        late_grace_s=2.0,
        clock=clock,
        raw_tags=hooks["raw"],
        deadbands={t: Deadband(absolute=5.0) for t in hooks["deadband"]},
        alarms=[TagAlarms(t, now_ms=T0, high=100.0) for t in hooks["alarm"]],
        calculated=[Calculation("c1", "max", hooks["calc"])] if hooks["calc"] else [],
    )


def _run(lays: list[_Layout], events: list[tuple[str, Any]], hooks: dict[str, Any], *, blocks: bool) -> Any:
    clock = FakeClock(start=T0 / 1000)
    p = _pipeline(clock, hooks)
    tail = LastValues()
    outputs = []
    latest = 0
    for kind, arg in events:
        if kind == "collect":
            clock._now = max(clock._now, latest / 1000 + arg / 1000)
            outputs.append(p.collect())
            continue
        ts, parts = arg
        latest = max(latest, ts)
        clock._now = max(clock._now, latest / 1000)
        poll = Poll()
        for part in parts:
            if part[0] == "bad":
                poll.extend(Sample(t, T0 + ts, None, Quality.BAD, "timeout") for t in part[1])
            else:
                _, i, raw, dt = part
                lays[i].add_to(poll, T0 + ts + dt, raw)
        fed = poll if blocks else list(poll)
        p.ingest(fed)
        tail.record(fed)
    clock._now += 60
    outputs.append(p.collect(final=True))
    win = sorted((row for out in outputs for row in out.window_rows()), key=lambda r: (r[1], r[0]))
    raw = [row for out in outputs for row in out.raw]
    alarm = [row for out in outputs for row in out.alarm]
    return win, raw, alarm, p.stats, tail.select(["*"])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return (type(a) is type(b) and a == b) or (a is None and b is None)


def _assert_same_rows(got: list[list[Any]], want: list[list[Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w)
        for col, (x, y) in enumerate(zip(g, w, strict=True)):
            if col in FLOAT_COLUMNS:
                assert _same(x, y), (WIN_COLUMNS[col], g, w)
            else:
                assert type(x) is type(y), (WIN_COLUMNS[col], g, w)
                assert x == y, (WIN_COLUMNS[col], g, w)


@settings(max_examples=400, deadline=None)
@given(scenario())
def test_blocks_give_what_their_samples_give(case: tuple[list[_Layout], list[tuple[str, Any]], dict[str, Any]]) -> None:
    """Same window rows, raw rows, alarm rows, statistics and tail, whether blocks or their samples come in."""
    lays, events, hooks = case
    got = _run(lays, events, hooks, blocks=True)
    want = _run(lays, events, hooks, blocks=False)

    _assert_same_rows(got[0], want[0])
    assert got[1] == want[1]
    assert got[2] == want[2]
    assert got[3] == want[3]
    assert got[4] == want[4]


def test_plain_blocks_stay_columns_until_close() -> None:
    """Blocks of tags without hooks keep no per-tag state while the window is open; the row is exact."""
    layout = _Layout(["d.a", "d.b"], ["H", "H"], [None, None])
    clock = FakeClock(start=T0 / 1000)
    p = Pipeline(window_s=10, late_grace_s=2.0, clock=clock)
    for i, (a, b) in enumerate([(1, 7), (3, 7), (2, 9)]):
        poll = Poll()
        layout.add_to(poll, T0 + 1000 * i, [a, b])
        p.ingest(poll)

    assert p._open[T0] == {}  # nothing per tag: only the rows of bytes
    clock._now = 13
    rows = {row[0]: dict(zip(WIN_COLUMNS, row, strict=True)) for row in p.collect().window_rows()}

    a = rows["d.a"]
    assert (a["count"], a["good"], a["bad"], a["min"], a["max"], a["first"], a["last"]) == (3, 3, 0, 1, 3, 1, 2)
    assert (a["min_ms"], a["max_ms"], a["first_ms"], a["last_ms"]) == (T0, T0 + 1000, T0, T0 + 2000)
    assert a["mean"] == 2.0
    assert math.isclose(a["std"], math.sqrt(2 / 3))
    assert math.isclose(a["twa"], (1 * 1000 + 3 * 1000 + 2 * 8000) / 10_000)
    assert math.isclose(rows["d.b"]["std"], math.sqrt(8 / 9))
