"""The MQTT uplink: moves signed batches from the buffer to the broker; deletes each only once delivered.

Why it is built this way (MQTT 3.1.1 §4.3.2 QoS 1; aiomqtt 2.5 / paho 2.2, see library-notes §3):

* ``publish(qos=1)`` returns only after the broker's PUBACK. In ``ack_mode = "backend"`` (the default) the batch
  is then remembered, with its hash, until the archive's signed acknowledgement arrives on ``<prefix>/<gw>/ack``
  (docs/protocol.md §7), which survives a broker that loses what it acknowledged; in ``ack_mode = "broker"``
  the PUBACK deletes it, and a broker that then loses it loses it for good.
* The ack topic is open to whoever may publish there, so an ack deletes nothing unless
  :func:`agent.protocol.acks.open_ack` verifies it with a key of ``archive_keys_file`` for this gateway, and
  then only runs whose last batch is one the uplink holds (published, in flight) with the hash the ack
  names: a replayed ack after the gateway lost its state, or another gateway's, matches nothing. Anything
  else is counted (``bad_backend_acks`` malformed, ``unverified_acks`` not the archive's word about these
  batches), logged at most once a minute per kind, and ignored. Rejected: trusting the broker's ACL to keep
  strangers off the ack topic (one misconfigured ACL, or one compromised client, empties every buffer).
* A publish error or a missing PUBACK means *unknown*, never *delivered*. The batch stays in the buffer, the
  connection is torn down, and the aiomqtt/paho ``Client`` object is dropped: paho keeps unacknowledged
  messages in an unbounded in-memory queue and resends them on reconnect of the same object, which would
  duplicate the buffer's job and grow without bound during a long outage. A fresh client connects after a
  capped, jittered backoff and the batches are read from the buffer again; the receiver dedups by
  (gw, seq). The rejected alternative, treating "no PUBACK within a second" as delivered, is how a gateway
  loses everything it sends into a silently dead link.
* A dead link with no TCP reset is noticed by the first of: a publish without PUBACK within
  ``publish_timeout_s``, or paho's keepalive (PINGREQ after ``keepalive_s`` without traffic, connection
  dropped when no reply comes within another ``keepalive_s``), which covers the idle case.
* Several publishes are in flight at once (``max_inflight``, also paho's inflight limit, so paho never
  queues): over a 30-80 ms 5G round trip a single outstanding publish would cap the link at ~20 batches/s.
* Persistent session (``clean_session=False``, fixed client id) so backend acks published while the gateway
  was away are delivered when it returns. Status topic: a retained ``online`` after every connect; the last
  will, also retained, says ``offline``; a clean shutdown publishes ``offline`` itself. Every status also says
  whether the gateway is getting its batches stored and out (``publishing``) and if not, why (``reason``):
  the buffer's condition (``disk_full``, ``buffer_full``, ``dropping``, ``store_error``), ``link`` in the
  last will, ``stopped`` after a clean shutdown, and the seq of the tag catalogue in force (``cat``). While
  connected the buffer's condition and the catalogue are checked every second and a new retained status is
  published when either changes, so "online" never hides a gateway that stores nothing.

Lanes (the replay order after an outage). Every free publish slot is filled by, in order:

1. **urgent**: ``alarm``, ``gap`` and ``catalog`` batches, oldest first. They are few and a regulator reads them first.
2. **live** and **backlog** share the rest: live takes ``data`` batches newest first, backlog takes whatever
   is oldest. While both have candidates, a credit counter gives the backlog ``backlog_share`` of the slots
   (0.5 alternates). So fresh readings stay fresh while a day of backlog drains behind them, and the
   backlog still makes steady progress. With an empty backlog both lanes pick the same newest batch.

Memory does not grow with the backlog: every selection is a ``peek`` bounded by the free slots that
excludes the seqs already in hand; only in-flight frames are held. Batches therefore reach the broker out of
seq order after an outage (and as duplicates after a resend): receivers verify the hash chain by seq, not by
arrival order.
"""

