"""Device and tag settings of the serial driver (see sample.toml beside this file).

An instrument is described, not coded: port settings, framing, checksum, decoding and the tag mapping are
all configuration, validated here at load time without opening the port. Byte strings (markers, separators,
commands) are TOML strings whose characters are bytes 0-255 (``"\\r\\n"``, ``"\\u0002"`` for STX) or lists of
integers (``[0xAA, 0x55]``).
"""

from __future__ import annotations

__all__ = [
    "ChecksumConfig",
    "DelimitedFraming",
    "LengthFraming",
    "PollConfig",
    "RegexDecoding",
    "SerialDevice",
    "SerialTag",
    "StructDecoding",
]

import re
import struct
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema, model_validator

from agent.core.fields import DevicePath, Name, Seconds, StrictModel, TagCatalogFields
from drivers.serial.checksum import ChecksumSpec
from drivers.serial.decoding import Decoder, RegexDecoder, StructDecoder, struct_value_count
from drivers.serial.framing import DelimitedFramer, Framer, LengthFramer, Trace


def _to_bytes(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"{value!r} has characters above \\u00FF; "
                "write each byte as \\u00XX or give a list of integers"
            ) from None
    if isinstance(value, list):
        if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value):
            raise ValueError(f"{value!r}: a list of bytes must hold integers 0-255, e.g. [0xAA, 0x55]")
        return bytes(value)
    return value


ByteString = Annotated[
    bytes,
    BeforeValidator(_to_bytes),
    PlainSerializer(lambda b: b.decode("latin-1"), return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": "^[\\u0000-\\u00ff]*$"},
                {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}},
            ]
        }
    ),
    Field(description="A string of byte characters (\\r, \\n, \\u0002) or a list of integers 0-255."),
]


class ChecksumConfig(StrictModel):
    type: Literal["none", "sum8", "xor8", "crc16-modbus", "crc16-ccitt", "crc16-xmodem"] = Field(
        "none", description="Checksum algorithm; crc16-ccitt is CRC-16/CCITT-FALSE (init 0xFFFF)."
    )
    encoding: Literal["binary", "hex"] = Field("binary", description="binary bytes, or ASCII hex digits.")
    byte_order: Literal["big", "little"] = Field("big", description="Order of a 2-byte binary checksum.")
    separator: ByteString = Field(
        b"", description="Bytes between the data and the checksum, not covered (NMEA '*')."
    )
    cover_from: int | None = Field(
        None,
        ge=0,
        description="First covered byte, counted from the frame's first byte; default: after start.",
    )

    def spec(self, start: bytes) -> ChecksumSpec | None:
        if self.type == "none":
            return None
        return ChecksumSpec(
            algorithm=self.type,
            encoding=self.encoding,
            byte_order=self.byte_order,
            separator=self.separator,
            cover_from=len(start) if self.cover_from is None else self.cover_from,
        )


class DelimitedFraming(StrictModel):
    type: Literal["delimited"]
    start: ByteString = Field(
        b"", description="Start marker; empty means a frame starts after the previous end."
    )
    end: ByteString = Field(description="End marker, e.g. a line terminator '\\r\\n'.")
    max_length: Annotated[int, Field(ge=2, le=65536)] = Field(
        512, description="Longest frame in bytes, markers included; longer ones are rejected as 'too long'."
    )

    @model_validator(mode="after")
    def _markers(self) -> DelimitedFraming:
        if not self.end:
            raise ValueError(
                "framing.end must not be empty: a delimited frame is recognised by its end marker"
            )
        if self.start and self.start == self.end:
            raise ValueError(
                "framing.start and framing.end are the same bytes; frames could not be told apart"
            )
        return self


