"""The values that cross the buffer's boundary: a queued batch, a drop record, the statistics, and the type of
the function that names a frame's tags."""

from __future__ import annotations

__all__ = ["EVICTION_ORDER", "KINDS", "BufferStats", "DropRecord", "FrameTags", "QueuedBatch", "SignedBatch"]

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

KINDS = ("data", "alarm", "gap", "catalog")
# Lowest priority first: when space runs out, old window/raw data goes before the declarations of earlier
# losses, and those before alarms, which a regulator reads first. A tag catalogue is never evicted: it is
# small, rare, and every later batch refers to it.
EVICTION_ORDER = ("data", "gap", "alarm")

FrameTags = Callable[[bytes], Iterable[str]]
"""frame_tags(frame) -> the full tag names whose rows ``frame`` carries (contract in ``buffer/__init__.py``)."""


class SignedBatch(Protocol):
    """The header fields of a frame just made, as :class:`agent.protocol.wire.Batch` has them."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def created(self) -> int: ...
    @property
    def t0(self) -> int: ...
    @property
    def t1(self) -> int: ...
    @property
    def hash(self) -> bytes: ...
    @property
    def frame(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class QueuedBatch:
    """One signed frame as stored, with the header fields the queue indexes (copied, never re-parsed)."""

    seq: int
    kind: str
    created_ms: int
    t0_ms: int
    t1_ms: int
    records: int
    hash: bytes
    frame: bytes

    @classmethod
    def from_wire(cls, batch: SignedBatch, records: int) -> QueuedBatch:
        """The queued form of a frame just made by :func:`agent.protocol.wire.encode_frame`."""
        return cls(batch.seq, batch.kind, batch.created, batch.t0, batch.t1, records, batch.hash, batch.frame)


@dataclass(frozen=True, slots=True)
class DropRecord:
    """Batches lost before delivery and not yet declared in a signed gap batch.

    ``reason`` is ``"cap"`` (``max_bytes`` reached), ``"disk_low"`` (free disk below ``min_free_bytes``),
    ``"corrupt"`` (a stored row failed its CRC and was set aside), ``"lost"`` (the chain head proves batches
    were committed that the store no longer holds: a power cut with ``sync="normal"``, a truncated WAL) or
    ``"quarantine"`` (the whole store failed its integrity check). For ``lost`` and ``quarantine`` the content
    is unknown: ``records`` is 0, ``from_ms``/``to_ms`` are 0 and ``tags`` is empty.
    """

    id: int
    first_seq: int
    last_seq: int
    batches: int
    records: int
    from_ms: int
    to_ms: int
    bytes: int
    reason: str
    tags: list[str]


@dataclass(frozen=True, slots=True)
class BufferStats:
    """A snapshot of the queue for metrics and the status page."""

    batches: int
    bytes: int
    oldest_created_ms: int | None
    by_kind: dict[str, int]
    bytes_by_kind: dict[str, int]
    appended: int
    acked: int
    dropped_batches: int
    dropped_records: int
    drops_by_reason: dict[str, int]
    pending_drops: int
    set_aside: int
    quarantined: int
    head_seq: int
    file_bytes: int
    head_file_errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def oldest_age_ms(self, now_ms: int) -> int:
        """Age of the oldest unacknowledged batch at ``now_ms`` (0 when the queue is empty)."""
        return 0 if self.oldest_created_ms is None else max(0, now_ms - self.oldest_created_ms)
