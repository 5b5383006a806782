"""Running a driver against a test server and collecting what it hands the sink."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agent.core.sample import Quality, Sample
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.driver import OpcUaDriver


class Collector:
    """A sink that keeps every burst, as the pipeline would receive them."""

    def __init__(self) -> None:
        self.bursts: list[list[Sample]] = []

    def __call__(self, samples: Sequence[Sample]) -> None:
        self.bursts.append(list(samples))

    @property
    def samples(self) -> list[Sample]:
        return [s for burst in self.bursts for s in burst]

    def of(self, tag: str) -> list[Sample]:
        return [s for s in self.samples if s.tag == tag]

    def last(self, tag: str) -> Sample | None:
        found = self.of(tag)
        return found[-1] if found else None

    def has(self, tag: str, value: Any = None, quality: Quality | None = None) -> bool:
        for s in self.of(tag):
            if (value is None or s.value == value) and (quality is None or s.quality is quality):
                return True
        return False


def device(url: str, tags: list[dict[str, Any]], **settings: Any) -> OpcUaDevice:
    return OpcUaDevice.model_validate(
        {"protocol": "opcua", "url": url, "timeout_s": 5.0, "watchdog_s": 1.0, "tags": tags, **settings}
    )


@contextlib.asynccontextmanager
async def running(name: str, cfg: OpcUaDevice) -> AsyncIterator[tuple[OpcUaDriver, Collector]]:
    sink = Collector()
    driver = OpcUaDriver(name, cfg, sink)
    task = asyncio.create_task(driver.run(), name=f"test-driver[{name}]")
    try:
        yield driver, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
