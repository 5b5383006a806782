"""Turn the registers or bits of one read response into samples, in bulk.

Why bulk: at 10,000 registers a second the decoder runs for every register, so it must cost a small fraction
of what pymodbus spends receiving them. A response arrives as its register bytes, as sent (big-endian words;
see ``drivers.modbus.link``), and every tag of the request is unpacked from them by a handful of precompiled
``struct.Struct`` objects, one per
byte-order variant and layer of non-overlapping tags, with pad bytes over the gaps. Python-level work per tag
is then one tuple for the sample, plus a small function only for tags that need it (scale, floats, bits,
BCD, enums, strings).

Byte order, named as device manuals do: the letters are the bytes of the value, A the most significant,
written in the order they travel on the wire. ``ABCD`` is plain big-endian (the Modbus default);
``CDAB`` swaps the 16-bit words (common for floats in PLCs); ``BADC`` swaps the bytes inside each word;
``DCBA`` is fully little-endian. For 64-bit values the same names mean the same rule applied to four words
(``CDAB`` = words in reverse order, bytes inside each word big-endian). Implementation: with the registers
as sent (``be``) and byte-swapped inside each word (``sw``), ABCD = big-endian read of ``be``, DCBA = little-endian
read of ``be``, BADC = big-endian read of ``sw``, CDAB = little-endian read of ``sw``. Strings honour only
the byte swap inside words (BADC/DCBA), since words of text are never reordered.

A float that is NaN or infinite is a bad sample with a reason (devices use NaN for "sensor fault"; the
pipeline must never average it). A BCD word with a digit above 9 is bad. An integer not in a tag's enum map
is an uncertain sample carrying the raw integer.

Blocks (:meth:`RegisterBlockDecoder.decode_poll`, what the driver uses): tags whose value is the raw number,
or ``raw * scale + offset``, are laid out in layers of their own, and such a layer is handed on as one
``SampleBlock`` (the packed bytes, one timestamp, the layer's shared ``BlockLayout``) instead of a sample per
tag: no per-tag Python work at all at poll time. A float layer in which the device sent a NaN or an
infinity is decoded into samples instead, so that the bad ones carry their reason. ``decode`` gives the same
readings as plain samples (probe, tests).
"""

from __future__ import annotations

__all__ = ["BitBlockDecoder", "DecodedTag", "RegisterBlockDecoder", "bad_samples", "compile_tag"]

import math
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from agent.core.sample import BlockLayout, Poll, Quality, Sample, SampleBlock
from drivers.modbus.config import ModbusTag

_new = tuple.__new__
_isfinite = math.isfinite
_GOOD = Quality.GOOD
_BAD = Quality.BAD
_UNCERTAIN = Quality.UNCERTAIN

# struct format character per type; bool and bcd read the whole word(s) and post-process.
_FORMAT = {
    "uint16": "H",
    "int16": "h",
    "bool": "H",
    "bcd16": "H",
    "uint32": "I",
    "int32": "i",
    "bcd32": "I",
    "float32": "f",
    "uint64": "Q",
    "int64": "q",
    "float64": "d",
}
_FLOAT_TYPES = ("float32", "float64")
_BLOCK_TYPES = ("uint16", "int16", "uint32", "int32", "uint64", "int64", *_FLOAT_TYPES)
# (use the byte-swapped buffer, read little-endian) per order.
_VARIANT = {"ABCD": (False, False), "DCBA": (False, True), "BADC": (True, False), "CDAB": (True, True)}

Post = Callable[[str, int, object], Sample]


@dataclass(frozen=True, slots=True)
class DecodedTag:
    """A tag compiled for decoding: where it sits and how its raw value becomes a sample."""

    name: str  # full tag name "<device>.<tag>"
    address: int
    registers: int
    fmt: str  # struct format of the raw value, without byte-order prefix
    swapped: bool
    little: bool
    post: Post | None  # None: the raw value is the sample value
    # Whether the tag can travel in a SampleBlock (its value is the raw number, or raw * scale + offset), and
    # then that (scale, offset) or None; floats always carry theirs, as their per-sample decoding applies it.
    blockable: bool = False
    transform: tuple[float, float] | None = None


def _bcd(value: int, digits: int) -> int | None:
    result = 0
    for shift in range((digits - 1) * 4, -4, -4):
        digit = (value >> shift) & 0xF
        if digit > 9:
            return None
        result = result * 10 + digit
    return result


