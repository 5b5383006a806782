"""Simulated serial instruments on pseudo-terminal pairs.

The driver opens ``Pty.path`` (the slave side) exactly like a real port; the test plays the instrument on
the master side. ``wait_until`` is the one way tests wait: on a condition with a generous deadline, never
on a fixed sleep, because this machine is shared and slow at times.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable

DEADLINE_S = 20.0


class Pty:
    """A pseudo-terminal pair; ``path`` is what the driver opens, ``master`` is the instrument's end."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self._slave)
        self.closed = False

    async def write(self, data: bytes, *, chunks: random.Random | None = None) -> None:
        """Write all of ``data``, optionally in random-sized chunks, yielding to the loop between them."""
        view = memoryview(data)
        while view:
            size = len(view) if chunks is None else chunks.randint(1, 64)
            try:
                written = os.write(self.master, view[:size])
            except BlockingIOError:
                written = 0
            view = view[written:]
            await asyncio.sleep(0 if written else 0.005)

    def read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def close(self) -> None:
        """Unplug: the driver's next read fails, as when a USB adapter disappears."""
        if not self.closed:
            self.closed = True
            os.close(self.master)
            os.close(self._slave)


async def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        await asyncio.sleep(0.01)


class AnsweringBus:
    """An RS-485 bus of instruments that answer commands: ``answer(command) -> bytes`` decides the reply.

    Runs as a task reading the master side; every complete command (recognised by ``command_length``)
    gets its answer written back. Records the commands it saw.
    """

    def __init__(self, pty: Pty, command_length: int, answer: Callable[[bytes], bytes]) -> None:
        self.pty = pty
        self.command_length = command_length
        self.answer = answer
        self.commands: list[bytes] = []

    async def run(self) -> None:
        buf = b""
        while True:
            data = self.pty.read()
            if not data:
                await asyncio.sleep(0.005)
                continue
            buf += data
            while len(buf) >= self.command_length:
                command, buf = buf[: self.command_length], buf[self.command_length :]
                self.commands.append(command)
                reply = self.answer(command)
                if reply:
                    await self.pty.write(reply)