from __future__ import annotations

__all__ = ["LANES", "MqttUplink", "UplinkStats", "broker_settings", "load_archive_keys"]

import asyncio
import bisect
import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt
import structlog

from agent.core.backoff import Backoff
from agent.core.cancellation import TaskGroup, cancellable, timeout
from agent.core.clock import Clock, SystemClock
from agent.core.errors import AgentError, ConfigError, ConfigProblem, SignatureError, UplinkError, WireFormatError
from agent.core.errors import BufferStoreError as AgentBufferError
from agent.protocol import acks
from agent.protocol.mqtt import BrokerSettings, LastWill, TlsFiles, create_client, drop_client
from agent.protocol.signing import TrustStore

if TYPE_CHECKING:
    from buffer import AsyncDiskQueue, QueuedBatch
    from config.schema import MqttConfig

log = structlog.get_logger(__name__)

LANES = ("urgent", "live", "backlog")
URGENT_KINDS = ("alarm", "gap", "catalog")
LIVE_KINDS = ("data",)
# A buffer call that takes this long means the store is wedged, not slow: log it and try again.
BUFFER_TIMEOUT_S = 30.0
# How long a clean shutdown may spend saying "offline" and disconnecting.
SHUTDOWN_TIMEOUT_S = 3.0
# Idle re-check interval: covers an append that races with the wait for new data.
IDLE_POLL_S = 1.0
# A session that delivered something, or stayed up this long, resets the reconnect backoff. A link that
# accepts the connection and then fails at once keeps backing off instead of being hammered.
STABLE_SESSION_S = 10.0
# Refused acks are logged at most this often per kind (malformed, unverified), with the count since the last.
ACK_REFUSAL_LOG_S = 60.0


@dataclass(slots=True)
class UplinkStats:
    """Counters for metrics and the status page. ``published`` counts PUBACKs; ``acked`` counts batches
    deleted from the buffer after delivery (PUBACK in broker mode, the archive's signed ack in backend mode).
    ``bad_backend_acks`` counts malformed messages on the ack topic; ``unverified_acks`` well-formed ones that
    are not the archive's word about this gateway's batches (unknown key, bad signature, another gateway, a
    hash that is not the one of the batch held at that seq)."""

    connected: bool = False
    published: int = 0
    acked: int = 0
    publish_timeouts: int = 0
    publish_errors: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    inflight: int = 0
    awaiting_backend_ack: int = 0
    backend_ack_timeouts: int = 0
    bad_backend_acks: int = 0
    unverified_acks: int = 0
    outages: int = 0
    last_outage_s: float | None = None
    last_error: str | None = None
    by_lane: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LANES, 0))


class _LinkFailed(UplinkError):
    """The current connection is unusable; the session ends and the connection loop reconnects."""

    def __init__(self, message: str, *, hint: str | None = None, seq: int | None = None) -> None:
        super().__init__(message, hint=hint, recoverable=True)
        self.seq = seq


