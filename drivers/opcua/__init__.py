"""OPC UA driver: subscriptions and polled reads, secure sessions, server operation limits.

``OpcUaDevice`` (the config model) is importable without asyncua; ``OpcUaDriver`` imports asyncua (about
0.5 s and 40 MB) only when it is first asked for, so a gateway without OPC UA devices never loads it.
"""

from __future__ import annotations

__all__ = ["OpcUaDevice", "OpcUaDriver"]

from typing import TYPE_CHECKING, Any

from drivers.opcua.config import OpcUaDevice

if TYPE_CHECKING:
    from drivers.opcua.driver import OpcUaDriver


def __getattr__(name: str) -> Any:
    if name == "OpcUaDriver":
        from drivers.opcua.driver import OpcUaDriver

        return OpcUaDriver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
