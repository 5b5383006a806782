"""The local health endpoint: a tiny HTTP/1.1 server on loopback, stdlib only.

Routes (GET only, one request per connection, ``Connection: close``):

* ``/metrics`` -- Prometheus text (:mod:`agent.service.metrics`).
* ``/health``  -- the JSON health document (:class:`agent.service.health.HealthReport`); HTTP 200 when ok or
  degraded, 503 when failing, so a plain HTTP check can alert on it.
* ``/tail?tags=PATTERN[,PATTERN...]`` -- the last value of each matching tag as JSON (``mine-agent tail``
  polls it).

Why hand-written: three read-only routes do not justify a web framework on a gateway. The server protects
itself instead: requests larger than 8 KiB are refused, a client gets ``io_timeout_s`` to send its request
and read the answer, and at most ``max_clients`` connections are served at once (more get 503), so a stuck
or hostile client cannot tie up the agent. It listens on 127.0.0.1 by default; exposing it wider is a
deliberate configuration choice (``[health] listen``).
"""

from __future__ import annotations

__all__ = ["HealthServer", "parse_listen"]

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from agent.core.cancellation import timeout
from agent.core.errors import AgentError
from agent.pipeline.last_values import LastValues
from agent.service.health import HealthMonitor
from agent.service.metrics import CONTENT_TYPE, render_metrics

log = structlog.get_logger(__name__)

_MAX_REQUEST = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Request Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9108"`` or ``"[::1]:9108"`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise AgentError(f"health listen address {listen!r} must be HOST:PORT, e.g. 127.0.0.1:9108")
    return host.strip("[]") or "127.0.0.1", int(port)


class HealthServer:
    def __init__(
        self,
        monitor: HealthMonitor,
        last_values: LastValues | None,
        listen: str = "127.0.0.1:9108",
        *,
        io_timeout_s: float = 5.0,
        max_clients: int = 8,
    ) -> None:
        self.monitor = monitor
        self.last_values = last_values
        self.host, self.port = parse_listen(listen)
        self.io_timeout_s = io_timeout_s
        self.max_clients = max_clients
        self._clients = 0
        self._server: asyncio.Server | None = None
        self._routes: dict[str, Callable[[dict[str, list[str]]], Any]] = {
            "/metrics": self._metrics, "/health": self._health, "/tail": self._tail,
        }

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from the configured one when that was 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_REQUEST)
        except OSError as exc:
            raise AgentError(f"health endpoint cannot listen on {self.host}:{self.port}: {exc.strerror}",
                             ) from exc
        log.info("health_listening", listen=f"{self.host}:{self.bound_port}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with timeout(self.io_timeout_s):
                    await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self._clients >= self.max_clients:
                await self._respond(writer, 503, "text/plain", b"too many clients\n")
                return
            self._clients += 1
            try:
                async with timeout(self.io_timeout_s):
                    status, ctype, body = await self._handle(reader)
                    await self._respond(writer, status, ctype, body)
            finally:
                self._clients -= 1
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that went away or dawdled: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                async with timeout(self.io_timeout_s):
                    await writer.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return 413, "text/plain", b"request too large\n"
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain", b"bad request line\n"
        method, target, _ = parts
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        url = urlsplit(target)
        route = self._routes.get(url.path)
        if route is None:
            return 404, "text/plain", b"routes: /metrics /health /tail?tags=PATTERN\n"
        try:
            return await route(parse_qs(url.query))
        except Exception as exc:  # a bug in a snapshot must not take the endpoint (or the agent) down
            log.exception("health_request_failed", error=repr(exc), path=url.path)
            return 500, "text/plain", f"internal error: {exc!r}\n".encode()

    async def _respond(self, writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes) -> None:
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
        writer.write(head.encode("latin-1") + body)
        await writer.drain()

    async def _metrics(self, _: dict[str, list[str]]) -> tuple[int, str, bytes]:
        report = await self.monitor.check()
        return 200, CONTENT_TYPE, render_metrics(report.document()).encode()

    async def _health(self, _: dict[str, list[str]]) -> tuple[int, str, bytes]:
        report = await self.monitor.check()
        body = json.dumps(report.document(), default=str, indent=1).encode()
        return (503 if report.status == "failing" else 200), "application/json", body

    async def _tail(self, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        patterns = [p.strip() for arg in query.get("tags", []) for p in arg.split(",")]
        values = self.last_values.select(patterns) if self.last_values is not None else {}
        return 200, "application/json", json.dumps(values, default=str).encode()
