"""One Modbus connection (a TCP socket or a serial line), shared by every unit behind it.

Why a layer of our own over the pymodbus client:

* **Sharing.** Several devices in the configuration can sit on one RS-485 line or behind one TCP gateway.
  They get the same :class:`ModbusLink` (looked up by :func:`acquire_link`), which sends one request at a
  time and keeps ``request_delay_s`` of silence between requests, as slow gateways and meters require.
* **Connecting.** pymodbus does not retry a failed first ``connect()`` and, after a lost connection,
  retries on its own schedule (up to 300 s apart). Here pymodbus' own reconnect is switched off
  (``reconnect_delay=0``) and :meth:`ModbusLink.ensure_connected` connects with our capped, jittered
  :class:`agent.core.backoff.Backoff` on the injected clock, so a PLC that is power-cycled or plugged in late
  is found within ``reconnect_max_s``.
* **Bytes.** Register reads (function codes 3 and 4) are answered with the register bytes as sent
  (:class:`WordsResponse`, registered on each client), not a list of ints: the decoders unpack tags straight
  from those bytes. pymodbus' own response converts every register to an int and formats the whole list
  for a debug message (even with debug logging off): about a fifth of the agent's CPU at 10,000 registers
  a second (bench/pipeline.py, profiled).
* **Errors.** pymodbus exceptions and exception responses are converted here, once, into :class:`ReadError`
  carrying a reason a technician can read ("modbus exception 2 (illegal data address)", "no response within
  1.0 s (2 attempts)"). Callers never see a pymodbus type.

Timeouts: pymodbus waits ``timeout`` for each attempt and makes ``retries + 1`` attempts, so a unit that does
not answer costs ``timeout_s * (retries + 1)``; both are set per request from the device's settings.
"""

from __future__ import annotations

__all__ = [
    "ExceptionResponseError",
    "InputWordsResponse",
    "ModbusLink",
    "NoResponseError",
    "NotConnectedError",
    "ReadError",
    "WordsResponse",
    "acquire_link",
    "registers_of",
    "release_link",
]

import asyncio
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from agent.core.backoff import Backoff
from agent.core.cancellation import cancellable, timeout
from agent.core.clock import Clock
from agent.core.errors import DeviceTimeout, DriverError
from drivers.modbus.config import ModbusDevice, ModbusRtuDevice, ModbusRtuTcpDevice

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ReadError(DriverError):
    """A read failed; ``reason`` is what the bad samples carry."""

    def __init__(self, reason: str, *, device: str | None = None, recoverable: bool = True) -> None:
        super().__init__(reason, device=device, recoverable=recoverable)
        self.reason = reason


class NotConnectedError(ReadError):
    """The connection is down; reconnecting is under way."""


class NoResponseError(ReadError, DeviceTimeout):
    """The unit did not answer (timeout, or a reply that was garbled, had a bad CRC or a wrong id)."""


class ExceptionResponseError(ReadError):
    """The unit answered with a Modbus exception response."""

    def __init__(self, code: int, *, device: str | None = None) -> None:
        name = EXCEPTION_NAMES.get(code, "unknown exception")
        super().__init__(f"modbus exception {code} ({name})", device=device)
        self.code = code


class WordsResponse(ReadHoldingRegistersResponse):
    """The answer to "read holding registers" (FC3), kept as the register bytes as sent (``words``: big-endian
    16-bit words, two bytes per register). Framing, byte count check and matching to the request are
    pymodbus' own, as for its ``ReadHoldingRegistersResponse``; only the conversion is left out."""

    words: bytes = b""

    def decode(self, data: bytes) -> None:
        byte_count = data[0]
        if byte_count >= len(data):  # the same check as pymodbus: the frame is dropped, the read times out
            raise ModbusIOException(
                f"byte_count {byte_count} > length of packet {len(data)}", function_code=self.function_code
            )
        # An odd byte count: the last, incomplete register is ignored, as pymodbus does.
        self.words = bytes(data[1 : 1 + byte_count - (byte_count & 1)])
        self.count = len(self.words) // 2

    def __str__(self) -> str:
        return (
            f"{type(self).__name__}(dev_id={self.dev_id}, transaction_id={self.transaction_id}, "
            f"registers={len(self.words) // 2})"
        )


