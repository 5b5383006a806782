"""Helpers for driver tests: collect what a driver hands its sink, and wait on conditions, not sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from agent.core.sample import Quality, Sample
from drivers.modbus.config import ModbusTag, ModbusTcpDevice

DEADLINE_S = 20.0  # generous: the machine is shared with other test runs


class Collector:
    """A sink that keeps every poll's samples and wakes waiters."""

    def __init__(self) -> None:
        self.polls: list[list[Sample]] = []
        self._seen = 0  # polls already examined by wait_for: each wait looks only at newer ones
        self._changed = asyncio.Event()

    def __call__(self, samples: Sequence[Sample]) -> None:
        self.polls.append(list(samples))
        self._changed.set()

    def latest(self) -> dict[str, Sample]:
        return {s.tag: s for s in self.polls[-1]} if self.polls else {}

    async def wait_for(
        self, predicate: Callable[[list[Sample]], bool], deadline_s: float = DEADLINE_S
    ) -> list[Sample]:
        """Wait until a poll not examined before satisfies ``predicate``; return it."""
        async with asyncio.timeout(deadline_s):
            while True:
                while self._seen < len(self.polls):
                    poll = self.polls[self._seen]
                    self._seen += 1
                    if predicate(poll):
                        return poll
                self._changed.clear()
                await self._changed.wait()


def all_good(poll: list[Sample]) -> bool:
    return bool(poll) and all(s.quality == Quality.GOOD for s in poll)


def all_bad(poll: list[Sample]) -> bool:
    return bool(poll) and all(s.quality == Quality.BAD for s in poll)


def tcp_device(port: int, tags: list[dict[str, Any]], **settings: Any) -> ModbusTcpDevice:
    values: dict[str, Any] = {
        "protocol": "modbus-tcp",
        "host": "127.0.0.1",
        "port": port,
        "poll_interval_s": 0.05,
    }
    values.update(settings)
    return ModbusTcpDevice(**values, tags=[ModbusTag(**t) for t in tags])