def _make_post(tag: ModbusTag) -> Post | None:
    kind = tag.data_type
    scale, offset = tag.scale, tag.offset
    scaled = scale != 1.0 or offset != 0.0
    if kind == "bool":
        bit = tag.bit or 0

        def post_bit(name: str, ts: int, v: object) -> Sample:
            return _new(Sample, (name, ts, bool((v >> bit) & 1), _GOOD, None))  # type: ignore[operator]

        return post_bit
    if kind == "string":

        def post_str(name: str, ts: int, v: object) -> Sample:
            text = v.rstrip(b"\x00 ").decode("ascii", "replace")  # type: ignore[attr-defined]
            return _new(Sample, (name, ts, text, _GOOD, None))

        return post_str
    if kind in ("float32", "float64"):
        isfinite = math.isfinite

        def post_float(name: str, ts: int, v: object) -> Sample:
            if not isfinite(v):  # type: ignore[arg-type]
                return _new(Sample, (name, ts, None, _BAD, f"device sent {v} (no valid value)"))
            return _new(Sample, (name, ts, v * scale + offset, _GOOD, None))  # type: ignore[operator]

        return post_float
    if kind in ("bcd16", "bcd32"):
        digits = 4 if kind == "bcd16" else 8
        labels = {int(k, 0): label for k, label in tag.enum.items()} if tag.enum else None

        def post_bcd(name: str, ts: int, v: object) -> Sample:
            number = _bcd(v, digits)  # type: ignore[arg-type]
            if number is None:
                return _new(Sample, (name, ts, None, _BAD, f"invalid BCD 0x{v:0{digits}x}"))
            if labels is not None:
                return _label(labels, name, ts, number)
            return _new(Sample, (name, ts, number * scale + offset if scaled else number, _GOOD, None))

        return post_bcd
    if tag.enum:
        labels = {int(k, 0): label for k, label in tag.enum.items()}

        def post_enum(name: str, ts: int, v: object) -> Sample:
            return _label(labels, name, ts, v)  # type: ignore[arg-type]

        return post_enum
    if scaled:

        def post_scale(name: str, ts: int, v: object) -> Sample:
            return _new(Sample, (name, ts, v * scale + offset, _GOOD, None))  # type: ignore[operator]

        return post_scale
    return None


def _label(labels: dict[int, str], name: str, ts: int, v: int) -> Sample:
    label = labels.get(v)
    if label is None:
        return _new(Sample, (name, ts, v, _UNCERTAIN, f"value {v} not in enum map"))
    return _new(Sample, (name, ts, label, _GOOD, None))


def compile_tag(device: str, tag: ModbusTag, default_order: str) -> DecodedTag:
    """Precompute everything decoding this tag needs, once, at start-up."""
    kind = tag.data_type
    order = tag.order or default_order
    if kind == "string":
        swapped, little = order in ("BADC", "DCBA"), False
        fmt = f"{2 * (tag.length or 1)}s"
    elif tag.table in ("coil", "discrete"):
        swapped, little, fmt = False, False, "?"
    else:
        swapped, little = _VARIANT[order]
        fmt = _FORMAT[kind]
    blockable = tag.table not in ("coil", "discrete") and not tag.enum and kind in _BLOCK_TYPES
    scaled = tag.scale != 1.0 or tag.offset != 0.0
    transform = (tag.scale, tag.offset) if blockable and (scaled or kind in _FLOAT_TYPES) else None
    return DecodedTag(
        name=f"{device}.{tag.name}",
        address=tag.address,
        registers=tag.registers,
        fmt=fmt,
        swapped=swapped,
        little=little,
        post=_make_post(tag),
        blockable=blockable,
        transform=transform,
    )


def bad_samples(out: list[Sample] | Poll, names: Sequence[str], ts_ms: int, reason: str) -> None:
    """Append one bad sample per tag name, all with the same reason."""
    out.extend([_new(Sample, (name, ts_ms, None, _BAD, reason)) for name in names])


@dataclass(frozen=True, slots=True)
class _Layer:
    unpack_from: Callable[[bytes, int], tuple[object, ...]]
    swapped: bool
    names: tuple[str, ...]
    posts: tuple[Post | None, ...]
    plain: bool  # no tag in the layer needs post-processing
    block: BlockLayout | None  # every tag can travel in a SampleBlock
    floats: bool  # some tag is a float: a block needs every value finite


