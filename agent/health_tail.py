"""The last value of every tag, for ``mine-agent tail``: cheap enough to keep always on.

The runtime's sample sink hands each poll's samples here after the pipeline. Only the newest reading per
tag is kept (a dict entry per tag, overwritten), so the cost is one C-level dict store per value and the
memory is bounded by the number of configured tags; nothing is logged per sample. For a sample block the
entry is the block itself (shared by its tags, no sample made); ``select`` expands the few it shows.
"""

from __future__ import annotations

__all__ = ["LastValues"]

import fnmatch
import operator
import re
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any

from agent.sample import Poll, Sample, SampleBlock

_tag_of = operator.itemgetter(0)
_MAX_TAGS = 100_000  # a misbehaving driver inventing tag names must not grow this without bound


class LastValues:
    def __init__(self) -> None:
        self._last: dict[str, Sample | SampleBlock] = {}

    def record(self, samples: Sequence[Sample]) -> None:
        last = self._last
        # One C-level update per poll (or block) rather than a Python-level store per sample.
        if type(samples) is Poll:
            for part in samples.parts:
                if type(part) is list:
                    last.update(zip(map(_tag_of, part), part, strict=True))
                else:
                    last.update(zip(part.layout.names, repeat(part)))  # type: ignore[union-attr]
        else:
            last.update(zip(map(_tag_of, samples), samples, strict=True))
        if len(last) > _MAX_TAGS:
            last.clear()

    def forget(self, prefix: str) -> None:
        """Drop the tags of a removed device (``prefix`` is ``"<device>."``)."""
        for tag in [t for t in self._last if t.startswith(prefix)]:
            del self._last[tag]

    def select(self, patterns: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Tags matching any shell-style pattern (``crusher.*``, ``*.temp?``), as JSON-able rows."""
        pats = [p for p in patterns if p] or ["*"]
        rx = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats))
        out: dict[str, dict[str, Any]] = {}
        for tag in sorted(self._last):
            if rx.match(tag):
                s = self._last[tag]
                if type(s) is SampleBlock:
                    s = s.sample(tag)
                out[tag] = {"ts_ms": s[1], "value": s[2], "quality": int(s[3]), "reason": s[4]}
        return out