class LengthFraming(StrictModel):
    type: Literal["length"]
    start: ByteString = Field(description="Start marker (required: it is what the parser resynchronises on).")
    length: Annotated[int, Field(ge=1, le=65536)] | None = Field(
        None, description="Fixed frame length in bytes, start marker and checksum included."
    )
    length_offset: Annotated[int, Field(ge=0, le=1024)] | None = Field(
        None, description="Offset of the length field from the frame's first byte."
    )
    length_size: Literal[1, 2] = 1
    length_byte_order: Literal["big", "little"] = "big"
    length_adjust: Annotated[int, Field(ge=-65536, le=65536)] = Field(
        0, description="Frame length in bytes = length field value + length_adjust."
    )
    min_length: Annotated[int, Field(ge=1, le=65536)] | None = None
    max_length: Annotated[int, Field(ge=1, le=65536)] = 256

    @model_validator(mode="after")
    def _consistent(self) -> LengthFraming:
        if not self.start:
            raise ValueError(
                "framing.start must not be empty: length framing resynchronises on the start marker"
            )
        if (self.length is None) == (self.length_offset is None):
            raise ValueError(
                "set exactly one of framing.length (fixed) or framing.length_offset (length field)"
            )
        if self.length_offset is not None and self.length_offset < len(self.start):
            raise ValueError(
                f"framing.length_offset {self.length_offset} lies inside the "
                f"{len(self.start)}-byte start marker"
            )
        if self.min_length is not None and self.min_length > self.max_length:
            raise ValueError(
                f"framing.min_length {self.min_length} exceeds framing.max_length {self.max_length}"
            )
        return self


class RegexDecoding(StrictModel):
    type: Literal["regex"]
    pattern: str | list[str] = Field(
        description="Python regular expression(s) with named groups (?P<name>...), matching the whole body."
    )

    @property
    def patterns(self) -> list[str]:
        return [self.pattern] if isinstance(self.pattern, str) else list(self.pattern)

    @model_validator(mode="after")
    def _compiles(self) -> RegexDecoding:
        if not self.patterns:
            raise ValueError("decode.pattern is an empty list; give at least one regular expression")
        for p in self.patterns:
            try:
                compiled = re.compile(p)
            except re.error as exc:
                raise ValueError(f"decode.pattern {p!r} is not a valid regular expression: {exc}") from None
            if not compiled.groupindex:
                raise ValueError(f"decode.pattern {p!r} has no named group; write fields as (?P<name>...)")
        return self

    def field_names(self) -> frozenset[str]:
        return RegexDecoder(self.patterns).fields

    def decoder(self) -> Decoder:
        return RegexDecoder(self.patterns)


class StructDecoding(StrictModel):
    type: Literal["struct"]
    layout: str = Field(
        description="Python struct format, starting with its byte order: '>' big, '<' little."
    )
    fields: list[str] = Field(description="One name per value of the layout; '' for a value to ignore.")

    @model_validator(mode="after")
    def _layout(self) -> StructDecoding:
        if not self.layout or self.layout[0] not in "<>!":
            raise ValueError(
                f"decode.layout {self.layout!r} must start with its byte order: '>' (big) or '<' (little)"
            )
        try:
            count = struct_value_count(self.layout)
        except struct.error as exc:
            raise ValueError(f"decode.layout {self.layout!r} is not a valid struct layout: {exc}") from None
        if count != len(self.fields):
            raise ValueError(
                f"decode.layout {self.layout!r} yields {count} values "
                f"but decode.fields names {len(self.fields)}"
            )
        named = [f for f in self.fields if f]
        dupes = sorted(n for n, c in Counter(named).items() if c > 1)
        if dupes:
            raise ValueError(f"decode.fields names {dupes} more than once")
        return self

    @property
    def size(self) -> int:
        return struct.calcsize(self.layout)

    def field_names(self) -> frozenset[str]:
        return frozenset(f for f in self.fields if f)

    def decoder(self) -> Decoder:
        return StructDecoder(self.layout, self.fields)


class PollConfig(StrictModel):
    command: ByteString = Field(
        description="Command bytes; '{address}' ('{address:02d}', '{address:c}') is filled in."
    )
    addresses: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=lambda: [0], description="RS-485 addresses polled in turn, one command each."
    )
    timeout_s: Seconds = Field(1.0, description="How long to wait for the answer to one command.")
    append_checksum: bool = Field(
        False, description="Append the device checksum (and separator) to the command."
    )
    command_end: ByteString = Field(
        b"", description="Bytes sent after the command (and its checksum), e.g. '\\r'."
    )
    address_field: str | None = Field(
        None,
        description="Decoded field holding the answering address; answers from another address are rejected.",
    )

    def command_for(self, address: int) -> bytes:
        return self.command.decode("latin-1").format(address=address).encode("latin-1")

    @model_validator(mode="after")
    def _formats(self) -> PollConfig:
        if not self.command:
            raise ValueError("poll.command must not be empty")
        if len(set(self.addresses)) != len(self.addresses) or not self.addresses:
            raise ValueError(f"poll.addresses {self.addresses} must be a non-empty list without repeats")
        for address in self.addresses:
            try:
                self.command_for(address)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"poll.command cannot be formatted for address {address}: {exc!r}; "
                    "only {address} with an optional format such as {address:02d} is allowed "
                    "(write a literal brace as {{ or }})"
                ) from None
        return self


