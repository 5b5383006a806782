"""systemd's notify protocol (``sd_notify(3)``) without a dependency.

The protocol is one ``AF_UNIX``/``SOCK_DGRAM`` datagram of newline-separated ``KEY=VALUE`` lines sent to
the path in ``$NOTIFY_SOCKET``; a leading ``@`` names the Linux abstract namespace (the ``@`` becomes a NUL
byte). Addresses systemd may hand out that are not Unix paths (``vsock:``) are not supported and make the
notifier a no-op, as does a missing ``$NOTIFY_SOCKET`` (the agent started from a shell or a test).

Watchdog semantics follow ``sd_watchdog_enabled(3)``: ``$WATCHDOG_USEC`` enables it, and when
``$WATCHDOG_PID`` is set it must be this process's pid (it is not meant for children). systemd recommends
pinging at half the timeout. Sending never blocks and never raises: a notification is advice to the service
manager, and an agent that cannot reach it must keep collecting data.
"""

from __future__ import annotations

__all__ = ["Notifier", "watchdog_interval"]

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)


def _address(value: str | None) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock: and anything newer than this code


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or None when the watchdog is off for us."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    wd_pid = env.get("WATCHDOG_PID")
    if wd_pid and wd_pid.strip() != str(pid if pid is not None else os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


class Notifier:
    """Sends state changes to systemd. ``enabled`` is False when there is no socket to talk to."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET"))
        self.watchdog_interval = watchdog_interval(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram made of ``lines``; True if it was handed to the kernel."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._warned:  # one warning per outage of the notify socket, not one per ping
                log.warning("sd_notify_failed", error=str(exc), hint="is NOTIFY_SOCKET valid and NotifyAccess=main?")
                self._warned = True
            return False
        self._warned = False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """Start of a reload; systemd expects READY=1 again when it is done."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading configuration")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
