"""The OPC UA driver: subscriptions and polled reads over one session, rebuilt whenever it is lost.

Why our own reconnect loop and not asyncua's ``auto_reconnect``: asyncua 2.1's reconnect is new code,
logs a traceback every second while a server is down, and re-creates subscriptions with the namespace
indexes of the old session. A server restart may renumber namespaces and a server swap may change the
address space, so after any loss we rebuild everything from the config: new client, new session,
namespace array, OperationLimits, node resolution, subscriptions. Rebuilding takes one round trip per
step and outages are rare, so the simplicity is cheap.

What a loss looks like downstream: one BAD sample per tag (reason ``"session lost: <why>"``) when the
loss is noticed and one per failed reconnect attempt (backoff from 0.5 s to ``reconnect_max_s``), so
every aggregation window of the outage shows bad quality. After recovery the server sends each item's
current value; its source timestamp may predate the outage, so the first value per tag after a loss is
stamped no earlier than the loss (it is the value *now*, not a value from the past). One warning per
outage, one info on recovery.

Delivery: asyncua's iterator mode (cheaper than handler mode, which spawns a task per notification).
asyncua explodes one publish response into the queue synchronously, and the consumer drains the queue
without suspending, so a ``call_soon`` flush hands exactly one list per publish burst to the sink. The
queue overflow policy is DISCONNECT with our own hook in place of the disconnect: that is the only
policy asyncua reports per dropped notification, so each drop is counted
(``stats.client_queue_overflows``), never silent. Values the *server* dropped from a full item queue
arrive flagged Overflow and are counted in ``stats.server_queue_overflows``.
"""

from __future__ import annotations

__all__ = ["OpcUaDriver", "OpcUaStats"]

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import structlog
from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription
from asyncua.ua.uaerrors import UaError

from agent.core.backoff import Backoff
from agent.core.cancellation import TaskGroup, cancellable, timeout
from agent.core.clock import Clock
from agent.core.errors import DriverError
from agent.core.sample import Quality, Sample, SampleSink
from drivers import DeviceStats, Driver
from drivers.opcua.config import OpcUaDevice, OpcUaTag, parse_browse_path
from drivers.opcua.plan import OperationLimits, chunks, effective_limit, group_by
from drivers.opcua.reads import read, read_operation_limits
from drivers.opcua.session import RejectingValidator, build_client, describe_error
from drivers.opcua.status import overflowed, quality_of, status_name

log = structlog.get_logger(__name__)

_STABLE_S = 30.0  # a session up this long ends an outage
_MIN_UP_S = 2.0  # a session up this long restarts the reconnect backoff


@dataclass(slots=True)
class OpcUaStats(DeviceStats):
    """DeviceStats plus what only OPC UA has. Plain counters: read them, never reset them."""

    notifications: int = 0
    outages: int = 0
    reconnects: int = 0
    client_queue_overflows: int = 0
    server_queue_overflows: int = 0
    monitored_items: int = 0
    failed_items: int = 0
    read_requests: int = 0
    monitored_item_calls: int = 0
    limits: OperationLimits = field(default_factory=OperationLimits)


class SessionLost(DriverError):
    """The session, channel or subscription stopped working; the driver rebuilds it."""


