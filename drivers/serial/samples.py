"""Map decoded fields to samples: which field feeds which tag, scale and offset, and status to quality.

A tag gets a sample from a frame only if its field is among that frame's decoded fields (an instrument with
several sentence types fills different tags from different sentences). A field that is present but empty or
not a number gives that tag a BAD sample with the reason; the other tags of the frame are unaffected.
"""

from __future__ import annotations

__all__ = ["TagMapper"]

from collections.abc import Mapping, Sequence

from agent.core.sample import Quality, Sample
from drivers.serial.config import SerialTag
from drivers.serial.decoding import FieldValue


class _Tag:
    __slots__ = ("full", "good", "linear", "offset", "scale", "source", "status", "uncertain")

    def __init__(self, device: str, tag: SerialTag) -> None:
        self.full = f"{device}.{tag.name}"
        self.source = tag.source
        self.scale = tag.scale
        self.offset = tag.offset
        self.linear = tag.scale != 1.0 or tag.offset != 0.0
        self.status = tag.status_field
        self.good = frozenset(str(v) for v in tag.status_good)
        self.uncertain = frozenset(str(v) for v in tag.status_uncertain)


_ABSENT = object()
_SAMPLE = Sample
_new = tuple.__new__


def _status_in(value: str, allowed: frozenset[str]) -> bool:
    # "00" from a regex group matches a configured 0.
    return value in allowed or (value.isdigit() and str(int(value)) in allowed)


class TagMapper:
    """Samples for the tags of one device (or of one RS-485 address of it)."""

    def __init__(self, device: str, tags: Sequence[SerialTag]) -> None:
        self.tags = [_Tag(device, t) for t in tags]
        self.names = [t.full for t in self.tags]

    def samples(self, fields: Mapping[str, FieldValue], ts_ms: int) -> list[Sample]:
        # The hot path of the driver (one call per frame): exact type tests instead of isinstance with
        # unions, and tuples built directly rather than through the named tuple's keyword-aware __new__.
        out: list[Sample] = []
        for tag in self.tags:
            raw = fields.get(tag.source, _ABSENT)
            if raw is _ABSENT:
                continue
            cls = type(raw)
            value: float | int
            if cls is str or cls is bytes:
                try:
                    value = float(raw)  # type: ignore[arg-type]
                except ValueError:
                    out.append(self._not_a_number(tag, raw, ts_ms))  # type: ignore[arg-type]
                    continue
            elif cls is int or cls is float:
                value = raw  # type: ignore[assignment]
            elif cls is bool:
                value = int(raw)  # type: ignore[call-overload]  # raw is the decoder's bool here
            else:
                out.append(_new(_SAMPLE, (tag.full, ts_ms, None, Quality.BAD, "no value")))
                continue
            if tag.linear:
                value = value * tag.scale + tag.offset
            if tag.status is None:
                out.append(_new(_SAMPLE, (tag.full, ts_ms, value, Quality.GOOD, None)))
            else:
                out.append(self._with_status(tag, fields, ts_ms, value))
        return out

    @staticmethod
    def _not_a_number(tag: _Tag, raw: str | bytes, ts_ms: int) -> Sample:
        if not raw:
            return Sample(tag.full, ts_ms, None, Quality.BAD, "no value")
        shown = raw.decode("latin-1") if isinstance(raw, bytes) else raw
        return Sample(tag.full, ts_ms, None, Quality.BAD, f"not a number: {shown[:20]!r}")

    @staticmethod
    def _with_status(tag: _Tag, fields: Mapping[str, FieldValue], ts_ms: int, value: float) -> Sample:
        status = fields.get(tag.status)  # type: ignore[arg-type]
        text = status.decode("latin-1") if isinstance(status, bytes) else str(status)
        if _status_in(text, tag.good):
            return Sample(tag.full, ts_ms, value)
        if _status_in(text, tag.uncertain):
            return Sample(tag.full, ts_ms, value, Quality.UNCERTAIN, f"status {text}")
        return Sample(tag.full, ts_ms, None, Quality.BAD, f"status {text}")

    def bad(self, ts_ms: int, reason: str) -> list[Sample]:
        return [Sample(name, ts_ms, None, Quality.BAD, reason) for name in self.names]
