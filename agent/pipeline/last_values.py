"""The last value of every tag, for ``mine-agent tail``: cheap enough to keep always on.

The runtime's sample sink hands each poll's samples here after the pipeline. Only the newest reading per
tag is kept, so the memory is bounded by the number of configured tags and nothing is logged per sample.
A sample costs two C-level dict stores (the sample, and when it was recorded). A sample block costs one
store whatever its size: the last block of each layout is kept, and a tag read in blocks is looked up
through its layout, which is mapped once, when the layout first appears. ``select`` expands the few tags it
shows, taking for each whichever of its last sample and its layout's last block was recorded last.
"""

from __future__ import annotations

__all__ = ["LastValues"]

import fnmatch
import operator
import re
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

from agent.core.sample import BlockLayout, Poll, Sample, SampleBlock

_tag_of = operator.itemgetter(0)
_MAX_TAGS = 100_000  # a misbehaving driver inventing tag names must not grow this without bound


class LastValues:
    def __init__(self) -> None:
        self._parts = 0  # runs of samples and blocks recorded so far: the order of what was recorded
        self._last: dict[str, Sample] = {}
        self._last_at: dict[str, int] = {}  # tag -> when (in parts) its last sample was recorded
        self._blocks: dict[BlockLayout, tuple[int, SampleBlock]] = {}  # each layout's last block, and when
        self._layout_of: dict[str, BlockLayout] = {}  # a tag read in blocks -> the layout it was last read in
        # Layouts with a tag in common with another live layout (requests that overlap): their tags are
        # mapped again on every block, so each tag points at the layout it was last read in.
        self._shared: set[BlockLayout] = set()

    def record(self, samples: Sequence[Sample]) -> None:
        # C-level updates per run of samples, one store per block. The exact type test tells the sink's two
        # kinds of argument apart (a Poll is a Sequence too), once per poll.
        if type(samples) is Poll:
            samples.each_part(self._record_samples, self._record_block)
        else:
            self._record_samples(samples)

    def _record_block(self, block: SampleBlock) -> None:
        self._parts += 1
        layout = block.layout
        if layout not in self._blocks:
            self._add_layout(layout)
        elif layout in self._shared:
            self._layout_of.update(zip(layout.names, repeat(layout)))
        self._blocks[layout] = (self._parts, block)

    def _record_samples(self, samples: Sequence[Sample]) -> None:
        self._parts += 1
        last = self._last
        last.update(zip(map(_tag_of, samples), samples, strict=True))
        self._last_at.update(zip(map(_tag_of, samples), repeat(self._parts)))
        if len(last) > _MAX_TAGS:
            last.clear()
            self._last_at.clear()

    def _add_layout(self, layout: BlockLayout) -> None:
        """Map the layout's tags to it. A layout left with no tag (a re-planned request, a restarted driver)
        is dropped, so layouts do not pile up; one still holding some tag shares tags with this one."""
        layout_of = self._layout_of
        before = {layout_of[name] for name in layout.names if name in layout_of}
        layout_of.update(zip(layout.names, repeat(layout)))
        for old in before:
            if any(layout_of.get(name) is old for name in old.names):
                self._shared.update((old, layout))
            else:
                self._blocks.pop(old, None)
                self._shared.discard(old)
        # A live layout may hold a tag of this one without being the layout the tag pointed to (it lost the
        # tag to one just dropped): those share tags with this one too.
        names = set(layout.names)
        for other in self._blocks:
            if other not in before and not names.isdisjoint(other.names):
                self._shared.update((other, layout))
        if len(self._blocks) > _MAX_TAGS:  # layouts invented without end: start over, like the samples
            self._blocks.clear()
            self._shared.clear()
            layout_of.clear()
            layout_of.update(zip(layout.names, repeat(layout)))

    def forget(self, prefix: str) -> None:
        """Drop the tags of a removed device (``prefix`` is ``"<device>."``)."""
        for tag in [t for t in self._last if t.startswith(prefix)]:
            del self._last[tag]
            del self._last_at[tag]
        gone = {self._layout_of.pop(t) for t in [t for t in self._layout_of if t.startswith(prefix)]}
        for layout in gone:
            if not any(self._layout_of.get(name) is layout for name in layout.names):
                self._blocks.pop(layout, None)
                self._shared.discard(layout)

    def _newest(self, tag: str) -> Sample | None:
        """The tag's last sample or the last block it was read in, whichever was recorded last."""
        sample = self._last.get(tag)
        layout = self._layout_of.get(tag)
        recorded = self._blocks.get(layout) if layout is not None else None
        if recorded is not None and (sample is None or recorded[0] > self._last_at[tag]):
            return recorded[1].sample(tag)
        return sample

    def select(self, patterns: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Tags matching any shell-style pattern (``crusher.*``, ``*.temp?``), as JSON-able rows."""
        pats = [p for p in patterns if p] or ["*"]
        rx = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats))
        out: dict[str, dict[str, Any]] = {}
        for tag in sorted(self._last.keys() | self._layout_of.keys()):
            if rx.match(tag):
                s = self._newest(tag)
                if s is not None:
                    out[tag] = {"ts_ms": s[1], "value": s[2], "quality": int(s[3]), "reason": s[4]}
        return out