class SerialTag(TagCatalogFields):
    name: Name
    field: str | None = Field(None, description="Regex group or struct field read; default: the tag name.")
    address: Annotated[int, Field(ge=0, le=255)] | None = Field(
        None,
        description="Poll mode: the RS-485 address this tag is read from (required with several addresses).",
    )
    scale: float = Field(1.0, description="value = raw * scale + offset")
    offset: float = 0.0
    status_field: str | None = Field(None, description="Field whose value sets this tag's quality.")
    status_good: list[int | str] = Field(default_factory=list, description="Status values meaning GOOD.")
    status_uncertain: list[int | str] = Field(
        default_factory=list, description="Status values meaning UNCERTAIN; any other value is BAD."
    )
    unit: str | None = Field(None, description="Engineering unit, for documentation and displays.")
    raw: bool = Field(False, description="Also send every sample as read, not only window aggregates.")

    @property
    def source(self) -> str:
        return self.field or self.name

    @model_validator(mode="after")
    def _status(self) -> SerialTag:
        if self.status_field is None and (self.status_good or self.status_uncertain):
            raise ValueError(f"tag {self.name!r}: status_good/status_uncertain need status_field")
        if self.status_field is not None and not self.status_good:
            raise ValueError(f"tag {self.name!r}: status_field needs status_good (the values meaning GOOD)")
        return self


