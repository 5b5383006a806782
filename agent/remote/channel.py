"""The MQTT side of remote configuration: receives pushes on ``<prefix>/<gw>/config`` and publishes outcomes on
``<prefix>/<gw>/config/status`` (docs/protocol.md §10).

It is a connection of its own (client id ``<uplink client id>-config``), not the uplink's: the uplink is
restarted by a configuration change, and the outcome of a change that broke the uplink must still get out.
The channel follows the *running* ``[mqtt]`` settings: when a change (or its rollback) alters them, the
session ends and the next connects with the settings now in force. So a push that breaks MQTT reports
"received" on the old connection, cannot connect with the new settings, is rolled back by the health window,
and its "rolled_back" goes out once the old settings connect again.

Statuses wait in a bounded in-memory queue while the channel is down and are published with QoS 1, retained
(the last outcome stays readable on the broker), oldest first, each signed with the gateway key
(agent.protocol.config_status) so that the operator tool can tell them from forgeries. Pushes are handed to
one worker that runs outside the MQTT session, so ending a session never cancels a change half-way.

Unauthenticated traffic cannot starve a genuine push: a payload takes one of the queue's slots only once its
signature has verified (:meth:`ConfigService.screen`), the same push bytes take at most one slot however often
they are redelivered, and when the status queue is full it sheds repeats and unauthenticated refusals (which the
service already rate-limits) before any genuine outcome. Rejected: a larger queue, which a flood fills too.
"""

from __future__ import annotations

__all__ = ["RemoteChannel"]

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
import structlog

from agent.core.backoff import Backoff
from agent.core.cancellation import TaskGroup, cancellable, timeout
from agent.core.errors import AgentError
from agent.protocol.config_status import sign_status
from agent.protocol.mqtt import create_client, drop_client
from agent.protocol.push import push_id
from agent.protocol.signing import BatchSigner
from agent.uplink import broker_settings
from config.schema import AgentConfig, MqttConfig

log = structlog.get_logger(__name__)

_MAX_QUEUED_STATUSES = 100
_MAX_QUEUED_PUSHES = 8


@dataclass(eq=False, slots=True)
class _Status:
    status: dict[str, Any]
    droppable: bool


class _SessionEnded(Exception):
    """The current connection is over: lost, or the running [mqtt] settings changed.

    ``graceful`` says the link itself is fine, so it is closed with a DISCONNECT rather than dropped.
    """

    def __init__(self, reason: str, *, graceful: bool = False) -> None:
        super().__init__(reason)
        self.graceful = graceful


class _RunningAgent(Protocol):
    @property
    def config(self) -> AgentConfig: ...


class PushService(Protocol):
    """What the channel needs of the configuration service (``agent.remote.service.ConfigService``): the
    running configuration, a signal when it changes, and somewhere to hand each push. A protocol rather than
    an import, so the service, which starts the channel, is the only one of the two that knows the other."""

    @property
    def agent(self) -> _RunningAgent: ...

    @property
    def config_changed(self) -> asyncio.Event: ...

    @property
    def signer(self) -> BatchSigner | None: ...

    async def handle_push(self, payload: bytes) -> object: ...

    def screen(self, payload: bytes) -> bool: ...

    def refuse_busy(self, payload: bytes) -> None: ...