class MqttUplink:
    """Publishes the buffer's batches with QoS 1 and deletes each only after delivery is confirmed.

    ``run()`` runs until cancelled; it never returns or raises on broker trouble (that is an outage, logged
    once, retried with backoff), nor on anything published on its ack topic. Construct it with the loaded
    :class:`config.schema.MqttConfig`; in backend mode ``archive_keys`` are the archive's public keys
    (:func:`load_archive_keys`, read from ``archive_keys_file`` when not given). ``catalogue`` returns the seq
    of the tag catalogue in force (the batcher's ``cat``), which every status carries; it is called, not
    pushed, so the uplink needs nothing of the batcher but this number (default: always 0).
    """

    def __init__(
        self,
        config: MqttConfig,
        gateway_id: str,
        queue: AsyncDiskQueue,
        *,
        clock: Clock | None = None,
        archive_keys: TrustStore | None = None,
        catalogue: Callable[[], int] | None = None,
    ) -> None:
        self._config = config
        self._catalogue = catalogue or _no_catalogue
        self._gw = gateway_id
        self._queue = queue
        self._clock: Clock = clock or SystemClock()
        base = f"{config.topic_prefix}/{gateway_id}"
        self.status_topic = f"{base}/status"
        self.ack_topic = f"{base}/ack"
        self._batch_topic = f"{base}/batch"
        self.client_id = config.client_id or f"mine-agent-{gateway_id}"
        self.broker = f"{config.host}:{config.port}"
        self._settings = broker_settings(config, self.client_id, max_inflight=config.max_inflight)
        self.stats = UplinkStats()
        self._log = log.bind(gateway=gateway_id, broker=self.broker)
        self._backoff = Backoff(0.5, max(0.5, config.reconnect_max_s))
        self._backend_mode = config.ack_mode == "backend"
        self._archive_keys = archive_keys if archive_keys is not None or not self._backend_mode \
            else load_archive_keys(config)
        # seq -> batch hash of the batches being published on the current connection (a batch is in exactly
        # one of these three).
        self._publishing: dict[int, bytes] = {}
        # seqs delivered, waiting for the buffer delete (kept across sessions: their delivery is settled).
        self._to_delete: set[int] = set()
        # backend mode: seq -> (monotonic time of its PUBACK, batch hash), in PUBACK order.
        self._awaiting: dict[int, tuple[float, bytes]] = {}
        self._backend_acked_in_flight: set[int] = set()
        self._wakeup = asyncio.Event()
        self._delete_wanted = asyncio.Event()
        self._backlog_credit = 0.0
        self._ever_connected = False
        self._outage_started: float | None = None
        self._dropped_in_flight = 0
        # The buffer condition and catalogue seq the last "online" status carried.
        self._announced: tuple[str | None, int] = (None, 0)
        # kind of refused ack -> (monotonic time of its last log line, refusals since that line)
        self._ack_refusals: dict[str, tuple[float, int]] = {}

    def use_archive_keys(self, keys: TrustStore) -> None:
        """Verify acks with ``keys`` from now on (a reload that re-read ``archive_keys_file``)."""
        self._archive_keys = keys

    def topic_for(self, kind: str) -> str:
        """The topic a batch of ``kind`` is published on: ``<prefix>/<gw>/batch/<kind>``."""
        return f"{self._batch_topic}/{kind}"

    # ----------------------------------------------------------------------------------------------- run

    async def run(self) -> None:
        """Deliver batches until cancelled. Deletions already earned are flushed on the way out."""
        try:
            async with TaskGroup() as tg:
                tg.create_task(self._delete_loop(), name=f"uplink[{self._gw}].delete")
                tg.create_task(self._connection_loop(), name=f"uplink[{self._gw}].connect")
        finally:
            self.stats.connected = False
            if self._to_delete:
                # Best effort: what is not deleted now is deleted as a duplicate ack later. Only errors and our
                # own deadline are absorbed; a cancellation from outside still ends the uplink.
                with contextlib.suppress(Exception):
                    async with timeout(SHUTDOWN_TIMEOUT_S):
                        await self._flush_deletes()

    async def _connection_loop(self) -> None:
        while True:
            started = self._clock.monotonic()
            delivered_before = self.stats.published
            try:
                await self._session()
            except _LinkFailed as exc:
                self._link_down(exc)
            self._dropped_in_flight = 0
            stable = (
                self.stats.published > delivered_before
                or self._clock.monotonic() - started >= STABLE_SESSION_S
            )
            if stable:
                self._backoff.reset()
            await self._clock.sleep(self._backoff.next())

    def _link_down(self, exc: _LinkFailed) -> None:
        """Count a failure; only the first of an outage is a warning."""
        self.stats.connected = False
        self.stats.last_error = str(exc)
        if self._outage_started is None:
            self._outage_started = self._clock.monotonic()
            self.stats.outages += 1
            # in_flight: sent on the failed connection without PUBACK; they stay buffered and go again.
            extra = {} if exc.seq is None else {"seq": exc.seq}
            self._log.warning("uplink_down", error=str(exc), in_flight=self._dropped_in_flight, **extra)
        else:
            self._log.debug("uplink_retry_failed", error=str(exc))

    def _link_up(self) -> None:
        self.stats.connected = True
        if self._ever_connected:
            self.stats.reconnects += 1
        if self._outage_started is not None:
            lasted = self._clock.monotonic() - self._outage_started
            self.stats.last_outage_s = lasted
            self._outage_started = None
            self._log.info("uplink_restored", outage_s=round(lasted, 3), client_id=self.client_id)
        elif not self._ever_connected:
            self._log.info("uplink_connected", client_id=self.client_id)
        self._ever_connected = True

    # ------------------------------------------------------------------------------------------- session

    async def _session(self) -> None:
        """One connection: connect, announce, then publish until something fails or we are cancelled."""
        client = await self._connect()
        graceful = False
        try:
            self._link_up()
            try:
                async with TaskGroup() as tg:
                    tg.create_task(self._watch_link(client), name=f"uplink[{self._gw}].watch")
                    tg.create_task(self._watch_data(), name=f"uplink[{self._gw}].data")
                    tg.create_task(self._watch_status(client), name=f"uplink[{self._gw}].status")
                    tg.create_task(self._pump(client, tg), name=f"uplink[{self._gw}].pump")
            except BaseExceptionGroup as group:
                raise _first_link_failure(group) from None
        except asyncio.CancelledError:
            graceful = True
            raise
        finally:
            self._dropped_in_flight = len(self._publishing)
            self._publishing.clear()
            self._backend_acked_in_flight.clear()
            self.stats.inflight = 0
            self.stats.connected = False
            if graceful:
                await self._say_goodbye(client)
            drop_client(client)

    async def _connect(self) -> aiomqtt.Client:
        cfg = self._config
        try:
            # The password file and TLS files are read again at every connect (a rotated one is picked up);
            # this timeout is a backstop for a read that hangs (a stalled network file system).
            async with timeout(cfg.connect_timeout_s + 5.0):
                client = await create_client(self._settings, will=LastWill(
                    self.status_topic, _status("offline", self._clock, publishing=False, reason="link",
                                               cat=self._catalogue())))
        except (AgentError, OSError, ValueError) as exc:
            self.stats.connect_failures += 1
            raise _LinkFailed(f"cannot prepare the connection: {exc}",
                              hint="check mqtt.tls and mqtt.password_file") from exc
        try:
            # aiomqtt bounds the TCP/TLS connect and the CONNACK wait by connect_timeout_s; this outer
            # timeout is only a backstop for an executor thread that hangs.
            async with timeout(cfg.connect_timeout_s * 2 + 5.0):
                await cancellable(client.__aenter__())
                if self._backend_mode:
                    await client.subscribe(self.ack_topic, qos=1, timeout=cfg.publish_timeout_s)
                self._announced = (self._queue.condition, self._catalogue())
                await client.publish(self.status_topic, self._online_status(*self._announced), qos=1,
                                     retain=True, timeout=cfg.publish_timeout_s)
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            drop_client(client)
            self.stats.connect_failures += 1
            raise _LinkFailed(f"cannot connect to {self.broker}: {_describe(exc)}",
                              hint=_connect_hint(exc)) from exc
        except BaseException:
            drop_client(client)
            raise
        return client

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        """On shutdown: retained "offline" and a clean DISCONNECT (which also stops the will)."""
        with contextlib.suppress(Exception):
            async with timeout(SHUTDOWN_TIMEOUT_S):
                await client.publish(self.status_topic,
                                     _status("offline", self._clock, publishing=False, reason="stopped",
                                             cat=self._catalogue()),
                                     qos=1, retain=True, timeout=SHUTDOWN_TIMEOUT_S)
                await client.__aexit__(None, None, None)

    async def _watch_link(self, client: aiomqtt.Client) -> None:
        """Ends the session when paho reports the connection lost (TCP error, keepalive expiry); in backend
        mode it also takes the backend's acks."""
        try:
            async for message in client.messages:
                if self._backend_mode and message.topic.matches(self.ack_topic):
                    self._on_backend_ack(message.payload)
        except aiomqtt.MqttError as exc:
            raise _LinkFailed(f"connection to {self.broker} lost: {_describe(exc)}") from exc
        raise _LinkFailed(f"connection to {self.broker} closed")

    def _online_status(self, condition: str | None, cat: int) -> bytes:
        return _status("online", self._clock, publishing=condition is None, reason=condition, cat=cat)

    async def _watch_status(self, client: aiomqtt.Client) -> None:
        """Publishes a new retained status when the buffer's condition changes (disk full, buffer full, data
        being dropped, and back) or a new tag catalogue comes in force, so the backend learns it without
        waiting for a reconnect."""
        while True:
            await self._clock.sleep(IDLE_POLL_S)
            now = (self._queue.condition, self._catalogue())
            if now == self._announced:
                continue
            try:
                await client.publish(self.status_topic, self._online_status(*now), qos=1, retain=True,
                                     timeout=self._config.publish_timeout_s)
            except aiomqtt.MqttError as exc:
                raise _LinkFailed(f"status publish failed: {_describe(exc)}") from exc
            self._log.info("uplink_status_changed", publishing=now[0] is None, reason=now[0], cat=now[1],
                           previous=self._announced[0])
            self._announced = now

    async def _watch_data(self) -> None:
        """Wakes the pump when the batcher appends, so an idle uplink does not poll."""
        while True:
            try:
                async with timeout(BUFFER_TIMEOUT_S):
                    appended = await self._queue.wait_for_data(IDLE_POLL_S * 5)
            except (AgentBufferError, TimeoutError) as exc:
                self._log.warning("uplink_buffer_wait_failed", error=_describe(exc))
                await self._clock.sleep(IDLE_POLL_S)
                continue
            if appended:
                self._wakeup.set()

    # -------------------------------------------------------------------------------------------- pump

    async def _pump(self, client: aiomqtt.Client, tg: TaskGroup) -> None:
        """Keeps the publish window full from the lanes; sleeps when there is nothing to send."""
        cfg = self._config
        buffer_trouble = False
        while True:
            self._wakeup.clear()
            next_expiry = self._expire_backend_waits()
            free = cfg.max_inflight - len(self._publishing)
            if self._backend_mode:
                free = min(free, cfg.max_unacked - len(self._publishing) - len(self._awaiting))
            if free > 0:
                try:
                    async with timeout(BUFFER_TIMEOUT_S):
                        chosen = await self._select(free)
                except (AgentBufferError, TimeoutError) as exc:
                    if not buffer_trouble:
                        self._log.warning("uplink_buffer_read_failed", error=_describe(exc))
                    buffer_trouble = True
                    await self._clock.sleep(IDLE_POLL_S)
                    continue
                buffer_trouble = False
                for batch, lane in chosen:
                    self._publishing[batch.seq] = batch.hash
                    tg.create_task(self._publish(client, batch, lane),
                                   name=f"uplink[{self._gw}].publish[{batch.seq}]")
                self.stats.inflight = len(self._publishing)
            wait = IDLE_POLL_S if next_expiry is None else max(0.0, min(IDLE_POLL_S, next_expiry))
            with contextlib.suppress(TimeoutError):
                async with timeout(wait):
                    await self._wakeup.wait()

    async def _select(self, free: int) -> list[tuple[QueuedBatch, str]]:
        """Up to ``free`` batches not in hand: urgent ones first, then live and backlog by their shares."""
        held = self._held()
        urgent = await self._queue.peek(free, kinds=URGENT_KINDS, exclude=held)
        chosen: list[tuple[QueuedBatch, str]] = [(b, "urgent") for b in urgent]
        room = free - len(urgent)
        if room <= 0:
            return chosen
        held |= {b.seq for b in urgent}
        newest = await self._queue.peek(room, kinds=LIVE_KINDS, newest_first=True, exclude=held)
        oldest = await self._queue.peek(room, exclude=held)
        taken: set[int] = set()
        live_i = backlog_i = 0
        share = self._config.backlog_share
        while room > 0:
            while live_i < len(newest) and newest[live_i].seq in taken:
                live_i += 1
            while backlog_i < len(oldest) and oldest[backlog_i].seq in taken:
                backlog_i += 1
            live_left, backlog_left = live_i < len(newest), backlog_i < len(oldest)
            if not live_left and not backlog_left:
                break
            use_backlog = not live_left
            if live_left and backlog_left and newest[live_i].seq != oldest[backlog_i].seq:
                self._backlog_credit += share
                if self._backlog_credit >= 1.0:
                    self._backlog_credit -= 1.0
                    use_backlog = True
            if use_backlog:
                batch, lane = oldest[backlog_i], "backlog"
            else:
                batch, lane = newest[live_i], "live"
            taken.add(batch.seq)
            chosen.append((batch, lane))
            room -= 1
        return chosen

    def _held(self) -> set[int]:
        """Seqs that must not be selected again: being published, delivered, or awaiting the backend."""
        return self._publishing.keys() | self._to_delete | self._awaiting.keys()

    async def _publish(self, client: aiomqtt.Client, batch: QueuedBatch, lane: str) -> None:
        """One QoS 1 publish. Returns only after PUBACK; any other outcome ends the session, the batch stays
        in the buffer and is sent again on the next connection."""
        limit_s = self._config.publish_timeout_s
        try:
            async with timeout(limit_s):
                await cancellable(client.publish(self.topic_for(batch.kind), batch.frame, qos=1, timeout=math.inf))
        except TimeoutError as exc:
            self.stats.publish_timeouts += 1
            raise _LinkFailed(f"no PUBACK for seq {batch.seq} within {limit_s:g} s", seq=batch.seq,
                              hint="the link or the broker is stalled; raise mqtt.publish_timeout_s "
                                   "only if the link is known to be that slow") from exc
        except aiomqtt.MqttError as exc:
            self.stats.publish_errors += 1
            raise _LinkFailed(f"publish of seq {batch.seq} failed: {_describe(exc)}", seq=batch.seq) from exc
        finally:
            self._publishing.pop(batch.seq, None)
            self.stats.inflight = len(self._publishing)
        self.stats.published += 1
        self.stats.by_lane[lane] += 1
        if not self._backend_mode or batch.seq in self._backend_acked_in_flight:
            self._backend_acked_in_flight.discard(batch.seq)
            self._delete(batch.seq)
        else:
            self._awaiting[batch.seq] = (self._clock.monotonic(), batch.hash)
            self.stats.awaiting_backend_ack = len(self._awaiting)
        self._wakeup.set()

    # ---------------------------------------------------------------------------------- backend acks

    def _on_backend_ack(self, payload: Any) -> None:
        """Apply one message of the ack topic if it is the archive's verified word about batches held here;
        count and ignore it otherwise. Never raises: whatever arrives there must not stop the uplink."""
        keys = self._archive_keys
        assert keys is not None  # backend mode
        try:
            ack = acks.open_ack(payload, keys, gateway=self._gw)
        except SignatureError as exc:
            self.stats.unverified_acks += 1
            self._ack_refused("unverified", exc.message)
            return
        except WireFormatError as exc:
            self.stats.bad_backend_acks += 1
            self._ack_refused("malformed", exc.message)
            return
        except Exception as exc:  # open_ack raises only the two above; even a bug in it must not stop us
            self.stats.bad_backend_acks += 1
            self._ack_refused("malformed", f"unexpected {type(exc).__name__} while reading the ack")
            return
        accepted: list[tuple[int, int]] = []
        mismatch: int | None = None
        for run in ack.ranges:
            held = self._held_hash(run.last)
            if held is None:
                # Not in hand (deleted already, or back in the buffer after a timeout or a restart): there is
                # nothing to check the hash against, so nothing is deleted; the batch is sent and acked again.
                continue
            if held != run.last_hash:
                mismatch = run.last
                continue
            accepted.append((run.first, run.last))
        if mismatch is not None:
            self.stats.unverified_acks += 1
            self._ack_refused("unverified", f"ack names another batch than the one held at seq {mismatch}")
        if not accepted:
            return
        covered = _RangeSet(accepted)
        for seq in [s for s in self._awaiting if s in covered]:
            del self._awaiting[seq]
            self._delete(seq)
        for seq in self._publishing:
            if seq in covered:
                self._backend_acked_in_flight.add(seq)
        self.stats.awaiting_backend_ack = len(self._awaiting)
        self._wakeup.set()

    def _held_hash(self, seq: int) -> bytes | None:
        """The hash of the batch at ``seq`` if it is awaiting the archive's ack or being published."""
        awaiting = self._awaiting.get(seq)
        if awaiting is not None:
            return awaiting[1]
        return self._publishing.get(seq)

    def _ack_refused(self, kind: str, error: str) -> None:
        """One warning per kind per ACK_REFUSAL_LOG_S at most, carrying how many were refused since the last:
        whoever floods the ack topic must not flood the journal too."""
        now = self._clock.monotonic()
        logged_at, count = self._ack_refusals.get(kind, (None, 0))
        count += 1
        if logged_at is not None and now - logged_at < ACK_REFUSAL_LOG_S:
            self._ack_refusals[kind] = (logged_at, count)
            return
        self._ack_refusals[kind] = (now, 0)
        self._log.warning("uplink_ack_refused", kind=kind, error=error, count=count, topic=self.ack_topic)

    def _expire_backend_waits(self) -> float | None:
        """Release batches whose backend ack is overdue so the lanes send them again. Returns the seconds
        until the next one is due, or None."""
        if not self._awaiting:
            return None
        now = self._clock.monotonic()
        limit = self._config.ack_timeout_s
        expired: list[int] = []
        next_due: float | None = None
        for seq, (at, _) in self._awaiting.items():  # in PUBACK order: stop at the first that is not due
            if now - at >= limit:
                expired.append(seq)
            else:
                next_due = at + limit - now
                break
        for seq in expired:
            del self._awaiting[seq]
        if expired:
            self.stats.backend_ack_timeouts += len(expired)
            self._log.info("uplink_backend_ack_overdue", batches=len(expired), first_seq=expired[0],
                           resend=True)
        self.stats.awaiting_backend_ack = len(self._awaiting)
        return next_due

    # ------------------------------------------------------------------------------------------ delete

    def _delete(self, seq: int) -> None:
        self._to_delete.add(seq)
        self._delete_wanted.set()

    async def _delete_loop(self) -> None:
        """Deletes delivered batches from the buffer, many per transaction (one fsync per group, not per
        batch). Independent of the connection: deliveries earned before an outage are still deleted."""
        failing = False
        while True:
            await self._delete_wanted.wait()
            self._delete_wanted.clear()
            try:
                async with timeout(BUFFER_TIMEOUT_S):
                    await self._flush_deletes()
            except (AgentBufferError, TimeoutError) as exc:
                if not failing:
                    self._log.warning("uplink_buffer_delete_failed", error=_describe(exc),
                                      pending=len(self._to_delete))
                failing = True
                self._delete_wanted.set()
                await self._clock.sleep(IDLE_POLL_S)
                continue
            failing = False

    async def _flush_deletes(self) -> None:
        seqs = sorted(self._to_delete)
        if not seqs:
            return
        # If this is interrupted the seqs stay in _to_delete (and out of the lanes) and are deleted again
        # later; deleting twice is harmless.
        deleted = await self._queue.ack(seqs)
        self._to_delete.difference_update(seqs)
        self.stats.acked += deleted


