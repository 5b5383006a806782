"""The serial port itself: pyserial opens and configures it, the event loop reads it.

pyserial's own ``read_until``/``readline`` call ``read(1)`` per byte (about 200x the CPU, library notes §7),
and ``pyserial-asyncio-fast`` would add a dependency for what a dozen lines do: the port is opened with
``timeout=0`` (non-blocking), the loop watches its descriptor with ``add_reader``, and each wake-up reads
everything available with one ``os.read``. A disconnected USB adapter or a closed pty shows up as a
readable descriptor whose read fails or returns nothing; both become a recoverable :class:`DriverError`.
"""

from __future__ import annotations

__all__ = ["SerialPort", "open_port"]

import contextlib
import errno
import os

import serial

from agent.core.errors import DriverError
from drivers.serial.config import SerialDevice

_PARITY = {
    "none": serial.PARITY_NONE,
    "even": serial.PARITY_EVEN,
    "odd": serial.PARITY_ODD,
    "mark": serial.PARITY_MARK,
    "space": serial.PARITY_SPACE,
}
_READ_SIZE = 65536
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class SerialPort:
    """An open, non-blocking serial port. Not thread-safe; used from the event loop only."""

    def __init__(self, device_name: str, handle: serial.Serial) -> None:
        self.device_name = device_name
        self.handle = handle
        self.path = handle.port

    def fileno(self) -> int:
        return int(self.handle.fileno())

    def read_available(self) -> bytes:
        """Everything the kernel holds for us (possibly b"" on a spurious wake-up)."""
        try:
            data = os.read(self.fileno(), _READ_SIZE)
        except OSError as exc:
            if exc.errno in _AGAIN:
                return b""
            raise self._lost(f"read failed: {exc.strerror or exc}") from exc
        if not data:
            raise self._lost("port reports data but returns none (device disconnected?)")
        return data

    def write(self, data: bytes) -> None:
        """Write a short command. A full output buffer on a serial line means the line is stuck: an error."""
        try:
            written = os.write(self.fileno(), data)
        except OSError as exc:
            raise self._lost(f"write failed: {exc.strerror or exc}") from exc
        if written != len(data):
            raise DriverError(
                f"only {written} of {len(data)} command bytes could be written",
                device=self.device_name,
                hint="check flow control and that nothing else holds the port",
                recoverable=True,
            )

    def _lost(self, what: str) -> DriverError:
        return DriverError(
            f"{self.path}: {what}",
            device=self.device_name,
            hint="check the cable and the USB adapter; the port is reopened automatically",
            recoverable=True,
        )

    def close(self) -> None:
        # A device that is already gone has nothing left to release.
        with contextlib.suppress(OSError, serial.SerialException):
            self.handle.close()


def open_port(device_name: str, config: SerialDevice) -> SerialPort:
    """Open and configure the port (exclusive lock, so two agents never split one instrument's bytes)."""
    try:
        handle = serial.Serial(
            port=config.port,
            baudrate=config.baudrate,
            bytesize=config.bytesize,
            parity=_PARITY[config.parity],
            stopbits=config.stopbits,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )
    except (OSError, serial.SerialException, ValueError) as exc:
        raise DriverError(
            f"cannot open {config.port}: {exc}",
            device=device_name,
            hint="is the adapter plugged in, the path right (prefer /dev/serial/by-id/...), "
            "and the agent in the 'dialout' group?",
            recoverable=True,
        ) from exc
    return SerialPort(device_name, handle)
