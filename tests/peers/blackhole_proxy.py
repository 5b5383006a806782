"""A TCP proxy on loopback that can turn into a black hole, to test links that die silently.

A mobile link that loses coverage, a NAT that forgets a flow, or a firewall that starts dropping packets
does not close anything: no FIN, no RST, just silence. ``Mosquitto.pause`` (SIGSTOP) is not the same: the
kernel still acknowledges TCP segments to a frozen broker. This proxy forwards bytes between each client and
the upstream until :meth:`blackhole` is called; from then on every existing connection swallows what it
reads in both directions and never closes, and new connections are accepted but never reach the upstream
(a CONNECT sent into them is never answered). :meth:`heal` makes *new* connections work again; the
swallowed ones stay dead, as they would after a real outage. :meth:`reset` closes every connection at once
(a peer that sees the TCP connection close, e.g. a rebooted router). :meth:`refuse` closes every new
connection at once (like "connection refused"), to hold clients off while a test rearranges the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class BlackholeProxy:
    """``async with BlackholeProxy(upstream_port) as proxy:`` then connect clients to ``proxy.port``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", host: str = "127.0.0.1",
                 connect_timeout: float = 5.0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self.connect_timeout = connect_timeout
        self.healthy = True
        self.refusing = False
        self.accepted = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> BlackholeProxy:
        self._server = await asyncio.start_server(self._on_client, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        await self.reset()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._server.wait_closed()

    def blackhole(self) -> None:
        """Stop forwarding in both directions on every connection, without closing any socket."""
        self.healthy = False
        for link in self._links:
            link.dead = True

    def heal(self) -> None:
        """New connections reach the upstream again (the black-holed ones stay silent)."""
        self.healthy = True
        self.refusing = False

    def refuse(self) -> None:
        """Close new connections as soon as they are accepted, until :meth:`heal`."""
        self.refusing = True

    async def reset(self) -> None:
        """Close every connection, client and upstream side."""
        links, self._links = list(self._links), set()
        for link in links:
            for task in link.tasks:
                task.cancel()
            for writer in (link.client, link.upstream):
                if writer is not None:
                    writer.close()
        for link in links:
            for task in link.tasks:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.refusing:
            writer.close()
            return
        link = _Link(client=writer, dead=not self.healthy)
        self._links.add(link)
        up_reader: asyncio.StreamReader | None = None
        if not link.dead:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    up_reader, link.upstream = await asyncio.open_connection(self.upstream_host,
                                                                             self.upstream_port)
            except (OSError, TimeoutError):
                self._links.discard(link)
                writer.close()
                return
        link.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        if up_reader is not None and link.upstream is not None:
            link.tasks.append(asyncio.create_task(self._pump(link, up_reader, writer), name="proxy.down"))
        try:
            await self._pump(link, reader, link.upstream)
        finally:
            if not link.dead:  # dead links keep their sockets open until reset() or exit
                self._links.discard(link)

    async def _pump(self, link: _Link, src: asyncio.StreamReader, dst: asyncio.StreamWriter | None) -> None:
        """Copy src -> dst until EOF; a dead link reads and discards, so the sender sees nothing wrong."""
        try:
            while data := await src.read(CHUNK):
                if link.dead or dst is None:
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.dead:
                # A real close on one side is passed on as a close on the other (only while healthy).
                for w in (link.client, link.upstream):
                    if w is not None:
                        w.close()
