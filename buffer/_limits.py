"""Fitting the buffer's limits to its file system: one rule for the buffer at open and `mine-agent validate`.

A watermark (``min_free_bytes``) larger than the file system makes every batch -- gap batches once included --
go the moment it is written, and a ``max_bytes`` the file system cannot hold promises a backlog that the disk
will cut short. Both are clamped, not refused: a gateway that refuses to start collects nothing, while one that
runs with limits that fit keeps collecting and says, in its log, its status and ``validate``, what it changed.

The rule: the watermark may reserve at most half of the file system; ``max_bytes`` at most what is left after
the watermark and the WAL reserve (never below 1 MiB, the smallest buffer the configuration accepts). Sizes
are of the whole file system, not its free space, which changes while the agent runs (the free-disk
watermark handles that at every append).
"""

from __future__ import annotations

__all__ = ["MIN_BUFFER_BYTES", "WAL_RESERVE", "Limits", "fit_limits"]

from dataclasses import dataclass

# Free disk kept for the write-ahead log: a WAL that cannot grow makes even deletes (acks, evictions) fail.
WAL_RESERVE = 4 << 20
MIN_BUFFER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Limits:
    max_bytes: int
    min_free_bytes: int
    notes: tuple[str, ...] = ()  # one sentence per clamped limit, starting with its key


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def fit_limits(fs_bytes: int, *, max_bytes: int, min_free_bytes: int) -> Limits:
    """The limits that fit a file system of ``fs_bytes``, with a note for each one clamped."""
    notes: list[str] = []
    most_free = fs_bytes // 2
    if min_free_bytes > most_free:
        notes.append(f"buffer.min_free_bytes: {_mib(min_free_bytes)} is more than half of the buffer's file system "
                     f"({_mib(fs_bytes)}); clamped to {_mib(most_free)}")
        min_free_bytes = most_free
    room = max(MIN_BUFFER_BYTES, fs_bytes - min_free_bytes - WAL_RESERVE)
    if max_bytes > room:
        notes.append(f"buffer.max_bytes: {_mib(max_bytes)} does not fit the buffer's file system "
                     f"({_mib(fs_bytes)}, less min_free_bytes and the 4 MiB WAL reserve); clamped to {_mib(room)}")
        max_bytes = room
    return Limits(max_bytes, min_free_bytes, tuple(notes))
