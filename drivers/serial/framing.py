"""Cut a serial byte stream into frames, skipping garbage with a counted reason.

Two framers cover the instruments we meet:

* :class:`DelimitedFramer`: a frame ends with an ``end`` marker (a line terminator such as ``\\r\\n`` or an
  ETX byte) and optionally begins with a ``start`` marker (``$`` in NMEA, STX). It assumes the end marker
  never occurs inside a frame, which holds for ASCII protocols and for binary ones that escape it.
* :class:`LengthFramer`: a frame begins with a ``start`` marker and has a fixed length or carries its length
  in a field. Binary data may contain the start marker, so every candidate is verified (length within bounds,
  checksum) before it is accepted.

Resynchronisation rules, which make a frame either wholly accepted or wholly skipped:

* A frame must pass its checksum (when one is configured) before its body is handed on.
* Delimited with a start marker: a frame starts at the *last* start marker before its end marker; bytes
  before it are counted as ``partial`` (they contain an earlier start, i.e. a frame cut short) or ``noise``.
* Length framing: a candidate that fails (length out of bounds, bad checksum) is skipped by **one byte** and
  the search resumes, because its length field cannot be trusted and a real frame may start inside it. A
  candidate whose announced length has not arrived yet is waited for; :meth:`expire` gives up on it after
  the line went quiet, so a corrupted length field cannot hold later frames back forever.

Rejected bytes are never dropped silently: ``counts`` (shared with the decoder) gets one increment per
rejected segment, keyed by reason, and ``skipped_bytes`` the number of bytes. The framers work on whole
chunks (``bytes.split``/``find`` in C) and copy only the unfinished tail between calls.
"""

from __future__ import annotations

__all__ = ["DelimitedFramer", "Framer", "LengthFramer", "Trace"]

from collections import Counter
from collections.abc import Callable
from typing import Literal, Protocol

from drivers.serial.checksum import ChecksumSpec

Trace = Callable[[str, bytes], None]
"""Optional observer ``trace(kind, raw_bytes)``: kind is ``"frame"`` or a rejection reason. Used by sniff."""


