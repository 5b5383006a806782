"""Shared fixtures: real peers on free loopback ports, started and stopped by the tests themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import LoopThread
from tests.peers.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto broker of this test's own; stop/kill/pause/restart it to simulate outages."""
    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def peers() -> Iterator[LoopThread]:
    """An event loop in a thread of its own, where simulated PLCs and other peers run beside the agent."""
    loop = LoopThread()
    yield loop
    loop.close()
