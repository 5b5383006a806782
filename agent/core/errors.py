"""The one exception tree of the agent.

Every error the agent raises on purpose derives from :class:`AgentError`. Errors carry data, not only a
string: the device, tag, config key, file and line they concern, and a hint a technician can act on.
Third-party errors (pymodbus, asyncua, aiomqtt, sqlite3, cryptography) are converted once, at the boundary
where they enter our code, with ``raise ... from``, so callers never have to know which library failed.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "BufferCorruption",
    "BufferStoreError",
    "ConfigError",
    "ConfigProblem",
    "DeviceTimeout",
    "DriverError",
    "RemoteConfigError",
    "SignatureError",
    "UplinkError",
    "WireBoundsError",
    "WireFormatError",
]

from dataclasses import dataclass


class AgentError(Exception):
    """Root of every error the agent raises on purpose.

    ``recoverable`` says whether retrying the same operation later may succeed (a device that is down)
    or not (a configuration that is wrong): supervisors use it to choose between backoff and giving up.
    """

    def __init__(
        self,
        message: str,
        *,
        device: str | None = None,
        tag: str | None = None,
        key: str | None = None,
        path: str | None = None,
        line: int | None = None,
        hint: str | None = None,
        recoverable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.device = device
        self.tag = tag
        self.key = key
        self.path = path
        self.line = line
        self.hint = hint
        self.recoverable = recoverable

    def __str__(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}:{self.line}" if self.line is not None else self.path)
        if self.device is not None:
            parts.append(f"device {self.device!r}")
        if self.tag is not None:
            parts.append(f"tag {self.tag!r}")
        if self.key is not None:
            parts.append(self.key)
        text = ": ".join([*parts, self.message]) if parts else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration file, located as precisely as the parser allows."""

    path: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(AgentError):
    """A configuration cannot be used. Carries every problem found, not only the first."""

    def __init__(self, problems: list[ConfigProblem], *, path: str | None = None) -> None:
        self.problems = problems
        text = "\n".join(str(p) for p in problems)
        super().__init__(text, hint=None)
        self.path = path

    def __str__(self) -> str:
        return self.message


class DriverError(AgentError):
    """A device could not be read. Drivers turn these into bad-quality samples; they never crash the agent."""


class DeviceTimeout(DriverError):
    """A device did not answer within its configured timeout."""


class BufferStoreError(AgentError):
    """The durable buffer cannot store or serve batches."""


class BufferFull(BufferStoreError):
    """The buffer refused a batch: the batches it never evicts (gap and catalog) leave no room for it within
    its limits. Nothing of the append was stored; retry later. ``condition`` says which limit binds:
    ``"buffer_full"`` (``buffer.max_bytes``) or ``"disk_full"`` (the free-disk watermark)."""

    def __init__(self, message: str, *, condition: str, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, path=path, hint=hint, recoverable=True)
        self.condition = condition


class BufferCorruption(BufferStoreError):
    """Part of the buffer file failed its integrity check; the part is set aside and counted."""


class UplinkError(AgentError):
    """The MQTT uplink failed: connect, publish or acknowledgement."""


class WireFormatError(AgentError):
    """A frame is not a well-formed batch of this protocol (see docs/protocol.md)."""


class WireBoundsError(WireFormatError):
    """A frame is well-formed so far but exceeds a bound of the protocol (agent/protocol/limits.py): too big,
    too many rows, a value out of range. Separate so a receiver can account it as such without reading text."""


class SignatureError(AgentError):
    """A batch or configuration push is unsigned, signed by an unknown key, or its signature does not verify."""


class RemoteConfigError(AgentError):
    """A remote configuration push was refused."""
