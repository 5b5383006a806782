"""Injected time.

Everything time-dependent (backoff, poll scheduling, windows, alarm delays) takes a ``Clock`` so tests can
drive it as a scenario table instead of sleeping. ``SystemClock`` is the real one; ``FakeClock`` is for tests
and moves only when told to.
"""

from __future__ import annotations

__all__ = ["Clock", "FakeClock", "SystemClock"]

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (for timestamps and window alignment)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (for intervals and timeouts)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep on this clock."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """A clock that advances only through :meth:`advance`; sleepers wake in time order."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall0 = start
        self._now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    def time(self) -> float:
        return self._wall0 + self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._ids), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose deadline passes, in order."""
        target = self._now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            when, _, fut = heapq.heappop(self._sleepers)
            self._now = max(self._now, when)
            if not fut.done():
                fut.set_result(None)
            # Let woken tasks run before the next deadline.
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)
