"""What a driver produces: readings of tags, one by one or a block at a time.

A ``Sample`` is a plain named tuple because a driver without a bulk format creates one per value per poll:
at 10,000 tags a second it is the most numerous object in the process, and a tuple is the cheapest
immutable record Python offers.

A driver that reads many numbers in one response (a Modbus register read) can do better: a ``SampleBlock``
keeps the response's bytes, one timestamp and a shared ``BlockLayout`` that says how to turn the bytes into
the values of its tags. Two bytes per register instead of a tuple and a Python number per tag, and the
pipeline computes window statistics from whole columns at window close instead of per value at ingest
(agent.pipeline.aggregates). A block means exactly the samples ``block.samples()`` returns: every value good, none
needing more than ``raw * scale + offset``; anything else (failures, enums, text, bits, non-finite floats)
stays a ``Sample``.

A ``Poll`` is one poll's readings, runs of samples and blocks in the order they were read. It is a
``Sequence[Sample]`` (iterating expands the blocks), so anything that only understands samples takes it as
it takes a list; the pipeline and the tail go through its parts (:meth:`Poll.each_part`) to keep blocks whole.
"""

from __future__ import annotations

__all__ = ["BlockLayout", "Poll", "Quality", "Sample", "SampleBlock", "SampleSink"]

import enum
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, NamedTuple, TypeVar, overload

_T = TypeVar("_T")


class Quality(enum.IntEnum):
    """How far a value can be trusted. Encoded on the wire as this integer (docs/protocol.md)."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Sample(NamedTuple):
    """One reading.

    ``tag`` is the full tag name ``"<device>.<tag>"``; ``ts_ms`` is the acquisition time in Unix
    milliseconds (UTC). A bad sample has ``value`` None and a short ``reason`` such as
    ``"timeout"`` or ``"modbus exception 2 (illegal data address)"``.
    """

    tag: str
    ts_ms: int
    value: float | int | bool | str | None
    quality: Quality = Quality.GOOD
    reason: str | None = None


_new = tuple.__new__
_GOOD = Quality.GOOD
_mul = operator.mul
_add = operator.add


class BlockLayout:
    """How the bytes of a block become its tags' values; made once per request plan, shared by its blocks.

    ``unpack`` turns the bytes into one raw number per tag, in ``names`` order (a precompiled
    ``struct.Struct.unpack_from``). ``transforms`` holds per tag None (the raw number is the value) or
    ``(scale, offset)`` (the value is ``raw * scale + offset``, computed in that order so it equals the
    per-sample decoding to the bit). Compared by identity: two layouts are the same only if they are one
    object."""

    __slots__ = ("index", "names", "transforms", "unpack")

    def __init__(
        self,
        names: Sequence[str],
        unpack: Callable[[bytes], tuple[Any, ...]],
        transforms: Sequence[tuple[float, float] | None],
    ) -> None:
        if len(transforms) != len(names):
            raise ValueError("one transform per tag")
        self.names = tuple(names)
        self.unpack = unpack
        self.transforms = tuple(transforms)
        self.index = {name: i for i, name in enumerate(self.names)}

    def values(self, data: bytes) -> list[Any]:
        """Every tag's value from one block's bytes, in ``names`` order."""
        raw = self.unpack(data)
        return [v if t is None else v * t[0] + t[1] for v, t in zip(raw, self.transforms, strict=True)]

    def value(self, data: bytes, i: int) -> Any:
        """Tag ``i``'s value from one block's bytes."""
        v = self.unpack(data)[i]
        t = self.transforms[i]
        return v if t is None else v * t[0] + t[1]

    def column(self, raw: Sequence[Any], i: int) -> Sequence[Any]:
        """Tag ``i``'s values from its raw column (one raw number per block), transformed."""
        t = self.transforms[i]
        if t is None:
            return raw
        n = len(raw)
        return list(map(_add, map(_mul, raw, repeat(t[0], n)), repeat(t[1], n)))


class SampleBlock:
    """Good readings of the tags of one layout, taken at one time, as the bytes the device sent."""

    __slots__ = ("data", "layout", "ts_ms")

    def __init__(self, layout: BlockLayout, ts_ms: int, data: bytes) -> None:
        self.layout = layout
        self.ts_ms = ts_ms
        self.data = data

    def __len__(self) -> int:
        return len(self.layout.names)

    def samples(self) -> list[Sample]:
        """The block as the samples it stands for."""
        ts = self.ts_ms
        return [
            _new(Sample, (name, ts, v, _GOOD, None))
            for name, v in zip(self.layout.names, self.layout.values(self.data), strict=True)
        ]

    def sample(self, tag: str) -> Sample:
        """The sample of one tag of the block."""
        return _new(Sample, (tag, self.ts_ms, self.layout.value(self.data, self.layout.index[tag]), _GOOD, None))


class Poll(Sequence[Sample]):
    """The readings of one poll: runs of samples and blocks, in the order they were read.

    A part is a run of samples when it is a plain ``list`` and a block otherwise. That is this class's own
    representation, tested with ``type(part) is list`` (the cheapest exact test); code elsewhere goes through
    :meth:`each_part` rather than repeat the test."""

    __slots__ = ("_size", "parts")

    def __init__(self) -> None:
        self.parts: list[list[Sample] | SampleBlock] = []
        self._size = 0

    def each_part(
        self, on_samples: Callable[[list[Sample]], _T], on_block: Callable[[SampleBlock], _T]
    ) -> list[_T]:
        """``on_samples(run)`` for each run of samples and ``on_block(block)`` for each block, in the order they
        were read; their results, in that order."""
        return [on_samples(part) if type(part) is list else on_block(part) for part in self.parts]  # type: ignore[arg-type]

    def append(self, sample: Sample) -> None:
        self.extend((sample,))

    def extend(self, samples: Iterable[Sample]) -> None:
        parts = self.parts
        if not parts or type(parts[-1]) is not list:
            parts.append([])
        run: list[Sample] = parts[-1]  # type: ignore[assignment]
        before = len(run)
        run.extend(samples)
        self._size += len(run) - before

    def add_block(self, block: SampleBlock) -> None:
        self.parts.append(block)
        self._size += len(block)

    def not_good(self) -> int:
        """How many samples are not of good quality (blocks hold good samples only)."""
        return sum(1 for part in self.parts if type(part) is list for s in part if s[3])

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[Sample]:
        for part in self.parts:
            if type(part) is list:
                yield from part
            else:
                yield from part.samples()  # type: ignore[union-attr]

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        return list(self)[index]


SampleSink = Callable[[Sequence[Sample]], None]
"""Where a driver hands the samples of one poll (a list, or a ``Poll`` with blocks). Synchronous and
non-blocking: it only queues work."""