class RemoteChannel:
    """One MQTT session at a time for the config topics of the running configuration's gateway."""

    def __init__(self, service: PushService) -> None:
        self.service = service
        config = service.agent.config
        self.gateway = config.gateway.id
        base = f"{config.mqtt.topic_prefix}/{self.gateway}"
        self.config_topic = f"{base}/config"
        self.status_topic = f"{base}/config/status"
        self._outbox: deque[_Status] = deque()
        self._outbox_ready = asyncio.Event()
        self._outbox_empty = asyncio.Event()
        self._outbox_empty.set()
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue(_MAX_QUEUED_PUSHES)
        self._waiting: set[str] = set()  # ids of the pushes in the inbox or being handled
        self._backoff = Backoff(0.5, 30.0)
        self._down_since: float | None = None
        self.connected = False

    def post(self, status: dict[str, Any], droppable: bool = False) -> None:
        """Queue a status for publishing. A droppable one (a repeat, an unauthenticated refusal) replaces a
        droppable one of the same push still waiting; when 100 are waiting, the oldest droppable one goes
        first, and only if there is none the oldest of all (logged)."""
        if droppable:
            for queued in self._outbox:
                if queued.droppable and queued.status.get("push") == status.get("push"):
                    self._outbox.remove(queued)
                    break
        if len(self._outbox) >= _MAX_QUEUED_STATUSES:
            victim = next((q for q in self._outbox if q.droppable), self._outbox[0])
            self._outbox.remove(victim)
            if not victim.droppable:
                log.warning("config_status_dropped", error="status queue full", state=victim.status.get("state"))
        self._outbox.append(_Status(status, droppable))
        self._outbox_empty.clear()
        self._outbox_ready.set()

    async def run(self) -> None:
        async with TaskGroup() as tg:
            tg.create_task(self._worker(), name=f"remote_config[{self.gateway}].worker")
            tg.create_task(self._connection_loop(), name=f"remote_config[{self.gateway}].connect")

    async def _worker(self) -> None:
        while True:
            payload = await self._inbox.get()
            try:
                await self.service.handle_push(payload)
            except Exception as exc:
                log.exception("config_push_failed", error=repr(exc))
            finally:
                self._waiting.discard(push_id(payload))

    # -- connection --------------------------------------------------------------------------------------

    async def _connection_loop(self) -> None:
        changed = self.service.config_changed
        while True:
            config = self.service.agent.config
            changed.clear()
            remote = config.remote_config
            if remote is None or not remote.enabled:
                await changed.wait()
                continue
            try:
                await self._session(config)
            except _SessionEnded as exc:
                self._down(str(exc))
            except Exception as exc:  # a bug or an unexpected library error must not end remote configuration
                log.exception("config_channel_failed", error=repr(exc))
                self._down(repr(exc))
            with contextlib.suppress(TimeoutError):
                async with timeout(self._backoff.next()):
                    await changed.wait()

    def _down(self, error: str) -> None:
        self.connected = False
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
            log.warning("config_channel_down", gateway=self.gateway, error=error)

    async def _session(self, config: AgentConfig) -> None:
        mqtt = config.mqtt
        client = await self._connect(mqtt)
        self.connected = True
        self._backoff.reset()
        if self._down_since is not None:
            self._down_since = None
        log.info("config_channel_connected", gateway=self.gateway, broker=f"{mqtt.host}:{mqtt.port}",
                 topic=self.config_topic)
        graceful = False
        try:
            async with TaskGroup() as tg:
                tg.create_task(self._read(client), name=f"remote_config[{self.gateway}].read")
                tg.create_task(self._publish(client, mqtt), name=f"remote_config[{self.gateway}].publish")
                tg.create_task(self._follow(config), name=f"remote_config[{self.gateway}].follow")
        except BaseExceptionGroup as group:
            ended = group.subgroup(_SessionEnded)
            if ended is None:
                raise
            first = ended.exceptions[0]
            graceful = isinstance(first, _SessionEnded) and first.graceful
            raise first from None
        except asyncio.CancelledError:
            graceful = True
            raise
        finally:
            self.connected = False
            await _close(client, graceful=graceful)

    async def _connect(self, mqtt: MqttConfig) -> aiomqtt.Client:
        settings = broker_settings(mqtt, f"{mqtt.client_id or 'mine-agent-' + self.gateway}-config")
        try:
            client = await create_client(settings)
        except (AgentError, OSError, ValueError) as exc:
            raise _SessionEnded(f"cannot prepare the connection: {exc}") from exc
        try:
            async with timeout(mqtt.connect_timeout_s * 2 + 5.0):
                await cancellable(client.__aenter__())
                await client.subscribe(self.config_topic, qos=1, timeout=mqtt.publish_timeout_s)
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            await _close(client, graceful=False)
            raise _SessionEnded(f"cannot connect to {mqtt.host}:{mqtt.port}: {exc or 'timed out'}") from exc
        return client

    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                if not message.topic.matches(self.config_topic):
                    continue
                payload = message.payload
                data = payload.encode() if isinstance(payload, str) else bytes(payload or b"")
                pid = push_id(data)
                if pid in self._waiting or not self.service.screen(data):
                    continue  # already waiting (answered once handled), or refused by the screen
                if self._inbox.full():
                    log.warning("config_push_dropped", error="too many pushes waiting; answered rejected (busy)")
                    self.service.refuse_busy(data)
                    continue
                self._waiting.add(pid)
                self._inbox.put_nowait(data)
        except aiomqtt.MqttError as exc:
            raise _SessionEnded(f"connection lost: {exc}") from exc
        raise _SessionEnded("connection closed")

    async def _publish(self, client: aiomqtt.Client, mqtt: MqttConfig) -> None:
        while True:
            while self._outbox:
                queued = self._outbox[0]
                body = sign_status(self.service.signer, queued.status)
                try:
                    await cancellable(client.publish(self.status_topic, body, qos=1, retain=True,
                                                     timeout=mqtt.publish_timeout_s))
                except aiomqtt.MqttError as exc:
                    raise _SessionEnded(f"status publish failed: {exc}") from exc
                if self._outbox and self._outbox[0] is queued:
                    self._outbox.popleft()
            self._outbox_ready.clear()
            self._outbox_empty.set()
            await self._outbox_ready.wait()

    async def _follow(self, config: AgentConfig) -> None:
        """End the session when a change alters the settings this connection was made with."""
        changed = self.service.config_changed
        while True:
            await changed.wait()
            changed.clear()
            now = self.service.agent.config
            if now.mqtt != config.mqtt or now.remote_config != config.remote_config:
                # Let a status being published finish first (e.g. "received" of the very push that
                # changes the settings), so it is not sent twice.
                with contextlib.suppress(TimeoutError):
                    async with timeout(config.mqtt.publish_timeout_s):
                        await self._outbox_empty.wait()
                raise _SessionEnded("the running [mqtt] or [remote_config] settings changed", graceful=True)


async def _close(client: aiomqtt.Client, *, graceful: bool) -> None:
    """A clean DISCONNECT when the link is fine; otherwise drop the socket at once (a DISCONNECT on a dead
    link would hang), the way the uplink does."""
    if graceful:
        with contextlib.suppress(Exception):
            async with timeout(2.0):
                await client.__aexit__(None, None, None)
                return
    drop_client(client)