class RegisterBlockDecoder:
    """Decodes the response of one register read (``count`` registers from ``start``) into samples."""

    def __init__(self, start: int, count: int, tags: Sequence[DecodedTag]) -> None:
        for t in tags:
            if t.address < start or t.address + t.registers > start + count:
                raise ValueError(f"tag {t.name} at {t.address} is outside the block {start}+{count}")
        # The compiled tags are not kept: everything decoding needs is in the layers.
        self.start = start
        self.count = count
        self.names = tuple(t.name for t in tags)
        self._size = 2 * count
        self._pack_be = struct.Struct(f">{count}H").pack
        self._needs_sw = any(t.swapped for t in tags)
        self._layers = self._build_layers(tags)

    def _build_layers(self, tags: Sequence[DecodedTag]) -> tuple[_Layer, ...]:
        groups: dict[tuple[bool, bool, bool], list[DecodedTag]] = {}
        for t in sorted(tags, key=lambda t: t.address):
            groups.setdefault((t.swapped, t.little, t.blockable), []).append(t)
        layers: list[_Layer] = []
        for (swapped, little, blockable), members in groups.items():
            # Split into layers of non-overlapping tags: a struct format cannot step backwards.
            pending = members
            while pending:
                layer: list[DecodedTag] = []
                rest: list[DecodedTag] = []
                end = self.start
                for t in pending:
                    if t.address >= end:
                        layer.append(t)
                        end = t.address + t.registers
                    else:
                        rest.append(t)
                pending = rest
                parts = ["<" if little else ">"]
                pos = self.start
                for t in layer:
                    if t.address > pos:
                        parts.append(f"{2 * (t.address - pos)}x")
                    parts.append(t.fmt)
                    pos = t.address + t.registers
                unpack_from = struct.Struct("".join(parts)).unpack_from
                names = tuple(t.name for t in layer)
                layers.append(
                    _Layer(
                        unpack_from=unpack_from,
                        swapped=swapped,
                        names=names,
                        posts=tuple(t.post for t in layer),
                        plain=all(t.post is None for t in layer),
                        block=BlockLayout(names, unpack_from, [t.transform for t in layer]) if blockable else None,
                        floats=any(t.fmt in ("f", "d") for t in layer),
                    )
                )
        return tuple(layers)

    def _words(self, registers: bytes | Sequence[int]) -> tuple[bytes, bytes] | str:
        """The response as sent and byte-swapped inside each word, or why it cannot be decoded.

        ``registers`` is the register bytes as they came off the wire (what the driver passes), or the
        registers as numbers (tools and tests)."""
        got = len(registers) // 2 if isinstance(registers, bytes) else len(registers)
        if got < self.count:
            return f"short response: {got} of {self.count} registers"
        if isinstance(registers, bytes):
            be = registers if len(registers) == self._size else registers[: self._size]
        else:
            be = self._pack_be(*registers[: self.count])
        if not self._needs_sw:
            return be, be
        words = array("H", be)
        words.byteswap()
        return be, words.tobytes()

    def decode(self, out: list[Sample], registers: bytes | Sequence[int], ts_ms: int) -> None:
        """Append one sample per tag. ``registers`` is the response, ``count`` words."""
        words = self._words(registers)
        if isinstance(words, str):
            bad_samples(out, self.names, ts_ms, words)
            return
        be, sw = words
        append = out.append
        for layer in self._layers:
            values = layer.unpack_from(sw if layer.swapped else be, 0)
            if layer.plain:
                out.extend(
                    [
                        _new(Sample, (n, ts_ms, v, _GOOD, None))
                        for n, v in zip(layer.names, values, strict=True)
                    ]
                )
                continue
            for name, post, v in zip(layer.names, layer.posts, values, strict=True):
                if post is None:
                    append(_new(Sample, (name, ts_ms, v, _GOOD, None)))
                else:
                    append(post(name, ts_ms, v))


    def decode_poll(self, poll: Poll, registers: bytes | Sequence[int], ts_ms: int) -> None:
        """Add the response to ``poll``: one block per layer that can be one, samples for the rest."""
        words = self._words(registers)
        if isinstance(words, str):
            bad_samples(poll, self.names, ts_ms, words)
            return
        be, sw = words
        for layer in self._layers:
            data = sw if layer.swapped else be
            block = layer.block
            if block is not None:
                if not layer.floats:
                    poll.add_block(SampleBlock(block, ts_ms, data))
                    continue
                values = layer.unpack_from(data, 0)
                if all(map(_isfinite, cast("tuple[float, ...]", values))):  # a float layer unpacks floats
                    poll.add_block(SampleBlock(block, ts_ms, data))
                    continue
            else:
                values = layer.unpack_from(data, 0)
            poll.extend(
                [
                    _new(Sample, (name, ts_ms, v, _GOOD, None)) if post is None else post(name, ts_ms, v)
                    for name, post, v in zip(layer.names, layer.posts, values, strict=True)
                ]
            )


class BitBlockDecoder:
    """Decodes the response of one coil or discrete-input read into one bool sample per tag."""

    def __init__(self, start: int, count: int, tags: Sequence[DecodedTag]) -> None:
        for t in tags:
            if t.address < start or t.address >= start + count:
                raise ValueError(f"tag {t.name} at {t.address} is outside the block {start}+{count}")
        self.start = start
        self.count = count
        self.names = tuple(t.name for t in tags)
        self._offsets = tuple(t.address - start for t in tags)

    def decode(self, out: list[Sample] | Poll, bits: Sequence[bool], ts_ms: int) -> None:
        """Append one sample per tag. ``bits`` may be padded to a multiple of 8, as on the wire."""
        if len(bits) < self.count:
            bad_samples(out, self.names, ts_ms, f"short response: {len(bits)} of {self.count} bits")
            return
        out.extend(
            [
                _new(Sample, (n, ts_ms, bool(bits[i]), _GOOD, None))
                for n, i in zip(self.names, self._offsets, strict=True)
            ]
        )