class Framer(Protocol):
    counts: Counter[str]
    skipped_bytes: int

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the bodies of the frames completed by them, in order."""
        ...

    def expire(self) -> list[bytes]:
        """The line went quiet: give up waiting on unfinished frames and return any frames this uncovers."""
        ...

    def clear(self) -> None:
        """Forget buffered bytes (counted as ``stale``), e.g. before sending a poll command."""
        ...

    @property
    def pending(self) -> int:
        """Bytes buffered that are not yet part of a finished frame."""
        ...


class DelimitedFramer:
    """Frames ending in ``end`` and, if ``start`` is given, beginning with it.

    The body handed on is the frame without start marker, checksum trailer and end marker.
    """

    def __init__(
        self,
        *,
        end: bytes,
        start: bytes = b"",
        max_length: int = 1024,
        checksum: ChecksumSpec | None = None,
        counts: Counter[str] | None = None,
        trace: Trace | None = None,
    ) -> None:
        if not end:
            raise ValueError("a delimited framer needs a non-empty end marker")
        self.end = end
        self.start = start
        self.max_length = max_length
        self.checksum = checksum
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.skipped_bytes = 0
        self._trace = trace
        self._tail = b""
        self._body_from = len(start)
        self._trailer = checksum.trailer_len if checksum else 0

    @property
    def pending(self) -> int:
        return len(self._tail)

    def _reject(self, reason: str, raw: bytes) -> None:
        self.counts[reason] += 1
        self.skipped_bytes += len(raw)
        if self._trace is not None:
            self._trace(reason, raw)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._tail + data if self._tail else data
        if self.end not in buf:
            self._tail = self._limit(buf)
            return []
        parts = buf.split(self.end)
        self._tail = self._limit(parts.pop())
        out: list[bytes] = []
        for seg in parts:
            body = self._segment(seg)
            if body is not None:
                out.append(body)
        return out

    def _segment(self, seg: bytes) -> bytes | None:
        start = self.start
        if start:
            i = seg.rfind(start)
            if i < 0:
                self._reject("noise", seg + self.end)
                return None
            if i > 0:
                before = seg[:i]
                self._reject("partial" if start in before else "noise", before)
                seg = seg[i:]
        if len(seg) + len(self.end) > self.max_length:
            self._reject("too long", seg + self.end)
            return None
        cs = self.checksum
        if cs is not None and not cs.check(seg):
            self._reject("bad checksum", seg + self.end)
            return None
        if self._trace is not None:
            self._trace("frame", seg + self.end)
        return seg[self._body_from : len(seg) - self._trailer]

    def _limit(self, tail: bytes) -> bytes:
        """Keep an unfinished frame only while it can still become a valid one."""
        if len(tail) < self.max_length:
            return tail
        if self.start:
            i = tail.rfind(self.start)
            if i > 0 and len(tail) - i < self.max_length:
                self._reject("too long", tail[:i])
                return tail[i:]
        # Keep a possible split end marker so the next line is not glued to this garbage.
        keep = len(self.end) - 1
        self._reject("too long", tail[: len(tail) - keep])
        return tail[len(tail) - keep :] if keep else b""

    def expire(self) -> list[bytes]:
        if self._tail:
            self._reject("partial", self._tail)
            self._tail = b""
        return []

    def clear(self) -> None:
        if self._tail:
            self._reject("stale", self._tail)
            self._tail = b""


class LengthFramer:
    """Frames beginning with ``start`` whose total length is ``fixed_length`` or read from a length field.

    With a length field: total frame length = field value + ``length_adjust``; the field is ``length_size``
    bytes (1 or 2) at ``length_offset`` from the frame's first byte, in ``length_byte_order``. Frames shorter
    than ``min_length`` or longer than ``max_length`` are rejected at once (``bad length``). The body handed
    on is the frame without start marker and checksum trailer (the length field stays in it).
    """

    def __init__(
        self,
        *,
        start: bytes,
        fixed_length: int | None = None,
        length_offset: int = 0,
        length_size: int = 1,
        length_byte_order: Literal["big", "little"] = "big",
        length_adjust: int = 0,
        min_length: int = 1,
        max_length: int = 1024,
        checksum: ChecksumSpec | None = None,
        counts: Counter[str] | None = None,
        trace: Trace | None = None,
    ) -> None:
        if not start:
            raise ValueError("length framing needs a start marker to resynchronise on")
        self.start = start
        self.fixed_length = fixed_length
        self.length_offset = length_offset
        self.length_size = length_size
        self.length_byte_order = length_byte_order
        self.length_adjust = length_adjust
        self.min_length = fixed_length if fixed_length is not None else min_length
        self.max_length = fixed_length if fixed_length is not None else max_length
        self.checksum = checksum
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self.skipped_bytes = 0
        self._trace = trace
        self._buf = b""
        self._header = max(len(start), 0 if fixed_length is not None else length_offset + length_size)
        self._trailer = checksum.trailer_len if checksum else 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _reject(self, reason: str, raw: bytes) -> None:
        self.counts[reason] += 1
        self.skipped_bytes += len(raw)
        if self._trace is not None:
            self._trace(reason, raw)

    def _frame_length(self, buf: bytes, i: int) -> int:
        if self.fixed_length is not None:
            return self.fixed_length
        at = i + self.length_offset
        return int.from_bytes(buf[at : at + self.length_size], self.length_byte_order) + self.length_adjust

    def feed(self, data: bytes) -> list[bytes]:
        self._buf = self._buf + data if self._buf else data
        return self._scan(expire=False)

    def expire(self) -> list[bytes]:
        return self._scan(expire=True)

    def clear(self) -> None:
        if self._buf:
            self._reject("stale", self._buf)
            self._buf = b""

    def _scan(self, *, expire: bool) -> list[bytes]:
        buf = self._buf
        start = self.start
        cs = self.checksum
        out: list[bytes] = []
        pos = 0  # where the search for the next start marker resumes
        skipped_from = 0  # first byte neither accepted nor yet counted as rejected
        why: str | None = None  # why the candidates in the skipped region failed (first one wins)
        n = len(buf)
        while True:
            i = buf.find(start, pos)
            if i < 0:
                # Keep a possible start marker split across reads, unless the line went quiet.
                cut = n if expire else max(pos, n - (len(start) - 1))
                if cut > skipped_from:
                    self._reject(why or "noise", buf[skipped_from:cut])
                self._buf = buf[cut:]
                return out
            if n - i < self._header:
                if expire:
                    why = why or "partial"
                    pos = i + 1
                    continue
                break
            length = self._frame_length(buf, i)
            if length < self.min_length or length > self.max_length:
                why = why or "bad length"
                pos = i + 1
                continue
            if n - i < length:
                if expire:
                    why = why or "partial"
                    pos = i + 1
                    continue
                break
            frame = buf[i : i + length]
            if cs is not None and not cs.check(frame):
                why = why or "bad checksum"
                pos = i + 1
                continue
            if i > skipped_from:
                self._reject(why or "noise", buf[skipped_from:i])
            why = None
            if self._trace is not None:
                self._trace("frame", frame)
            out.append(frame[len(start) : length - self._trailer])
            pos = skipped_from = i + length
        # Waiting for the rest of the candidate that starts at i.
        if i > skipped_from:
            self._reject(why or "noise", buf[skipped_from:i])
        self._buf = buf[i:]
        return out
