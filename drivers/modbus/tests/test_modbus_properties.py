"""Property tests: the decoder round-trips any value in any byte order; planner plans are always valid."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.sample import Poll, Quality, Sample
from drivers.modbus.config import ModbusTag
from drivers.modbus.decode import RegisterBlockDecoder, compile_tag
from drivers.modbus.planner import RegisterPlanner, TagSpan
from drivers.modbus.tests.server import encode_registers

FORMATS = {
    "uint16": (">H", st.integers(0, 2**16 - 1)),
    "int16": (">h", st.integers(-(2**15), 2**15 - 1)),
    "uint32": (">I", st.integers(0, 2**32 - 1)),
    "int32": (">i", st.integers(-(2**31), 2**31 - 1)),
    "uint64": (">Q", st.integers(0, 2**64 - 1)),
    "int64": (">q", st.integers(-(2**63), 2**63 - 1)),
    "float32": (">f", st.floats(width=32, allow_nan=False, allow_infinity=False)),
    "float64": (">d", st.floats(allow_nan=False, allow_infinity=False)),
}
ORDERS = st.sampled_from(["ABCD", "CDAB", "BADC", "DCBA"])


@st.composite
def typed_value(draw: st.DrawFn) -> tuple[str, object]:
    kind = draw(st.sampled_from(sorted(FORMATS)))
    return kind, draw(FORMATS[kind][1])


@settings(max_examples=300, deadline=None)
@given(typed_value(), ORDERS, st.integers(0, 10))
def test_any_value_round_trips_in_any_order(item: tuple[str, object], order: str, offset: int) -> None:
    """Any value of any numeric type, encoded in any byte order at any offset, decodes to itself."""
    kind, value = item
    registers = [0xDEAD] * offset + encode_registers(struct.pack(FORMATS[kind][0], value), order) + [0xBEEF]
    tag = ModbusTag(name="t", address=100 + offset, type=kind, order=order)  # type: ignore[arg-type]
    out: list[Sample] = []

    RegisterBlockDecoder(100, len(registers), [compile_tag("d", tag, "ABCD")]).decode(out, registers, 0)

    assert (out[0].value, out[0].quality) == (value, Quality.GOOD)


spans = st.lists(
    st.builds(
        lambda a, c: TagSpan(key=(a, c), table="holding", address=a, count=c),
        st.integers(0, 3000),
        st.sampled_from([1, 1, 1, 2, 2, 4, 10]),
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(spans, st.integers(1, 125), st.integers(0, 40))
def test_plans_cover_every_tag_within_limits(tags: list[TagSpan], limit: int, gap: int) -> None:
    """Every tag lies in exactly one request; no request exceeds the limit or reads a gap above max_gap."""
    tags = [t for t in tags if t.count <= limit] or [TagSpan((0, 1), "holding", 0, 1)]
    plan = RegisterPlanner(max_registers=limit, max_gap_registers=gap).plan(tags)

    assert sorted(t.key for r in plan for t in r.tags) == sorted(t.key for t in tags)
    for request in plan:
        assert request.count <= limit
        assert all(
            request.address <= t.address and t.address + t.count <= request.address + request.count
            for t in request.tags
        )
        covered = sorted((t.address, t.address + t.count) for t in request.tags)
        end = covered[0][1]
        for start, stop in covered[1:]:
            assert start - end <= gap
            end = max(end, stop)


@settings(max_examples=200, deadline=None)
@given(spans, st.integers(0, 40))
def test_more_gap_filling_never_needs_more_requests(tags: list[TagSpan], gap: int) -> None:
    """Allowing larger gaps never increases the number of requests (the greedy sweep is monotone)."""
    tags = [t for t in tags if t.count <= 125]
    fewer = len(RegisterPlanner(max_gap_registers=gap + 5).plan(tags))
    more = len(RegisterPlanner(max_gap_registers=gap).plan(tags))

    assert fewer <= more


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(typed_value(), ORDERS, st.sampled_from([(1.0, 0.0), (0.5, 3.0)])), min_size=1, max_size=6),
    st.lists(st.sampled_from(["bool", "nan", "enum"]), max_size=2),
)
def test_blocks_stand_for_the_samples_decode_gives(
    items: list[tuple[tuple[str, object], str, tuple[float, float]]], extras: list[str]
) -> None:
    """A poll decoded into blocks iterates as exactly the samples the per-sample decoding gives, whatever
    mix of types, orders, scales, NaNs and post-processed tags the request holds."""
    registers: list[int] = []
    tags = []
    for i, ((kind, value), order, (scale, offset)) in enumerate(items):
        tags.append(ModbusTag(name=f"t{i}", address=100 + len(registers), type=kind, order=order,  # type: ignore[arg-type]
                              scale=scale, offset=offset))
        registers += encode_registers(struct.pack(FORMATS[kind][0], value), order)
    for j, extra in enumerate(extras):
        if extra == "bool":
            tags.append(ModbusTag(name=f"x{j}", address=100 + len(registers), type="bool", bit=3))
            registers.append(0x0008)
        elif extra == "enum":
            tags.append(ModbusTag(name=f"x{j}", address=100 + len(registers), enum={"1": "run"}))
            registers.append(1)
        else:
            tags.append(ModbusTag(name=f"x{j}", address=100 + len(registers), type="float32"))
            registers += encode_registers(struct.pack(">f", float("nan")), "ABCD")
    decoder = RegisterBlockDecoder(100, len(registers), [compile_tag("d", t, "ABCD") for t in tags])
    out: list[Sample] = []
    poll = Poll()

    decoder.decode(out, registers, 7)
    decoder.decode_poll(poll, registers, 7)

    assert list(poll) == out
    assert len(poll) == len(out)
    assert poll.not_good() == sum(1 for s in out if s.quality)