class OpcUaDriver(Driver):
    """One OPC UA server. ``config`` is an :class:`~drivers.opcua.config.OpcUaDevice`."""

    config: OpcUaDevice

    def __init__(
        self, name: str, config: OpcUaDevice, sink: SampleSink, *, clock: Clock | None = None
    ) -> None:
        super().__init__(name, config, sink, clock=clock)
        self.stats: OpcUaStats = OpcUaStats()
        self._full_names = [f"{name}.{t.name}" for t in config.tags]
        # Per tag: the time of the last bad sample of an outage; the first value after it is not
        # stamped earlier. 0 = no outage pending for this tag.
        self._floor_ms = [0] * len(config.tags)
        self._lost: asyncio.Event = asyncio.Event()
        self._lost_reason = ""
        self._overflow_logged = False

    # --- supervision -------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(0.5, self.config.reconnect_max_s)
        in_outage = False
        while True:
            self._up_since = None
            try:
                await self._session()
            except (OSError, TimeoutError, UaError, DriverError, ConnectionError) as exc:
                error = self._explain(exc)
            up_for = None if self._up_since is None else self.clock.monotonic() - self._up_since
            self.stats.connected = False
            self.stats.errors += 1
            self.stats.last_error = error
            self._mark_all_bad(f"{'session lost' if up_for is not None else 'no session'}: {error}")
            # A session that worked restarts the backoff, so a restarted server is found again within
            # about a second. Only one that held for _STABLE_S ends the outage: a server that keeps
            # dropping sessions (a restart loop, a session limit) is one outage with one warning.
            if up_for is not None and up_for >= _MIN_UP_S:
                backoff.reset()
            if up_for is not None and up_for >= _STABLE_S:
                in_outage = False
            if not in_outage:
                in_outage = True
                self.stats.outages += 1
                event = "opcua_session_lost" if up_for is not None else "opcua_connect_failed"
                log.warning(event, device=self.name, url=self.config.url, error=error)
            else:
                log.debug("opcua_retry_failed", device=self.name, error=error, attempt=backoff.attempt)
            await self.clock.sleep(backoff.next())

    async def _session(self) -> None:
        """Connect, subscribe and read until the session fails; always raises when it ends."""
        self._lost = asyncio.Event()
        self._validator = None
        client, self._validator = await build_client(self.name, self.config)
        client.connection_lost_callback = self._on_connection_lost
        try:
            async with timeout(self.config.timeout_s * 2):
                await cancellable(client.connect())
            try:
                async with timeout(self.config.timeout_s * 4 + len(self.config.tags) * 0.01):
                    limits = await self._read_limits(client)
                    nodes = await self._resolve(client, limits)
                    subs = await self._subscribe(client, limits, nodes)
            except TimeoutError as exc:
                raise SessionLost("timeout while setting up subscriptions", device=self.name) from exc
            self._on_up()
            await self._serve(client, limits, nodes, subs)
        finally:
            await self._close(client)

    def _on_up(self) -> None:
        self._up_since = self.clock.monotonic()
        self.stats.connected = True
        self.stats.last_ok_ms = int(self.clock.time() * 1000)
        if self.stats.outages:
            self.stats.reconnects += 1
            log.info(
                "opcua_session_restored", device=self.name, url=self.config.url, outages=self.stats.outages
            )
        else:
            log.info(
                "opcua_session_up", device=self.name, url=self.config.url, items=self.stats.monitored_items
            )

    async def _serve(
        self, client: Client, limits: OperationLimits, nodes: list[ua.NodeId | None], subs: list[Subscription]
    ) -> None:
        cfg = self.config
        poll_tags = [i for i, t in enumerate(cfg.tags) if t.mode == "poll" and nodes[i] is not None]
        read_limit = effective_limit(limits.max_nodes_per_read, cfg.max_nodes_per_read)
        try:
            async with TaskGroup() as tg:
                tg.create_task(self._watch(), name=f"opcua[{self.name}].watch")
                for n, sub in enumerate(subs):
                    tg.create_task(self._consume(sub), name=f"opcua[{self.name}].subscription{n}")
                groups = group_by(poll_tags, lambda i: cfg.tags[i].poll_interval_s or cfg.poll_interval_s)
                for interval, indexes in groups.items():
                    tg.create_task(
                        self._poll(client, interval, indexes, nodes, read_limit),
                        name=f"opcua[{self.name}].poll{interval:g}s",
                    )
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    async def _watch(self) -> None:
        await self._lost.wait()
        raise SessionLost(self._lost_reason or "connection lost", device=self.name)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lost_reason = describe_error(exc)
        self._lost.set()

    async def _close(self, client: Client) -> None:
        """Best effort: close the session so the server frees it; never hang on a dead link."""
        try:
            async with timeout(min(2.0, self.config.timeout_s)):
                await client.disconnect()
        except (OSError, TimeoutError, UaError, ConnectionError, RuntimeError):
            client.disconnect_socket()

    def _explain(self, exc: BaseException) -> str:
        error = describe_error(exc)
        rejected = self._validator.rejected_file if self._validator is not None else None
        if rejected is not None:
            error = (
                f"{error}: server certificate not trusted, saved to {rejected};"
                f" trust it with: mine-agent opcua trust {rejected} --pki-dir {self.config.security.pki_dir}"
            )
        return error

    _validator: RejectingValidator | None = None
    _up_since: float | None = None
    _last_refused: frozenset[tuple[int, str]] = frozenset()

    # --- setup steps -------------------------------------------------------------------------------

    async def _read_limits(self, client: Client) -> OperationLimits:
        self.stats.read_requests += 1
        limits = await read_operation_limits(client, timeout_s=self.config.timeout_s)
        self.stats.limits = limits
        return limits

    async def _resolve(self, client: Client, limits: OperationLimits) -> list[ua.NodeId | None]:
        """NodeIds for every tag in this session; None (and one bad sample) where the server has none."""
        tags = self.config.tags
        nodes: list[ua.NodeId | None] = [None] * len(tags)
        failures: dict[int, str] = {}
        namespaces: list[str] | None = None
        for i, tag in enumerate(tags):
            if tag.node is None:
                continue
            text = tag.node
            if text.startswith("nsu="):
                if namespaces is None:
                    namespaces = await client.get_namespace_array()
                uri, _, rest = text[4:].partition(";")
                if uri not in namespaces:
                    failures[i] = f"namespace {uri!r} not on server"
                    continue
                text = f"ns={namespaces.index(uri)};{rest}"
            nodes[i] = ua.NodeId.from_string(text)
        by_path = [i for i, t in enumerate(tags) if t.path is not None]
        size = effective_limit(limits.max_nodes_per_translate, self.config.max_items_per_call)
        root = ua.NodeId(ua.Int32(ua.ObjectIds.RootFolder))
        for part in chunks(by_path, size):
            paths = []
            for i in part:
                path = tags[i].path
                assert path is not None
                paths.append("".join(f"/{ns}:{name}" for ns, name in parse_browse_path(path)))
            results = await client.translate_browsepaths(root, paths)
            for i, result in zip(part, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    target = result.Targets[0].TargetId
                    nodes[i] = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
                else:
                    failures[i] = f"browse path not found: {status_name(result.StatusCode.value)}"
        self._report_failures(failures)
        return nodes

    async def _subscribe(
        self, client: Client, limits: OperationLimits, nodes: list[ua.NodeId | None]
    ) -> list[Subscription]:
        cfg = self.config
        wanted = [i for i, t in enumerate(cfg.tags) if t.mode == "subscribe" and nodes[i] is not None]
        per_call = effective_limit(limits.max_monitored_items_per_call, cfg.max_items_per_call)
        subs: list[Subscription] = []
        failures: dict[int, str] = {}
        created = 0
        for interval, indexes in group_by(
            wanted, lambda i: cfg.tags[i].publishing_interval_s or cfg.publishing_interval_s
        ).items():
            period_ms = interval * 1000
            params = ua.CreateSubscriptionParameters()
            params.RequestedPublishingInterval = period_ms
            params.RequestedMaxKeepAliveCount = client.get_keepalive_count(period_ms)
            params.RequestedLifetimeCount = max(10_000, params.RequestedMaxKeepAliveCount * 3)
            # No cap: config validation makes the gateway queue hold a full burst (sum of item queues).
            params.MaxNotificationsPerPublish = 0
            params.PublishingEnabled = True
            params.Priority = 0
            sub = await client.create_subscription(
                params, None, queue_maxsize=cfg.client_queue_size, overflow=OverflowPolicy.DISCONNECT
            )
            # Our hook replaces asyncua's "force a reconnect": the notification is dropped and counted.
            sub.set_overflow_disconnect_handler(self._count_overflow)
            subs.append(sub)
            for part in chunks(indexes, per_call):
                requests = [self._item_request(i, cfg.tags[i], nodes[i], interval) for i in part]
                self.stats.monitored_item_calls += 1
                results = await sub.create_monitored_items(requests)
                for i, result in zip(part, results, strict=True):
                    if isinstance(result, ua.StatusCode):
                        failures[i] = status_name(result.value)
                    else:
                        created += 1
        self.stats.monitored_items = created
        self._report_failures(failures)
        return subs

    @staticmethod
    def _item_request(
        index: int, tag: OpcUaTag, node: ua.NodeId | None, interval: float
    ) -> ua.MonitoredItemCreateRequest:
        rv = ua.ReadValueId()
        rv.NodeId = node
        rv.AttributeId = ua.AttributeIds.Value
        params = ua.MonitoringParameters()
        # The client handle is the tag's index + 1: notifications map back to tags without a lookup.
        params.ClientHandle = index + 1
        sampling = tag.sampling_interval_s if tag.sampling_interval_s is not None else interval
        params.SamplingInterval = sampling * 1000
        params.QueueSize = tag.queue_size
        params.DiscardOldest = True
        if tag.deadband != "none":
            flt = ua.DataChangeFilter()
            flt.Trigger = ua.DataChangeTrigger.StatusValue
            flt.DeadbandType = 1 if tag.deadband == "absolute" else 2
            flt.DeadbandValue = tag.deadband_value
            params.Filter = flt
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = rv
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    def _report_failures(self, failures: dict[int, str]) -> None:
        """Tags the server refused: one bad sample each, one warning for all of them."""
        if not failures:
            return
        self.stats.failed_items += len(failures)
        now_ms = int(self.clock.time() * 1000)
        samples = [
            Sample(self._full_names[i], now_ms, None, Quality.BAD, reason) for i, reason in failures.items()
        ]
        self.stats.samples += len(samples)
        self.stats.bad_samples += len(samples)
        self.sink(samples)
        # Warn when the set of refused tags changes, not again on every reconnect.
        refused = frozenset(failures.items())
        report = log.warning if refused != self._last_refused else log.debug
        self._last_refused = refused
        first = sorted(failures.items())[:5]
        report(
            "opcua_tags_refused",
            device=self.name,
            count=len(failures),
            examples=[f"{self.config.tags[i].name}: {reason}" for i, reason in first],
        )

    # --- data --------------------------------------------------------------------------------------

    def _count_overflow(self) -> None:
        self.stats.client_queue_overflows += 1
        if not self._overflow_logged:
            self._overflow_logged = True
            log.warning(
                "opcua_client_queue_full",
                device=self.name,
                queue=self.config.client_queue_size,
                hint="the pipeline is slower than the server; drops are counted in client_queue_overflows",
            )

    async def _consume(self, sub: Subscription) -> None:
        loop = asyncio.get_running_loop()
        pending: list[Sample] = []
        now_ms = 0

        def flush() -> None:
            nonlocal pending
            if pending:
                burst, pending = pending, []
                self.stats.polls += 1
                self.stats.notifications += len(burst)
                self.sink(burst)

        sample = self._sample
        async for event in sub:
            if type(event) is DataChangeEvent:
                if not pending:
                    now_ms = int(self.clock.time() * 1000)
                    loop.call_soon(flush)
                item = event.data.monitored_item
                pending.append(sample(item.ClientHandle - 1, item.Value, now_ms))
            elif isinstance(event, StatusChangeEvent):
                code = event.notification.Status.value
                if quality_of(code) is not Quality.GOOD:
                    raise SessionLost(f"subscription ended: {status_name(code)}", device=self.name)
        raise SessionLost("subscription closed", device=self.name)

    async def _poll(
        self, client: Client, interval: float, indexes: list[int], nodes: list[ua.NodeId | None], limit: int
    ) -> None:
        ids = [nodes[i] for i in indexes]
        deadline = self.clock.monotonic()
        while True:
            started = self.clock.monotonic()
            self.stats.read_requests += -(-len(ids) // limit)
            try:
                values = await read(client, ids, timeout_s=self.config.timeout_s, limit=limit)
            except TimeoutError as exc:
                raise SessionLost("read timed out", device=self.name) from exc
            now_ms = int(self.clock.time() * 1000)
            samples = [self._sample(i, dv, now_ms) for i, dv in zip(indexes, values, strict=True)]
            self.stats.polls += 1
            self.stats.last_poll_duration_s = self.clock.monotonic() - started
            self.sink(samples)
            deadline += interval
            now = self.clock.monotonic()
            if now > deadline:
                missed = int((now - deadline) // interval) + 1
                self.stats.skipped_polls += missed
                deadline += missed * interval
            await self.clock.sleep(deadline - now)

    def _sample(self, index: int, dv: ua.DataValue, now_ms: int) -> Sample:
        """One DataValue as a Sample: the server's status, value and chosen timestamp.

        Runs once per notification (thousands a second), hence the fast path for the common case:
        status Good without flags and a plain value.
        """
        status = dv.StatusCode
        code = status.value if status is not None else 0
        ts_ms = self._timestamp(dv, now_ms)
        if self._floor_ms[index]:
            if ts_ms < self._floor_ms[index]:
                ts_ms = now_ms
            self._floor_ms[index] = 0
        self.stats.samples += 1
        variant = dv.Value
        raw = variant.Value if variant is not None else None
        if code == 0 and (raw is None or type(raw) in _PLAIN_TYPES):
            return Sample(self._full_names[index], ts_ms, raw)
        if overflowed(code):
            self.stats.server_queue_overflows += 1
        quality = quality_of(code)
        if quality is Quality.BAD:
            self.stats.bad_samples += 1
            return Sample(self._full_names[index], ts_ms, None, Quality.BAD, status_name(code))
        value = _plain(raw)
        if value is _UNSUPPORTED:
            self.stats.bad_samples += 1
            reason = f"unsupported value type {type(raw).__name__}"
            return Sample(self._full_names[index], ts_ms, None, Quality.BAD, reason)
        if quality is Quality.GOOD:
            return Sample(self._full_names[index], ts_ms, value)
        return Sample(self._full_names[index], ts_ms, value, quality, status_name(code))

    def _timestamp(self, dv: ua.DataValue, now_ms: int) -> int:
        choice = self.config.timestamp
        if choice == "source":
            stamp = dv.SourceTimestamp or dv.ServerTimestamp
        elif choice == "server":
            stamp = dv.ServerTimestamp or dv.SourceTimestamp
        else:
            return now_ms
        if stamp is None:
            return now_ms
        if stamp.tzinfo is None:  # OPC UA DateTime is UTC; asyncua may hand it over naive
            stamp = stamp.replace(tzinfo=dt.UTC)
        return int(stamp.timestamp() * 1000)

    def _mark_all_bad(self, reason: str) -> None:
        now_ms = int(self.clock.time() * 1000)
        self._floor_ms = [now_ms] * len(self._full_names)
        samples = [Sample(name, now_ms, None, Quality.BAD, reason) for name in self._full_names]
        self.stats.samples += len(samples)
        self.stats.bad_samples += len(samples)
        self.sink(samples)


_UNSUPPORTED = object()
_PLAIN_TYPES = frozenset({float, int, bool, str})


def _plain(value: Any) -> Any:
    """A value the wire format carries (bool, int, float, str, None), or _UNSUPPORTED."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, bytes):
        return value.hex()
    return _UNSUPPORTED


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a TaskGroup, preferring a real failure over cancellations."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