# ------------------------------------------------------------------------------------------------ helpers


def load_archive_keys(config: MqttConfig) -> TrustStore | None:
    """The archive's public keys from ``archive_keys_file`` (backend mode), or None in broker mode.

    Raises :class:`ConfigError` naming ``mqtt.archive_keys_file`` when the file cannot be read, has a bad line
    or lists no key: an uplink that could never verify an ack would never delete anything.
    """
    if config.ack_mode != "backend":
        return None
    path = config.archive_keys_file
    if path is None:  # the schema refuses this; kept for a config built around it
        raise ConfigError([ConfigProblem("<config>", None, "mqtt.archive_keys_file",
                                         "required with ack_mode = \"backend\"")])
    hint = "put the line printed by 'mine-backend keys archive-public' on the backend into it"
    try:
        keys = TrustStore.from_file(Path(path))
    except AgentError as exc:
        raise ConfigError([ConfigProblem(str(path), exc.line, "mqtt.archive_keys_file",
                                         f"{exc.message} ({hint})")]) from exc
    if len(keys) == 0:
        raise ConfigError([ConfigProblem(str(path), None, "mqtt.archive_keys_file",
                                         f"lists no key, so no ack could ever delete a batch ({hint})")])
    return keys


def _status(state: str, clock: Clock, *, publishing: bool, reason: str | None, cat: int) -> bytes:
    """The retained status document (docs/protocol.md §2): ``publishing`` false with a ``reason`` whenever the
    gateway is not getting its batches stored and out; ``cat`` the seq of the tag catalogue in force."""
    return json.dumps({"state": state, "ts": int(clock.time() * 1000), "publishing": publishing, "reason": reason,
                       "cat": cat}, separators=(",", ":")).encode()