class SerialDevice(StrictModel):
    protocol: Literal["serial"]
    port: DevicePath = Field(description="Serial device, e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baudrate: Annotated[int, Field(ge=50, le=4_000_000)] = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["none", "even", "odd", "mark", "space"] = "none"
    # PEP 586 allows no float in a Literal, pydantic does; the schema lists exactly 1, 1.5 and 2.
    stopbits: Literal[1, 1.5, 2] = 1  # type: ignore[valid-type]
    mode: Literal["stream", "poll"] = Field("stream", description="stream: the instrument sends on its own.")
    interval_s: Seconds = Field(
        1.0, description="Poll: time between poll rounds. Stream: pace of bad samples while no data comes."
    )
    silence_s: Seconds = Field(10.0, description="Stream: no frame for this long marks every tag bad.")
    frame_gap_s: Seconds = Field(
        0.5, description="Quiet time after which an unfinished frame is given up (counted as 'partial')."
    )
    reconnect_max_s: Seconds = Field(30.0, description="Longest wait between attempts to reopen a lost port.")
    framing: Annotated[DelimitedFraming | LengthFraming, Field(discriminator="type")]
    checksum: ChecksumConfig = ChecksumConfig()
    decode: Annotated[RegexDecoding | StructDecoding, Field(discriminator="type")]
    poll: PollConfig | None = None
    tags: list[SerialTag] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> SerialDevice:
        problems: list[str] = []
        seen: set[str] = set()
        for tag in self.tags:
            if tag.name in seen:
                problems.append(f"tag name {tag.name!r} is used twice on this device")
            seen.add(tag.name)
        fields = self.decode.field_names()
        what = (
            "named group (?P<{0}>...) in decode.pattern"
            if isinstance(self.decode, RegexDecoding)
            else ("name in decode.fields")
        )
        for tag in self.tags:
            for key, name in (("field", tag.source), ("status_field", tag.status_field)):
                if name is not None and name not in fields:
                    problems.append(
                        f"tag {tag.name!r}: {key} {name!r} is not decoded; add a {what.format(name)} "
                        f"(decoded fields: {sorted(fields)})"
                    )
        if self.mode == "poll" and self.poll is None:
            problems.append("mode = 'poll' needs a [poll] table with the command to send")
        if self.mode == "stream" and self.poll is not None:
            problems.append("a [poll] table is set but mode is 'stream'; set mode = 'poll' or remove [poll]")
        if self.poll is not None:
            addresses = self.poll.addresses
            if self.poll.address_field is not None and self.poll.address_field not in fields:
                problems.append(f"poll.address_field {self.poll.address_field!r} is not a decoded field")
            for tag in self.tags:
                if tag.address is None and len(addresses) > 1:
                    problems.append(
                        f"tag {tag.name!r} needs address = one of {addresses} (several are polled)"
                    )
                elif tag.address is not None and tag.address not in addresses:
                    problems.append(
                        f"tag {tag.name!r}: address {tag.address} is not in poll.addresses {addresses}"
                    )
            if self.poll.append_checksum and self.checksum.type == "none":
                problems.append("poll.append_checksum is true but checksum.type is 'none'")
        else:
            problems.extend(
                f"tag {tag.name!r}: address is only meaningful in poll mode"
                for tag in self.tags
                if tag.address
            )
        problems.extend(self._framing_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _framing_problems(self) -> list[str]:
        problems: list[str] = []
        framing = self.framing
        trailer = 0
        cs = self.checksum.spec(framing.start)
        if cs is not None:
            trailer = cs.trailer_len
        if isinstance(framing, LengthFraming):
            header = (
                len(framing.start)
                if framing.length_offset is None
                else (framing.length_offset + framing.length_size)
            )
            shortest = framing.length if framing.length is not None else framing.min_length
            if shortest is not None and shortest < header + trailer:
                problems.append(
                    f"frames of {shortest} bytes cannot hold the start marker/length field ({header} bytes) "
                    f"and the checksum ({trailer} bytes); raise framing.length or framing.min_length"
                )
            longest = framing.length if framing.length is not None else framing.max_length
            if longest < header + trailer:
                problems.append(
                    f"framing.max_length {longest} cannot hold the start marker/length field "
                    f"({header} bytes) "
                    f"and the checksum ({trailer} bytes)"
                )
            if cs is not None and cs.cover_from > longest - trailer:
                problems.append(
                    f"checksum.cover_from {cs.cover_from} lies beyond the checksum of a {longest}-byte frame"
                )
            if isinstance(self.decode, StructDecoding) and framing.length is not None:
                body = framing.length - len(framing.start) - trailer
                if body != self.decode.size:
                    problems.append(
                        f"decode.layout {self.decode.layout!r} is {self.decode.size} bytes but a "
                        f"{framing.length}-byte frame has a {body}-byte body (frame minus start marker "
                        "and checksum)"
                    )
        elif len(framing.start) + trailer + len(framing.end) > framing.max_length:
            problems.append("framing.max_length is shorter than start marker + checksum + end marker")
        return problems

    # Builders used by the driver and the sniff command: the pure parts, configured.

    def checksum_spec(self) -> ChecksumSpec | None:
        return self.checksum.spec(self.framing.start)

    def framer(self, counts: Counter[str] | None = None, trace: Trace | None = None) -> Framer:
        framing = self.framing
        cs = self.checksum_spec()
        if isinstance(framing, DelimitedFraming):
            return DelimitedFramer(
                start=framing.start,
                end=framing.end,
                max_length=framing.max_length,
                checksum=cs,
                counts=counts,
                trace=trace,
            )
        trailer = cs.trailer_len if cs else 0
        return LengthFramer(
            start=framing.start,
            fixed_length=framing.length,
            length_offset=framing.length_offset or 0,
            length_size=framing.length_size,
            length_byte_order=framing.length_byte_order,
            length_adjust=framing.length_adjust,
            min_length=framing.min_length
            or max(
                len(framing.start) + trailer, (framing.length_offset or 0) + framing.length_size + trailer
            ),
            max_length=framing.max_length,
            checksum=cs,
            counts=counts,
            trace=trace,
        )

    def decoder(self) -> Decoder:
        return self.decode.decoder()

    def poll_command(self, address: int) -> bytes:
        """The bytes sent to poll ``address`` (with checksum appended if configured)."""
        assert self.poll is not None
        command = self.poll.command_for(address)
        cs = self.checksum_spec()
        if self.poll.append_checksum and cs is not None:
            command = cs.append(command)
        return command + self.poll.command_end
