"""Split one device's tags into requests the server accepts.

Servers state what they accept in ``Server.ServerCapabilities.OperationLimits`` (Part 5 §6.3.11):
MaxNodesPerRead, MaxMonitoredItemsPerCall, MaxNodesPerTranslateBrowsePathsToNodeIds. A request over the
limit fails whole with BadTooManyOperations, so thousands of nodes on one server are sent as several
requests. A limit of 0 means "not stated"; then we still split, at ``FALLBACK_LIMIT``, because very large
single requests time out or exceed message size limits on small embedded servers. A limit set in the
device config wins when it is smaller than the server's.

Tags are also grouped: subscribe tags by publishing interval (one subscription each), poll tags by
poll interval (one read loop each).
"""

from __future__ import annotations

__all__ = ["FALLBACK_LIMIT", "OperationLimits", "chunks", "effective_limit", "group_by"]

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K")

FALLBACK_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """The server's stated limits; 0 where it states none."""

    max_nodes_per_read: int = 0
    max_monitored_items_per_call: int = 0
    max_nodes_per_translate: int = 0


def effective_limit(server_limit: int, configured: int) -> int:
    """The batch size to use: the smaller of the server's and the configured limit, ignoring zeros."""
    stated = [v for v in (server_limit, configured) if v > 0]
    return min(stated) if stated else FALLBACK_LIMIT


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items, in order."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def group_by(items: Sequence[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items grouped by ``key``, groups in first-seen order, items in their original order."""
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
