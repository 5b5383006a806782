"""Decoders (regex, struct) and the mapping of decoded fields to samples."""

from __future__ import annotations

import struct

import pytest

from agent.core.sample import Quality, Sample
from drivers.serial.config import SerialTag
from drivers.serial.decoding import DecodeError, RegexDecoder, StructDecoder
from drivers.serial.samples import TagMapper


def test_regex_must_match_the_whole_body() -> None:
    """Trailing garbage after a matching prefix rejects the body ('no match'), it is not half-read."""
    decoder = RegexDecoder([r"CH4,(?P<ch4>\d+\.\d+)"])

    assert decoder.decode(b"CH4,1.25") == {"ch4": "1.25"}
    with pytest.raises(DecodeError, match="no match"):
        decoder.decode(b"CH4,1.25xx")


def test_first_matching_pattern_decides_the_fields() -> None:
    """With several sentence types, only the matching pattern's groups are returned."""
    decoder = RegexDecoder([r"A,(?P<a>\d+)", r"B,(?P<b>\d+)"])

    assert decoder.decode(b"B,7") == {"b": "7"}
    assert decoder.fields == {"a", "b"}


def test_struct_decodes_big_endian_fields_and_ignores_unnamed_ones() -> None:
    """Values map to their names in layout order, unnamed ones are dropped; a body of another size is
    rejected ('wrong length')."""
    decoder = StructDecoder(">BHh", ["", "pm10", "temp"])

    assert decoder.decode(struct.pack(">BHh", 9, 300, -12)) == {"pm10": 300, "temp": -12}
    with pytest.raises(DecodeError, match="wrong length"):
        decoder.decode(b"\x00\x01")


def mapper(**tag: object) -> TagMapper:
    return TagMapper("dev", [SerialTag.model_validate({"name": "t", **tag})])


def test_scale_and_offset_apply_to_numbers_from_text_and_binary() -> None:
    """value = raw * scale + offset, whether the raw value is text or an integer."""
    m = mapper(field="x", scale=0.1, offset=-5.0)

    assert m.samples({"x": "250"}, 7) == [Sample("dev.t", 7, 20.0)]
    assert m.samples({"x": 250}, 7) == [Sample("dev.t", 7, 20.0)]


def test_field_that_is_not_a_number_gives_a_bad_sample_with_the_text() -> None:
    """A sensor showing '--.-' while warming up yields BAD 'not a number', not a crash."""
    m = mapper(field="x")

    assert m.samples({"x": "--.-"}, 1) == [Sample("dev.t", 1, None, Quality.BAD, "not a number: '--.-'")]


def test_empty_or_absent_group_gives_a_bad_sample() -> None:
    """An empty NMEA field (',,') or an optional group that did not take part means 'no value'."""
    m = mapper(field="x")

    assert m.samples({"x": ""}, 1) == [Sample("dev.t", 1, None, Quality.BAD, "no value")]
    assert m.samples({"x": None}, 1) == [Sample("dev.t", 1, None, Quality.BAD, "no value")]


def test_tag_whose_field_is_not_in_this_frame_gets_no_sample() -> None:
    """A frame of another sentence type leaves the tag alone."""
    assert mapper(field="x").samples({"y": "1"}, 1) == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("00", Sample("dev.t", 1, 3.0)),
        (0, Sample("dev.t", 1, 3.0)),
        ("01", Sample("dev.t", 1, 3.0, Quality.UNCERTAIN, "status 01")),
        ("80", Sample("dev.t", 1, None, Quality.BAD, "status 80")),
    ],
)
def test_status_field_sets_quality(status: object, expected: Sample) -> None:
    """Configured good values give GOOD, uncertain ones UNCERTAIN, anything else BAD ('00' matches 0)."""
    m = mapper(field="x", status_field="s", status_good=[0], status_uncertain=["1"])

    assert m.samples({"x": "3", "s": status}, 1) == [expected]
