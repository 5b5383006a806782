"""Configuration of serial devices: validated at load, with messages a technician can act on."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from config.schema import AgentConfig
from drivers.serial.config import SerialDevice

HERE = Path(__file__).parent
PACKAGE = HERE.parent
EXAMPLES = sorted((PACKAGE.parent.parent / "config" / "examples").glob("serial-*.toml"))

BASE: dict[str, Any] = {
    "protocol": "serial",
    "port": "/dev/ttyUSB0",
    "framing": {"type": "delimited", "end": "\r\n"},
    "decode": {"type": "regex", "pattern": r"CH4,(?P<ch4>\d+\.\d+),(?P<st>\d\d)"},
    "tags": [{"name": "ch4"}],
}


def device(**changes: Any) -> SerialDevice:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and "type" not in value:
            data[key].update(value)  # adjust a table; a new "type" replaces it
        else:
            data[key] = value
    return SerialDevice.model_validate(data)


def error_of(**changes: Any) -> str:
    with pytest.raises(ValidationError) as info:
        device(**changes)
    return str(info.value)


def test_minimal_device_is_valid_with_documented_defaults() -> None:
    """Only port, framing, decode and tags are required; the line defaults to 9600 8N1, stream mode."""
    d = device()

    assert (d.baudrate, d.bytesize, d.parity, d.stopbits, d.mode) == (9600, 8, "none", 1, "stream")


def test_byte_strings_accept_text_escapes_and_integer_lists() -> None:
    """'\\u0002' and [0xAA, 0x55] both configure raw bytes."""
    d = device(
        framing={"type": "length", "start": [0xAA, 0x55], "length": 8},
        decode={"type": "struct", "layout": ">BBHH", "fields": ["a", "b", "ch4", "d"]},
    )

    assert d.framing.start == b"\xaa\x55"
    assert device(framing={"start": "\u0002", "end": "\u0003"}).framing.start == b"\x02"


def test_invalid_regex_is_reported_with_the_pattern() -> None:
    """A pattern that does not compile names itself and the regex error."""
    message = error_of(decode={"type": "regex", "pattern": r"CH4,(?P<ch4>\d+"})

    assert "is not a valid regular expression" in message
    assert "missing ), unterminated subpattern" in message


def test_tag_without_a_named_group_is_reported_with_the_groups_available() -> None:
    """A tag reading a group the pattern lacks says which group to add and lists the decoded fields."""
    message = error_of(tags=[{"name": "co", "field": "co_ppm"}])

    assert "tag 'co': field 'co_ppm' is not decoded" in message
    assert "(?P<co_ppm>...)" in message
    assert "['ch4', 'st']" in message


def test_pattern_without_named_groups_is_rejected() -> None:
    """A regex with only anonymous groups cannot feed any tag."""
    assert "has no named group" in error_of(decode={"pattern": r"CH4,(\d+)"})


def test_bad_struct_layout_is_reported() -> None:
    """A layout struct cannot parse is named with struct's reason."""
    message = error_of(decode={"type": "struct", "layout": ">HQz", "fields": ["ch4"]})

    assert "is not a valid struct layout" in message


def test_struct_layout_must_state_its_byte_order() -> None:
    """A layout without '<' or '>' would silently use native order and alignment: rejected."""
    assert "must start with its byte order" in error_of(
        decode={"type": "struct", "layout": "HH", "fields": ["ch4", "x"]}
    )


def test_struct_value_count_must_match_field_names() -> None:
    """Three values for two names is an error that gives both counts."""
    message = error_of(decode={"type": "struct", "layout": ">BHH", "fields": ["ch4", "x"]})

    assert "yields 3 values but decode.fields names 2" in message


def test_fixed_length_frame_must_fit_the_struct_layout() -> None:
    """A fixed frame length whose body differs from the layout's size is inconsistent framing."""
    message = error_of(
        framing={"type": "length", "start": [0xAA], "length": 7},
        checksum={"type": "sum8"},
        decode={"type": "struct", "layout": ">HH", "fields": ["ch4", "x"]},
    )

    assert "decode.layout '>HH' is 4 bytes but a 7-byte frame has a 5-byte body" in message


def test_length_framing_needs_a_start_marker_and_one_length_source() -> None:
    """Without a start marker there is no resynchronising; length and length_offset exclude each other."""
    assert "framing.start must not be empty" in error_of(framing={"type": "length", "start": "", "length": 4})
    assert "set exactly one of framing.length" in error_of(
        framing={"type": "length", "start": "#", "length": 4, "length_offset": 1}
    )


def test_length_field_inside_start_marker_is_rejected() -> None:
    """A length field overlapping the start marker is inconsistent framing."""
    assert "lies inside the 2-byte start marker" in error_of(
        framing={"type": "length", "start": [0xAA, 0x55], "length_offset": 1}
    )


def test_delimited_framing_rejects_identical_start_and_end() -> None:
    """Start and end markers that are the same bytes cannot delimit frames."""
    assert "are the same bytes" in error_of(framing={"start": "\n", "end": "\n"})


def test_poll_mode_needs_a_poll_table_and_tags_bound_to_addresses() -> None:
    """Several polled addresses need every tag to say which one it reads."""
    assert "mode = 'poll' needs a [poll] table" in error_of(mode="poll")
    message = error_of(mode="poll", poll={"command": "#{address:02d}\r", "addresses": [1, 2]})
    assert "tag 'ch4' needs address = one of [1, 2]" in message


def test_poll_command_with_unknown_placeholder_is_rejected() -> None:
    """Only {address} may be substituted; the message says how to write a literal brace."""
    message = error_of(mode="poll", poll={"command": "{adress}"})

    assert "poll.command cannot be formatted" in message
    assert "{{" in message


def test_non_latin1_characters_in_byte_strings_are_rejected() -> None:
    """A character above \\u00FF cannot be one byte; the message says how to write bytes."""
    assert "write each byte as \\u00XX" in error_of(framing={"end": "\u20ac"})


def test_unknown_key_is_rejected() -> None:
    """A typo such as 'baud' is an error, never silently ignored."""
    assert "Extra inputs are not permitted" in error_of(baud=9600)


def test_status_mapping_needs_status_field_and_good_values() -> None:
    """status_good without status_field, or status_field without status_good, are both errors."""
    assert "need status_field" in error_of(tags=[{"name": "ch4", "status_good": ["00"]}])
    assert "needs status_good" in error_of(tags=[{"name": "ch4", "status_field": "st"}])


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_profiles_load_through_the_agent_schema(path: Path) -> None:
    """Every config/examples/serial-*.toml is a valid agent configuration."""
    config = AgentConfig.model_validate(tomllib.loads(path.read_text()))

    assert [d.protocol for d in config.devices.values()] == ["serial"]


def test_sample_fragment_is_a_valid_device() -> None:
    """sample.toml validates as a serial device."""
    data = tomllib.loads((PACKAGE / "sample.toml").read_text())

    assert SerialDevice.model_validate(data["devices"]["methane"]).port == "/dev/ttyUSB0"


def test_readme_contains_the_sample_verbatim() -> None:
    """The README's configuration section is sample.toml, byte for byte, so they cannot drift."""
    assert (PACKAGE / "sample.toml").read_text() in (PACKAGE / "README.md").read_text()