class InputWordsResponse(WordsResponse):
    """The answer to "read input registers" (FC4), as :class:`WordsResponse`."""

    function_code = ReadInputRegistersResponse.function_code


def registers_of(words: bytes) -> list[int]:
    """The registers in ``words`` (bytes as sent) as numbers, for tools that print them."""
    return list(struct.unpack(f">{len(words) // 2}H", words))


def _make_client(config: ModbusDevice) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    client = _new_client(config)
    client.register(WordsResponse)
    client.register(InputWordsResponse)
    return client


def _new_client(config: ModbusDevice) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    common: dict[str, Any] = {"timeout": config.timeout_s, "retries": config.retries, "reconnect_delay": 0}
    if isinstance(config, ModbusRtuDevice):
        return AsyncModbusSerialClient(
            config.serial_port,
            framer=FramerType.RTU,
            baudrate=config.baudrate,
            parity=config.parity,
            bytesize=config.bytesize,
            stopbits=config.stopbits,
            **common,
        )
    framer = FramerType.RTU if isinstance(config, ModbusRtuTcpDevice) else FramerType.SOCKET
    return AsyncModbusTcpClient(config.host, port=config.port, framer=framer, **common)


def describe(config: ModbusDevice) -> str:
    """Where the connection goes, for logs and error messages."""
    if isinstance(config, ModbusRtuDevice):
        return f"{config.serial_port} {config.baudrate} {config.bytesize}{config.parity}{config.stopbits}"
    return f"{config.host}:{config.port}"


