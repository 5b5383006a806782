"""Checksums: catalogue check values, placement, coverage and encodings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.checksum import (
    ALGORITHMS,
    ChecksumSpec,
    crc16_ccitt,
    crc16_modbus,
    crc16_xmodem,
    sum8,
    xor8,
)

CHECK = b"123456789"


@pytest.mark.parametrize(
    ("function", "expected"),
    [(sum8, 0xDD), (xor8, 0x31), (crc16_modbus, 0x4B37), (crc16_ccitt, 0x29B1), (crc16_xmodem, 0x31C3)],
)
def test_algorithms_match_their_catalogue_check_values(function: object, expected: int) -> None:
    """Each algorithm gives the published check value over '123456789' (reveng CRC catalogue)."""
    assert function(CHECK) == expected  # type: ignore[operator]


@given(st.binary(max_size=300))
def test_xor8_equals_the_bytewise_definition(data: bytes) -> None:
    """The folding XOR equals XOR-ing the bytes one by one, for any length."""
    expected = 0
    for b in data:
        expected ^= b

    assert xor8(data) == expected


def test_nmea_checksum_covers_bytes_between_dollar_and_star() -> None:
    """A real NMEA sentence (a widely quoted GPGGA example) verifies with xor8 hex after '*'."""
    spec = ChecksumSpec("xor8", "hex", separator=b"*", cover_from=1)
    sentence = b"$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76"

    assert spec.check(sentence)
    assert spec.check(sentence.replace(b"*76", b"*77")) is False


def test_modbus_crc_is_read_low_byte_first_when_configured_little() -> None:
    """A Modbus RTU request (01 03 00 00 00 0A) carries CRC C5 CD on the wire."""
    spec = ChecksumSpec("crc16-modbus", "binary", byte_order="little", cover_from=0)

    assert spec.append(bytes.fromhex("01030000000a")) == bytes.fromhex("01030000000ac5cd")
    assert spec.check(bytes.fromhex("01030000000ac5cd"))
    assert spec.check(bytes.fromhex("01030000000acdc5")) is False


def test_hex_checksum_accepts_lower_case_and_rejects_non_hex() -> None:
    """Hex digits may be either case; anything else (even '+1', which int() would accept) fails."""
    spec = ChecksumSpec("sum8", "hex", separator=b";", cover_from=0)
    frame = spec.append(b"AB")  # sum 0x83

    assert frame == b"AB;83"
    assert spec.check(b"AB;83")
    assert spec.check(ChecksumSpec("sum8", "hex", separator=b";").append(b"\x0a\x00").lower())
    assert spec.check(b"AB;+3") is False
    assert spec.check(b"AB;8 ") is False


def test_missing_separator_fails_the_check() -> None:
    """The separator must sit exactly before the checksum field."""
    spec = ChecksumSpec("xor8", "hex", separator=b"*", cover_from=1)

    assert spec.check(b"$ABC,41") is False


def test_frame_too_short_to_hold_the_checksum_fails() -> None:
    """A frame shorter than coverage start plus trailer is rejected, not indexed out of range."""
    spec = ChecksumSpec("crc16-ccitt", cover_from=2)

    assert spec.check(b"\xaa\x55\x01") is False


@given(
    st.sampled_from(sorted(ALGORITHMS)),
    st.sampled_from(["binary", "hex"]),
    st.sampled_from(["big", "little"]),
    st.binary(max_size=60),
    st.integers(0, 3),
)
def test_appended_checksum_always_verifies_and_any_single_byte_change_fails(
    algorithm: str, encoding: str, order: str, data: bytes, cover_from: int
) -> None:
    """append() then check() succeeds; changing any one covered byte makes check() fail."""
    spec = ChecksumSpec(algorithm, encoding, order, b"", cover_from)  # type: ignore[arg-type]
    data = bytes(cover_from) + data
    frame = spec.append(data)

    assert spec.check(frame)
    for at in range(cover_from, len(data)):
        broken = bytearray(frame)
        broken[at] ^= 0x01
        assert spec.check(bytes(broken)) is False
