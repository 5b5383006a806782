"""Fixtures for the service tests: a notify socket, a signer, and an agent running on stand-ins."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent.cli.run import run_agent
from agent.protocol.signing import BatchSigner, generate_key
from agent.runtime import Agent
from agent.service.health import LivenessPolicy
from agent.service.sdnotify import Notifier
from tests.service.standins import StandIns, config_toml, make_config


@pytest.fixture
def signer(tmp_path: Path) -> BatchSigner:
    return generate_key(tmp_path / "keys")


class NotifyReceiver:
    """The systemd side of sd_notify: an abstract-namespace datagram socket that collects messages."""

    def __init__(self) -> None:
        self.name = f"@mine-agent-test-{os.getpid()}-{id(self)}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def receive(self, timeout: float) -> str | None:  # noqa: ASYNC109 -- a test helper's deadline
        """The next datagram, or None if none came within ``timeout`` (the agent runs in this same loop)."""
        try:
            async with asyncio.timeout(timeout):
                data = await asyncio.get_running_loop().sock_recv(self.sock, 4096)
        except TimeoutError:
            return None
        msg = data.decode()
        self.messages.append(msg)
        return msg

    async def wait_for(self, line: str, timeout: float = 30.0) -> str:  # noqa: ASYNC109
        """The first message containing ``line`` (as a whole line), within ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            msg = await self.receive(left)
            if msg is not None and line in msg.split("\n"):
                return msg
        raise AssertionError(f"no {line!r} within {timeout} s; got {self.messages[-5:]}")

    async def silence(self, line: str, quiet_s: float, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Wait until no message containing ``line`` arrived for ``quiet_s`` seconds (within ``timeout``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = loop.time()
        while loop.time() - last < quiet_s:
            if loop.time() > deadline:
                raise AssertionError(f"{line!r} still arriving after {timeout} s")
            msg = await self.receive(quiet_s)
            if msg is not None and line in msg.split("\n"):
                last = loop.time()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_receiver() -> Iterator[NotifyReceiver]:
    r = NotifyReceiver()
    try:
        yield r
    finally:
        r.close()


FAST = LivenessPolicy(flush_stall_s=0.5, buffer_timeout_s=0.5, device_stall_s=0.5, device_stall_polls=2,
                      uplink_stall_s=0.5)


@asynccontextmanager
async def running(tmp_path: Path, signer: BatchSigner, receiver: NotifyReceiver, *, devices: int = 2,
                  tags: int = 3, policy: LivenessPolicy = FAST,
                  standins: StandIns | None = None) -> AsyncIterator[tuple[Agent, Path, asyncio.Task[int]]]:
    """The agent as ``mine-agent run`` runs it, on the stand-ins (``standins``, or new ones): its buffer is
    ``agent.queue``, its uplink ``agent.uplink``, its drivers ``agent.drivers``."""
    config = make_config(tmp_path, devices=devices, tags=tags)
    path = tmp_path / "agent.toml"
    path.write_text(config_toml(config))
    agent = (standins or StandIns()).agent(config, signer=signer)
    notifier = Notifier({"NOTIFY_SOCKET": receiver.name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())})
    task = asyncio.create_task(run_agent(agent, path, notifier=notifier, policy=policy))
    try:
        yield agent, path, task
    finally:
        if not task.done():
            agent.stop()
            async with asyncio.timeout(30):
                await task
