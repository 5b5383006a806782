"""The TOML key locator finds the line of every key path a validation error can name."""

from __future__ import annotations

import tomllib

import pytest

from config.locate import locate_keys

DOCUMENT = '''\
# comment with [brackets] and key = "value"
[gateway]
id = "gw1"  # trailing comment
"quoted key" = 1
'dotted.literal' = 2
note = """
[not_a_table]
fake = 1
"""
list = [
  1, # [not a table either]
  "x = 2",
  { a = 1, b.c = 2 },
]

[mqtt]
tls.ca_file = "/ca.pem"
inline = { x = { y = 1 } }

[[devices.plc1.tags]]
name = "a"

[[devices.plc1.tags]]
name = "b"
[devices.plc1.tags.extra]
q = 1

[devices.plc1]
host = "h"

[[fruits]]
[[fruits.varieties]]
name = "x"
[[fruits]]
[[fruits.varieties]]
name = "y"
[[fruits.varieties]]
name = "z"
'''


def test_document_is_valid_toml() -> None:
    """The sample document is valid TOML, so positions are checked on input the loader would accept."""
    assert tomllib.loads(DOCUMENT)["gateway"]["note"].startswith("[not_a_table]")


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("gateway",), 2),
        (("gateway", "id"), 3),
        (("gateway", "quoted key"), 4),
        (("gateway", "dotted.literal"), 5),
        (("gateway", "note"), 6),
        (("gateway", "list"), 10),
        (("gateway", "list", 0), 11),
        (("gateway", "list", 1), 12),
        (("gateway", "list", 2), 13),
        (("gateway", "list", 2, "b", "c"), 13),
        (("mqtt", "tls"), 17),
        (("mqtt", "tls", "ca_file"), 17),
        (("mqtt", "inline", "x", "y"), 18),
        (("devices", "plc1", "tags", 0), 20),
        (("devices", "plc1", "tags", 0, "name"), 21),
        (("devices", "plc1", "tags", 1), 23),
        (("devices", "plc1", "tags", 1, "name"), 24),
        (("devices", "plc1", "tags", 1, "extra", "q"), 26),
        (("devices", "plc1"), 28),
        (("devices", "plc1", "host"), 29),
        (("fruits", 0, "varieties", 0, "name"), 33),
        (("fruits", 1, "varieties", 0, "name"), 36),
        (("fruits", 1, "varieties", 1, "name"), 38),
    ],
)
def test_key_is_found_on_its_line(path: tuple[str | int, ...], line: int) -> None:
    """Each written key, table, array element and array-of-tables entry maps to the line it is written on."""
    assert line == locate_keys(DOCUMENT).line_of(path)


def test_content_of_multiline_strings_is_not_a_key() -> None:
    """Text inside a multi-line string that looks like a table or key is not taken for one."""
    located = locate_keys(DOCUMENT)

    assert (located.line_of(("not_a_table",)), located.line_of(("fake",))) == (None, None)


def test_explicit_table_header_wins_over_earlier_implicit_mention() -> None:
    """[devices.plc1] written after [[devices.plc1.tags]] holds the device's keys, so it is the line."""
    assert locate_keys(DOCUMENT).line_of(("devices", "plc1")) == 28


def test_unwritten_key_falls_back_to_nearest_written_table() -> None:
    """A key that is not written (a missing key, a default) is placed at its closest written ancestor."""
    assert locate_keys(DOCUMENT).nearest_line(("mqtt", "port")) == 16


def test_unwritten_top_level_table_has_no_line() -> None:
    """A table the file does not contain at all has no line."""
    assert locate_keys(DOCUMENT).nearest_line(("buffer", "sync")) is None


def test_text_the_scanner_cannot_follow_keeps_what_was_found() -> None:
    """Broken input does not raise: keys before the break are still located."""
    located = locate_keys('[a]\nb = 1\nc = "unterminated\nd = 2\n')

    assert (located.line_of(("a", "b")), located.line_of(("a", "d"))) == (2, None)


def test_crlf_line_endings_give_the_same_lines() -> None:
    """Files written on Windows (CRLF) are located line for line like LF files."""
    assert locate_keys("[a]\r\nb = 1\r\nc = 2\r\n").line_of(("a", "c")) == 3
