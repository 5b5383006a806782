"""The bulk decoder: every data type in every byte order, and the values that must become bad samples."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from agent.core.sample import Quality, Sample
from drivers.modbus.config import ModbusTag
from drivers.modbus.decode import BitBlockDecoder, RegisterBlockDecoder, compile_tag
from drivers.modbus.tests.server import encode_registers

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
PACK = {
    "uint16": ">H",
    "int16": ">h",
    "uint32": ">I",
    "int32": ">i",
    "uint64": ">Q",
    "int64": ">q",
    "float32": ">f",
    "float64": ">d",
}
VALUES: list[tuple[str, Any]] = [
    ("uint16", 0),
    ("uint16", 65535),
    ("uint16", 0x1234),
    ("int16", -1),
    ("int16", -32768),
    ("int16", 32767),
    ("uint32", 4_000_000_000),
    ("uint32", 0x01020304),
    ("int32", -123_456_789),
    ("int32", 2**31 - 1),
    ("uint64", 2**64 - 1),
    ("uint64", 0x0102030405060708),
    ("int64", -(2**63)),
    ("int64", -5),
    ("float32", 1.5),
    ("float32", -2.25),
    ("float32", 0.0),
    ("float64", math.pi),
    ("float64", -1e300),
]


def decode_one(tag: dict[str, Any], registers: list[int], order: str = "ABCD") -> Sample:
    compiled = compile_tag("dev", ModbusTag(name="t", **tag), order)
    out: list[Sample] = []
    RegisterBlockDecoder(tag.get("address", 0), len(registers), [compiled]).decode(out, registers, 1000)
    (sample,) = out
    return sample


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(("kind", "value"), VALUES, ids=[f"{k}={v}" for k, v in VALUES])
def test_number_in_each_byte_order(kind: str, value: Any, order: str) -> None:
    """A value encoded in a byte order decodes to itself when the tag names that order."""
    registers = encode_registers(struct.pack(PACK[kind], value), order)

    sample = decode_one({"address": 0, "type": kind, "order": order}, registers)

    assert sample == Sample("dev.t", 1000, value, Quality.GOOD, None)


@pytest.mark.parametrize(
    ("kind", "registers", "word_order", "data_type"),
    [
        ("float32", [0x3FC0, 0x0000], "big", "FLOAT32"),
        ("float32", [0x0000, 0x3FC0], "little", "FLOAT32"),
        ("int32", [0x075B, 0xCD15], "big", "INT32"),
        ("int32", [0xCD15, 0x075B], "little", "INT32"),
        ("float64", [0x4009, 0x21FB, 0x5444, 0x2D18], "big", "FLOAT64"),
        ("float64", [0x2D18, 0x5444, 0x21FB, 0x4009], "little", "FLOAT64"),
    ],
)
def test_agrees_with_pymodbus_converter(
    kind: str, registers: list[int], word_order: str, data_type: str
) -> None:
    """ABCD and CDAB agree with pymodbus' own converter (big and little word order)."""
    expected = AsyncModbusTcpClient.convert_from_registers(
        registers, getattr(AsyncModbusTcpClient.DATATYPE, data_type), word_order=word_order
    )
    order = "ABCD" if word_order == "big" else "CDAB"

    assert decode_one({"address": 0, "type": kind, "order": order}, registers).value == expected