class ModbusLink:
    """One connection; see the module docstring. Create with :func:`acquire_link`, not directly."""

    def __init__(
        self,
        config: ModbusDevice,
        clock: Clock,
        *,
        client_factory: Callable[[ModbusDevice], Any] = _make_client,
    ) -> None:
        self.key = config.connection_key()
        self.settings = config.connection_settings()
        self.where = describe(config)
        self.clock = clock
        self.request_delay_s = config.request_delay_s
        if isinstance(config, ModbusRtuDevice):
            # RTU frames are delimited by 3.5 character times of silence (1.75 ms above 19200 baud).
            bits = 1 + config.bytesize + (0 if config.parity == "N" else 1) + config.stopbits
            t35 = 3.5 * bits / config.baudrate if config.baudrate <= 19200 else 0.00175
            self.request_delay_s = max(self.request_delay_s, t35)
        self.users = 0
        self.connects = 0
        self.last_error: str | None = None
        self._client = client_factory(config)
        self.loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._backoff = Backoff(initial=min(0.5, config.reconnect_max_s), maximum=config.reconnect_max_s)
        self._next_connect_at = float("-inf")
        self._last_request_end = float("-inf")
        self._is_serial = isinstance(config, ModbusRtuDevice)
        self._serial_port = config.serial_port if isinstance(config, ModbusRtuDevice) else ""

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def ensure_connected(self) -> bool:
        """Connect if down and an attempt is due; True when the link is up. Never raises for I/O trouble."""
        if self._client.connected:
            return True
        async with self._connect_lock:
            if self._client.connected:
                return True
            now = self.clock.monotonic()
            if now < self._next_connect_at:
                return False
            try:
                ok = await cancellable(self._client.connect())
            except Exception as exc:  # pyserial/termios raise OSError, termios.error or ValueError
                # Whatever opening the port or socket raised is a device problem: report it as bad samples.
                self._client.close()
                ok = False
                self.last_error = f"cannot open {self.where}: {exc}" if self._is_serial else str(exc)
            else:
                if not ok:
                    self.last_error = self._connect_failure_text()
            if ok and self._client.connected:
                self._backoff.reset()
                self._next_connect_at = float("-inf")
                self.connects += 1
                self.last_error = None
                return True
            self._next_connect_at = self.clock.monotonic() + self._backoff.next()
            return False

    def _connect_failure_text(self) -> str:
        # pymodbus logs the OS error and returns False; say what a technician can check.
        if self._is_serial:
            if not os.path.exists(self._serial_port):
                return f"cannot open {self.where}: no such device (unplugged?)"
            return f"cannot open {self.where} (in use by another program, or no permission?)"
        return f"cannot connect to {self.where} (refused or unreachable)"

    def not_connected_reason(self) -> str:
        return f"not connected: {self.last_error or 'connecting to ' + self.where}"

    async def read(
        self, unit: int, function_code: int, address: int, count: int, *, timeout_s: float, retries: int
    ) -> bytes | list[bool]:
        """One read request: the register bytes as sent (function codes 3 and 4; :func:`registers_of` turns
        them into numbers) or the bits (1 and 2). Raises a :class:`ReadError` subclass with the reason for
        bad samples."""
        async with self._lock:
            # Line silence is physical time, so it uses the real clock even when a test injects a fake one.
            if self.request_delay_s:
                wait = self._last_request_end + self.request_delay_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                return await self._read_locked(
                    unit, function_code, address, count, timeout_s=timeout_s, retries=retries
                )
            finally:
                self._last_request_end = time.monotonic()

    async def _read_locked(
        self, unit: int, function_code: int, address: int, count: int, *, timeout_s: float, retries: int
    ) -> bytes | list[bool]:
        client = self._client
        if not client.connected:
            raise NotConnectedError(self.not_connected_reason())
        # One client serves every unit on the link; each unit brings its own timeout and retries.
        client.ctx.comm_params.timeout_connect = timeout_s
        client.ctx.retries = retries
        if function_code == 3:
            call = client.read_holding_registers
        elif function_code == 4:
            call = client.read_input_registers
        elif function_code == 1:
            call = client.read_coils
        else:
            call = client.read_discrete_inputs
        try:
            # The outer timeout only guards a wedged transport: pymodbus times out each attempt itself.
            async with timeout(timeout_s * (retries + 1) + 5.0):
                response = await cancellable(call(address, count=count, device_id=unit))
        except ConnectionException as exc:
            self.last_error = f"connection to {self.where} lost"
            raise NotConnectedError(f"not connected: {self.last_error}") from exc
        except ModbusIOException as exc:
            if not client.connected:
                self.last_error = f"connection to {self.where} lost"
            raise NoResponseError(f"no response within {timeout_s:g} s ({retries + 1} attempts)") from exc
        except ModbusException as exc:
            raise ReadError(f"modbus error: {exc}") from exc
        except TimeoutError as exc:
            client.close()
            self.last_error = "transport stalled"
            raise NoResponseError("no response (transport stalled; reconnecting)") from exc
        except OSError as exc:
            client.close()
            self.last_error = str(exc)
            raise NotConnectedError(f"not connected: {exc}") from exc
        if response.isError():
            code = getattr(response, "exception_code", None)
            if code is None:
                raise ReadError(f"modbus error: {response}")
            raise ExceptionResponseError(int(code))
        if function_code in (3, 4):
            if not isinstance(response, WordsResponse):
                raise ReadError(f"modbus error: unexpected answer {response}")
            return response.words
        return response.bits

    def close(self) -> None:
        self._client.close()


_LINKS: dict[tuple[int, tuple[object, ...]], ModbusLink] = {}


def acquire_link(config: ModbusDevice, clock: Clock) -> ModbusLink:
    """The link for this device's connection, shared with other devices on it; call :func:`release_link`.

    Raises :class:`DriverError` (not recoverable) when another device already uses the same connection with
    different line settings (say 9600 baud here and 19200 there): one of the two entries is wrong.
    """
    loop = asyncio.get_running_loop()
    key = (id(loop), config.connection_key())
    link = _LINKS.get(key)
    if link is None or link.loop is not loop:  # a link left behind by a loop that is gone
        link = _LINKS[key] = ModbusLink(config, clock)
    elif link.settings != config.connection_settings():
        raise DriverError(
            f"connection {link.where} is already used with settings {link.settings}, this device asks for "
            f"{config.connection_settings()}",
            hint="devices on one serial port or TCP address must agree on protocol and line settings",
        )
    link.users += 1
    return link


def release_link(link: ModbusLink) -> None:
    """Drop one user; the last one closes the connection."""
    link.users -= 1
    if link.users > 0:
        return
    link.close()
    for key, value in list(_LINKS.items()):
        if value is link:
            del _LINKS[key]
