"""Field drivers behind one small interface.

A driver owns one device (a PLC, an OPC UA server, a serial instrument). :meth:`Driver.run` runs until it
is cancelled, handing each poll's samples to the sink. A device that is down, slow or answering garbage
yields bad-quality samples and counted errors; ``run`` does not return or raise for device trouble, only
for a programming error. The runtime supervises it anyway.

The sink takes one poll's readings per call, as a ``Sequence[Sample]``: a plain list, or an
``agent.core.sample.Poll`` when the driver can hand whole responses over as ``SampleBlock``s (bytes, one
timestamp, a shared layout) so that nothing is done per value at poll time. A ``Poll`` iterates as the
samples it stands for, so a sink that only understands samples needs nothing more.

Drivers are found by the device's ``protocol`` and imported lazily, so a gateway that only speaks Modbus
never pays asyncua's import time and memory.
"""

from __future__ import annotations

__all__ = ["DeviceStats", "Driver", "create_driver", "driver_class"]

import abc
import importlib
from dataclasses import dataclass
from typing import Any

from agent.core.clock import Clock, SystemClock
from agent.core.sample import SampleSink

_REGISTRY: dict[str, str] = {
    "modbus-tcp": "drivers.modbus:ModbusDriver",
    "modbus-rtu": "drivers.modbus:ModbusDriver",
    "modbus-rtu-tcp": "drivers.modbus:ModbusDriver",
    "serial": "drivers.serial:SerialDriver",
    "opcua": "drivers.opcua:OpcUaDriver",
}


@dataclass(slots=True)
class DeviceStats:
    """Counters a driver keeps for health and metrics. Plain fields: read them, never reset them."""

    polls: int = 0
    errors: int = 0
    samples: int = 0
    bad_samples: int = 0
    connected: bool = False
    last_error: str | None = None
    last_ok_ms: int | None = None
    last_poll_duration_s: float = 0.0
    skipped_polls: int = 0


class Driver(abc.ABC):
    """One device. Subclasses take their protocol's device model from ``config.schema``."""

    def __init__(self, name: str, config: Any, sink: SampleSink, *, clock: Clock | None = None) -> None:
        self.name = name
        self.config = config
        self.sink = sink
        self.clock = clock or SystemClock()
        self.stats = DeviceStats()

    @abc.abstractmethod
    async def run(self) -> None:
        """Connect, poll or subscribe, reconnect; until cancelled. Must clean up on cancellation."""


def driver_class(protocol: str) -> type[Driver]:
    try:
        target = _REGISTRY[protocol]
    except KeyError:
        raise ValueError(f"no driver for protocol {protocol!r}") from None
    module, _, cls = target.partition(":")
    driver: type[Driver] = getattr(importlib.import_module(module), cls)
    return driver


def create_driver(name: str, config: Any, sink: SampleSink, *, clock: Clock | None = None) -> Driver:
    return driver_class(config.protocol)(name, config, sink, clock=clock)