def _no_catalogue() -> int:
    return 0


class _RangeSet:
    """Membership in a union of inclusive seq ranges in O(log n): a backend may ack a long, fragmented
    history in every message."""

    def __init__(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for a, b in sorted(ranges):
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self._starts = [a for a, _ in merged]
        self._ends = [b for _, b in merged]

    def __contains__(self, seq: object) -> bool:
        if not isinstance(seq, int):
            return False
        i = bisect.bisect_right(self._starts, seq) - 1
        return i >= 0 and seq <= self._ends[i]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text or type(exc).__name__


def _connect_hint(exc: BaseException) -> str | None:
    if isinstance(exc, aiomqtt.MqttError):
        text = str(exc).lower()
        if "not authori" in text or "bad user" in text or "password" in text:
            return "check mqtt.username and mqtt.password/password_file, and the broker's ACL for this client"
        if "certificate" in text or "ssl" in text:
            return "check mqtt.tls.ca_file (the broker's CA) and the client certificate"
        if "refused" in text:
            return "is the broker running and mqtt.host/mqtt.port right?"
    return None


def _first_link_failure(group: BaseExceptionGroup[Any]) -> BaseException:
    """The exception a failed session TaskGroup should surface: our link failure if there is one, otherwise
    the first unexpected error (a bug, which must not be hidden)."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[Any]) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                walk(e)
            else:
                leaves.append(e)

    walk(group)
    for e in leaves:
        if isinstance(e, _LinkFailed):
            return e
    return leaves[0] if leaves else group


def broker_settings(mqtt: MqttConfig, client_id: str, *, max_inflight: int | None = None) -> BrokerSettings:
    """The connection settings of ``[mqtt]`` for a client named ``client_id``: a persistent session, so
    messages published while the gateway was away are delivered when it returns. Shared by the uplink and the
    remote configuration channel, which connect to the same broker with the same settings."""
    tls = mqtt.tls
    return BrokerSettings(
        host=mqtt.host,
        port=mqtt.port,
        username=mqtt.username,
        password=mqtt.password.get_secret_value() if mqtt.password is not None else None,
        password_file=mqtt.password_file,
        tls=TlsFiles(ca=tls.ca_file, cert=tls.cert_file, key=tls.key_file) if tls is not None else None,
        client_id=client_id,
        clean_session=False,
        keepalive_s=mqtt.keepalive_s,
        connect_timeout_s=mqtt.connect_timeout_s,
        max_inflight=max_inflight,
    )
