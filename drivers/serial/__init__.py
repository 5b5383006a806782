"""Serial instruments (RS-232/RS-485) in their own ASCII or binary protocols, described by configuration.

See ``README.md`` and ``sample.toml`` beside this file. The pure parts (checksums, framing, decoding) live in
their own modules and do no I/O; ``driver`` adds the port, the supervisor and the poll/stream loops.
"""

from __future__ import annotations

__all__ = ["SerialDevice", "SerialDriver"]

from drivers.serial.config import SerialDevice
from drivers.serial.driver import SerialDriver
