"""A real asyncua server for the driver tests, on a free loopback port.

It behaves like the strict servers found on site: it *enforces* its OperationLimits (a Read,
CreateMonitoredItems or TranslateBrowsePaths call over the limit fails with BadTooManyOperations, which
plain asyncua does not do) and records the size of every such request, so tests can check that the
driver splits its requests. It offers policy None and every secure policy, with its own certificate,
and a user manager that knows one username/password and accepts certificate users.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_session import InternalSession
from asyncua.server.user_managers import UserManager

from drivers.opcua.pki import Pki, create_client_certificate

NAMESPACE = "urn:mine-agent:test-plc"
SERVER_URI = "urn:mine-agent:test-server"
USERNAME = "operator"
PASSWORD = "s3cret-hoist"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Users(UserManager):
    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if username is not None:
            return User(role=UserRole.User) if (username, password) == (USERNAME, PASSWORD) else None
        return User(role=UserRole.User)


class RequestLog:
    """Sizes of the limited requests the server received, per service."""

    def __init__(self) -> None:
        self.read: list[int] = []
        self.monitored_items: list[int] = []
        self.translate: list[int] = []


_limit = 0
_log: RequestLog | None = None
_originals: dict[str, Callable[..., Awaitable[Any]]] = {}


def _enforcing(name: str, size_of: Callable[[Any], int], bucket: str) -> Callable[..., Awaitable[Any]]:
    original = _originals[name]

    async def call(self: InternalSession, params: Any) -> Any:
        size = size_of(params)
        if _log is not None:
            getattr(_log, bucket).append(size)
        if _limit and size > _limit:
            raise ua.uaerrors.BadTooManyOperations
        return await original(self, params)

    return call


def enforce_limits(limit: int, log: RequestLog) -> None:
    """Make every in-process asyncua server of this test session enforce ``limit`` (0 = none)."""
    global _limit, _log
    _limit, _log = limit, log
    if not _originals:
        for name in ("read", "create_monitored_items", "translate_browsepaths_to_nodeids"):
            _originals[name] = getattr(InternalSession, name)
        InternalSession.read = _enforcing("read", lambda p: len(p.NodesToRead), "read")  # type: ignore[method-assign]
        InternalSession.create_monitored_items = _enforcing(  # type: ignore[method-assign]
            "create_monitored_items", lambda p: len(p.ItemsToCreate), "monitored_items"
        )
        InternalSession.translate_browsepaths_to_nodeids = _enforcing(  # type: ignore[method-assign]
            "translate_browsepaths_to_nodeids", len, "translate"
        )


class PlcServer:
    """Variables ``ns=<idx>;s=Plc.v<N>`` (Double) under Objects/Plc, plus a few typed ones."""

    def __init__(self, port: int, pki_dir: Path, *, n_vars: int = 12, limit: int = 0) -> None:
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/plc/"
        self.pki = Pki(pki_dir)
        self.n_vars = n_vars
        self.limit = limit
        self.requests = RequestLog()
        self.server: Server | None = None
        self.ns = 0

    async def start(self) -> None:
        if not self.pki.own_cert.exists():
            create_client_certificate(self.pki, SERVER_URI, hostname="127.0.0.1")
        server = Server(user_manager=_Users())
        await server.init()
        server.set_endpoint(self.url)
        await server.set_application_uri(SERVER_URI)
        await server.load_certificate(str(self.pki.own_cert))
        await server.load_private_key(str(self.pki.own_key))
        server.set_identity_tokens(
            [ua.AnonymousIdentityToken, ua.UserNameIdentityToken, ua.X509IdentityToken]
        )
        self.ns = await server.register_namespace(NAMESPACE)
        plc = await server.nodes.objects.add_object(
            ua.NodeId("Plc", self.ns), ua.QualifiedName("Plc", self.ns)
        )
        for i in range(self.n_vars):
            await plc.add_variable(
                ua.NodeId(f"Plc.v{i}", self.ns), ua.QualifiedName(f"v{i}", self.ns), float(i)
            )
        await plc.add_variable(
            ua.NodeId(1001, self.ns), ua.QualifiedName("count", self.ns), 7, ua.VariantType.Int32
        )
        await plc.add_variable(ua.NodeId("Plc.running", self.ns), ua.QualifiedName("running", self.ns), True)
        await plc.add_variable(ua.NodeId("Plc.mode", self.ns), ua.QualifiedName("mode", self.ns), "auto")
        for node in (
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
            ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerTranslateBrowsePathsToNodeIds,
        ):
            await server.write_attribute_value(
                ua.NodeId(node), ua.DataValue(ua.Variant(self.limit, ua.VariantType.UInt32))
            )
        enforce_limits(self.limit, self.requests)
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    def node(self, name: str) -> ua.NodeId:
        return ua.NodeId(f"Plc.{name}", self.ns)

    async def write(
        self, name: str, value: Any, *, status: int = 0, source: dt.datetime | None = None
    ) -> None:
        """Set a variable as a device would: value, status code and source timestamp."""
        assert self.server is not None
        variant = ua.Variant(value, ua.VariantType.Double) if isinstance(value, float) else ua.Variant(value)
        dv = ua.DataValue(
            variant,
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=source or dt.datetime.now(dt.UTC),
            ServerTimestamp=dt.datetime.now(dt.UTC),
        )
        await self.server.write_attribute_value(self.node(name), dv)


async def wait_for(predicate: Callable[[], bool], deadline_s: float = 20.0) -> None:
    """Wait until ``predicate()`` holds; a generous deadline because the machine is shared.

    Polling is deliberate: the predicates look at what a driver handed its sink, which has no event.
    """
    async with asyncio.timeout(deadline_s):
        while not predicate():  # noqa: ASYNC110 - see docstring
            await asyncio.sleep(0.02)


class FreezingProxy:
    """A TCP proxy on loopback that can go silent without closing anything, like a cut radio link.

    While frozen it forwards nothing and accepts no new connections' data, but keeps every socket
    open: only a keep-alive probe can tell the link is dead. ``thaw()`` forwards again for new
    connections; connections from before the freeze stay dead (their bytes are gone).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
        self._epoch = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def freeze(self) -> None:
        self.frozen = True
        self._epoch += 1

    def thaw(self) -> None:
        self.frozen = False

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self._writers:
            w.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        epoch = self._epoch
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if self.frozen or epoch != self._epoch:
                    continue  # the link is cut: bytes vanish, nobody is told
                dst.write(data)
                await dst.drain()

        with contextlib.suppress(OSError):
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
