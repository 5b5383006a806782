"""A TCP proxy on loopback that delays every byte by a fixed one-way latency, like a mobile link.

On loopback the uplink drains a backlog faster than anything downstream can store it, so the queue builds
up in the broker, not on the gateway, and the order of arrival at the receiver says nothing about the
gateway's lanes. Behind a 25 ms one-way delay (50 ms round trip, a good 4G link) the gateway's publish
window is the bottleneck, as in the field, and what the gateway sends first arrives first.

Each direction reads chunks as they come and delivers each at ``arrival + delay``, in order, so latency is
added without limiting throughput below what the round trip itself allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

CHUNK = 65536


class LatencyProxy:
    """``async with LatencyProxy(upstream_port, delay_s) as proxy:`` then connect clients to ``proxy.port``."""

    def __init__(self, upstream_port: int, delay_s: float, host: str = "127.0.0.1") -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.host = host
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LatencyProxy:
        self._server = await asyncio.start_server(self._on_client, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except (OSError, TimeoutError):
            writer.close()
            return
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, (writer, up_writer)), name="latency-proxy.pipe")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    both: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    return
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(deliver(), name="latency-proxy.deliver")
        try:
            while True:
                data = await src.read(CHUNK)
                queue.put_nowait((time.monotonic() + self.delay_s, data))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()
            for w in both:
                with contextlib.suppress(Exception):
                    w.close()
