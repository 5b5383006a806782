"""sd_notify against sockets the tests create: message bytes, address forms, watchdog environment."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import structlog

from agent.service.sdnotify import Notifier, watchdog_interval
from tests.service.conftest import NotifyReceiver


async def test_ready_reaches_an_abstract_socket(notify_receiver: NotifyReceiver) -> None:
    """READY=1 with a status is one datagram to the abstract socket named with '@'."""
    n = Notifier({"NOTIFY_SOCKET": notify_receiver.name})

    assert n.ready(status="hello")
    msg = await notify_receiver.receive(5)

    assert msg == "READY=1\nSTATUS=hello"


async def test_path_socket(tmp_path: Path) -> None:
    """A filesystem path in NOTIFY_SOCKET is used as is."""
    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        Notifier({"NOTIFY_SOCKET": str(path)}).stopping()

        assert sock.recv(100) == b"STOPPING=1\nSTATUS=stopping"
    finally:
        sock.close()


async def test_reloading_carries_monotonic_usec(notify_receiver: NotifyReceiver) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC on CLOCK_MONOTONIC, as Type=notify-reload requires."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier({"NOTIFY_SOCKET": notify_receiver.name}).reloading()
    msg = await notify_receiver.receive(5)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

    fields = dict(line.split("=", 1) for line in (msg or "").split("\n"))
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_without_socket_nothing_is_sent() -> None:
    """Outside systemd the notifier is disabled and sending is a harmless no-op."""
    n = Notifier({})

    assert not n.enabled
    assert not n.ready()


def test_unsupported_address_disables() -> None:
    """A vsock: address (newer systemd in VMs) is not supported and disables the notifier."""
    assert not Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_unreachable_socket_warns_once(tmp_path: Path) -> None:
    """A socket path nobody listens on gives one warning, not one per ping, and never raises."""
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    with structlog.testing.capture_logs() as logs:
        results = [n.watchdog() for _ in range(5)]

    assert results == [False] * 5
    assert [e["event"] for e in logs] == ["sd_notify_failed"]


def test_watchdog_interval_is_half_the_timeout() -> None:
    """WATCHDOG_USEC=30 s means a ping every 15 s."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=1) == 15.0


def test_watchdog_for_another_pid_is_ignored() -> None:
    """WATCHDOG_PID naming another process (a parent) means the watchdog is not ours."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=43) is None


def test_watchdog_for_this_pid() -> None:
    """WATCHDOG_PID equal to our pid enables it."""
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "43"}, pid=43) == 0.5


def test_watchdog_off_without_usec() -> None:
    """No WATCHDOG_USEC (or a bad one) means no watchdog."""
    assert watchdog_interval({}, pid=1) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=1) is None