@pytest.mark.parametrize("kind", ["float32", "float64"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_float_is_bad_with_reason(kind: str, value: float) -> None:
    """NaN and infinities are bad samples naming what the device sent, never values."""
    registers = encode_registers(struct.pack(PACK[kind], value))

    sample = decode_one({"address": 0, "type": kind}, registers)

    assert (sample.value, sample.quality) == (None, Quality.BAD)
    assert sample.reason == f"device sent {value} (no valid value)"


@pytest.mark.parametrize(
    ("tag", "registers", "expected"),
    [
        ({"type": "int16", "scale": 0.1}, [0xFF9C], pytest.approx(-10.0)),
        ({"type": "uint16", "scale": 2, "offset": -3}, [10], 17.0),
        ({"type": "float32", "scale": 10, "offset": 1}, [0x3FC0, 0], 16.0),
        ({"type": "bool", "bit": 0}, [0x0001], True),
        ({"type": "bool", "bit": 15}, [0x8000], True),
        ({"type": "bool", "bit": 14}, [0x8000], False),
        ({"type": "bcd16"}, [0x1234], 1234),
        ({"type": "bcd16", "scale": 0.01}, [0x0999], pytest.approx(9.99)),
        ({"type": "bcd32"}, [0x1234, 0x5678], 12345678),
        ({"type": "bcd32", "order": "CDAB"}, [0x5678, 0x1234], 12345678),
        ({"type": "string", "length": 3}, [0x4845, 0x4C4C, 0x4F00], "HELLO"),
        ({"type": "string", "length": 3, "order": "BADC"}, [0x4548, 0x4C4C, 0x004F], "HELLO"),
        ({"type": "string", "length": 2}, [0x4142, 0x2020], "AB"),
        ({"type": "uint16", "enum": {"0": "stopped", "1": "running"}}, [1], "running"),
        ({"type": "uint16", "enum": {"0x10": "fault"}}, [16], "fault"),
    ],
)
def test_conversions(tag: dict[str, Any], registers: list[int], expected: Any) -> None:
    """Scale/offset, register bits, BCD, strings and enum maps decode as documented."""
    sample = decode_one({"address": 0, **tag}, registers)

    assert sample.quality == Quality.GOOD
    assert sample.value == expected


def test_invalid_bcd_digit_is_bad() -> None:
    """A BCD word with a nibble above 9 is a bad sample, not a wrong number."""
    sample = decode_one({"address": 0, "type": "bcd16"}, [0x12A4])

    assert (sample.quality, sample.reason) == (Quality.BAD, "invalid BCD 0x12a4")


def test_value_missing_from_enum_is_uncertain_with_raw_value() -> None:
    """A status code not in the enum map keeps its raw integer and is marked uncertain."""
    sample = decode_one({"address": 0, "type": "uint16", "enum": {"0": "stopped"}}, [7])

    assert (sample.value, sample.quality, sample.reason) == (7, Quality.UNCERTAIN, "value 7 not in enum map")


def test_block_with_gaps_overlaps_and_mixed_orders() -> None:
    """One block decodes tags at offsets, over gaps, in several orders, and two views of one register."""
    registers = [0] * 12
    registers[0] = 0x8001
    registers[2:4] = encode_registers(struct.pack(">f", 1.5), "CDAB")
    registers[6:8] = encode_registers(struct.pack(">i", -7), "ABCD")
    registers[10:12] = encode_registers(struct.pack(">I", 99), "DCBA")
    tags = [
        ModbusTag(name="word", address=100, type="uint16"),
        ModbusTag(name="b0", address=100, type="bool", bit=0),
        ModbusTag(name="b15", address=100, type="bool", bit=15),
        ModbusTag(name="f", address=102, type="float32", order="CDAB"),
        ModbusTag(name="i", address=106, type="int32"),
        ModbusTag(name="u", address=110, type="uint32", order="DCBA"),
    ]
    decoder = RegisterBlockDecoder(100, 12, [compile_tag("d", t, "ABCD") for t in tags])
    out: list[Sample] = []

    decoder.decode(out, registers, 5)

    assert {s.tag: s.value for s in out} == {
        "d.word": 0x8001,
        "d.b0": True,
        "d.b15": True,
        "d.f": 1.5,
        "d.i": -7,
        "d.u": 99,
    }


def test_short_response_makes_every_tag_bad() -> None:
    """Fewer registers than requested is a bad sample per tag, never a misaligned value."""
    tags = [compile_tag("d", ModbusTag(name=f"t{i}", address=i), "ABCD") for i in range(3)]
    out: list[Sample] = []

    RegisterBlockDecoder(0, 3, tags).decode(out, [1, 2], 5)

    assert [s.quality for s in out] == [Quality.BAD] * 3
    assert out[0].reason == "short response: 2 of 3 registers"


def test_bits_decode_at_offsets() -> None:
    """Coil tags take their bit at their offset in a response padded to whole bytes."""
    tags = [compile_tag("d", ModbusTag(name=f"c{a}", table="coil", address=a), "ABCD") for a in (10, 12, 17)]
    bits = [False] * 8 + [False] * 8
    bits[2] = True
    bits[7] = True
    out: list[Sample] = []

    BitBlockDecoder(10, 8, tags).decode(out, bits, 5)

    assert [(s.tag, s.value) for s in out] == [("d.c10", False), ("d.c12", True), ("d.c17", True)]
