"""The running agent: drivers -> pipeline -> batcher -> buffer -> uplink, supervised.

One code path for start-up and reconfiguration: start-up is :meth:`Agent.apply` of the loaded config as a
diff from nothing, and a reload (SIGHUP, ``mine-agent reload``, a remote push) is :meth:`Agent.apply` of the
new config as a diff from the running one. Only what changed is restarted: a changed device restarts that
device's driver; a changed ``[mqtt]`` restarts the uplink; a changed ``[pipeline]`` (or a changed set of raw
tags) closes the open windows into the buffer and starts a new pipeline. The buffer and its backlog are never
dropped or re-created by a reload; settings that would need that (gateway id, key, state directory, buffer
path) are refused with a clear error and need a restart.

Shutdown order makes SIGTERM safe: drivers stop first (no new samples), the open windows are closed and
committed to the buffer, then the uplink stops (anything not acknowledged stays in the buffer and is sent
after restart), then the buffer is closed. In-flight work is therefore either committed or not started.

The buffer, the uplink and the drivers are made by factories the agent is given (``make_queue``,
``make_uplink``, ``make_driver``), defaulting to the real ones, so a test or a benchmark that is not about one
of them hands in another implementation of its contract instead of replacing module attributes, which would
leak into every other agent in the process.
"""

from __future__ import annotations

__all__ = [
    "Agent", "ApplyResult", "DriverFactory", "QueueFactory", "UplinkFactory", "disk_queue", "mqtt_uplink",
]

import asyncio
import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from agent.batcher import Batcher, catalog_rows
from agent.core.backoff import Backoff
from agent.core.cancellation import TaskGroup, stop_task
from agent.core.clock import Clock, SystemClock
from agent.core.errors import AgentError, ConfigError, ConfigProblem
from agent.core.sample import SampleSink
from agent.pipeline.last_values import LastValues
from agent.pipeline.pipeline import Pipeline, raw_tag_names
from agent.protocol import wire
from agent.protocol.signing import BatchSigner, TrustStore, load_signer
from config.schema import AgentConfig, MqttConfig
from drivers import Driver, create_driver

log = structlog.get_logger(__name__)

_SHUTDOWN_STEP_S = 1.5  # each shutdown step gets this long; the whole stop fits systemd's 5 s budget


@dataclass(slots=True)
class ApplyResult:
    """What a configuration change did."""

    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, list[str]]:
        return {"started": self.started, "stopped": self.stopped, "restarted": self.restarted}


class QueueFactory(Protocol):
    """Makes the buffer: ``buffer.AsyncDiskQueue`` or anything with its methods."""

    def __call__(self, path: Path, *, max_bytes: int, sync: str, min_free_bytes: int) -> Any: ...


class UplinkFactory(Protocol):
    """Makes the uplink for one ``[mqtt]`` configuration: ``agent.uplink.MqttUplink`` or its like."""

    def __call__(self, config: MqttConfig, gateway_id: str, queue: Any, *, clock: Clock,
                 archive_keys: TrustStore | None, catalogue: Callable[[], int]) -> Any: ...


class DriverFactory(Protocol):
    """Makes the driver of one device: ``drivers.create_driver`` or its like."""

    def __call__(self, name: str, config: Any, sink: SampleSink, *, clock: Clock) -> Driver: ...


def disk_queue(path: Path, *, max_bytes: int, sync: str, min_free_bytes: int) -> Any:
    """The real buffer. Imported on first use so configuration tooling never loads the SQLite code.

    The buffer does not know the wire format: it is given :func:`agent.protocol.wire.frame_tags` to name the
    tags of the batches it evicts."""
    from buffer import AsyncDiskQueue

    return AsyncDiskQueue(path, max_bytes=max_bytes, frame_tags=wire.frame_tags, sync=sync,
                          min_free_bytes=min_free_bytes)


def mqtt_uplink(config: MqttConfig, gateway_id: str, queue: Any, *, clock: Clock,
                archive_keys: TrustStore | None, catalogue: Callable[[], int]) -> Any:
    """The real uplink, imported on first use like the buffer. ``catalogue`` returns the seq of the tag
    catalogue in force, for the status the uplink publishes."""
    from agent.uplink import MqttUplink

    return MqttUplink(config, gateway_id, queue, clock=clock, archive_keys=archive_keys, catalogue=catalogue)


def configured_tags(config: AgentConfig) -> list[str]:
    """Full names of every configured tag: device tags and calculated tags."""
    names = {f"{name}.{tag.name}" for name, dev in config.devices.items() for tag in dev.tags}
    names.update(f"calc.{calc.name}" for calc in config.calculated)
    return sorted(names)


def raw_tags(config: AgentConfig) -> frozenset[str]:
    return raw_tag_names(config)


def _pipeline_settings(config: AgentConfig) -> tuple[Any, ...]:
    """What the pipeline is built from: a change to any of it means a new pipeline."""
    return (config.pipeline, raw_tags(config), config.alarms, config.deadbands, config.calculated)


def _restart_required(old: AgentConfig, new: AgentConfig) -> list[ConfigProblem]:
    problems = []
    for key, a, b in (
        ("gateway.id", old.gateway.id, new.gateway.id),
        ("gateway.key_file", old.gateway.key_file, new.gateway.key_file),
        ("gateway.state_dir", old.gateway.state_dir, new.gateway.state_dir),
        ("buffer", old.buffer, new.buffer),
    ):
        if a != b:
            problems.append(ConfigProblem("<reload>", None, key,
                                          "cannot change while running (restart the service to apply it)"))
    return problems


class Agent:
    """Owns every long-lived part. ``run()`` until ``stop()``; ``apply()`` to reconfigure."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        signer: BatchSigner | None = None,
        make_queue: QueueFactory = disk_queue,
        make_uplink: UplinkFactory = mqtt_uplink,
        make_driver: DriverFactory = create_driver,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._signer = signer
        self._make_queue = make_queue
        self._make_uplink = make_uplink
        self._make_driver = make_driver
        self.queue: Any = None
        self.batcher: Batcher | None = None
        self.pipeline: Pipeline | None = None
        self.uplink: Any = None
        self.drivers: dict[str, Driver] = {}
        self._driver_tasks: dict[str, asyncio.Task[None]] = {}
        self._uplink_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._tg: TaskGroup | None = None
        self._running_config: AgentConfig | None = None
        self._stop = asyncio.Event()
        # Set by the pipeline when alarm events wait (or an earlier alarm deadline appeared): the flush task
        # stores them at once instead of at its next tick.
        self._alarm_wakeup = asyncio.Event()
        self._apply_lock = asyncio.Lock()
        self.ready = asyncio.Event()
        self.started_at: float | None = None
        # Service hooks (agent.service.health): when the flush loop last completed, on self.clock.monotonic(), for
        # the watchdog's liveness check; and the last value of every tag, for `mine-agent tail`.
        self.flushed_at: float | None = None
        self.last_values = LastValues()
        # One flush at a time (loop, reload and shutdown all flush), and a flush once started is finished:
        # cancelling it half-way would drop rows already taken from the pipeline but not yet stored.
        self._flush_lock = asyncio.Lock()
        self._flush_inflight: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        cfg = self.config
        signer = self._signer or load_signer(cfg.gateway.key_file)
        # Checked here too, like the signing key, so a missing archive keys file is one clear error before
        # anything starts; apply() reads it again for the uplink (and on every reload).
        from agent.uplink import load_archive_keys

        await asyncio.to_thread(load_archive_keys, cfg.mqtt)
        cfg.gateway.state_dir.mkdir(parents=True, exist_ok=True)
        self.queue = self._make_queue(cfg.buffer_path, max_bytes=int(cfg.buffer.max_bytes), sync=cfg.buffer.sync,
                                      min_free_bytes=int(cfg.buffer.min_free_bytes))
        await self.queue.open()
        try:
            # The tags configured when the agent starts are the ones an unclean stop kept from being collected.
            self.batcher = Batcher(cfg.gateway.id, signer, self.queue, compression=cfg.pipeline.compression,
                                   max_rows=cfg.pipeline.batch_max_rows, outage_tags=configured_tags(cfg),
                                   catalog_state=cfg.gateway.state_dir / "catalog.json", clock=self.clock)
            await self.batcher.open()
            async with TaskGroup() as tg:
                self._tg = tg
                await self.apply(cfg)
                # What exists now (configuration models, drivers' request plans, imported modules) lives as
                # long as the process: keep the cyclic garbage collector from walking it again on every
                # full collection, which at 10,000 tags otherwise costs more than decoding the samples.
                gc.freeze()
                self.started_at = self.clock.monotonic()
                self.ready.set()
                seq, _ = self.batcher.head
                log.info("agent_started", gateway=cfg.gateway.id, devices=len(cfg.devices), seq=seq)
                if on_ready is not None:
                    on_ready()
                await self._stop.wait()
                await self._shutdown()
        finally:
            self._tg = None
            await self.queue.close()
        log.info("agent_stopped", gateway=cfg.gateway.id, seq=self.batcher.head[0] if self.batcher else None)

    def stop(self) -> None:
        """Ask ``run()`` to shut down in order. Safe to call from a signal handler."""
        self._stop.set()

    def _catalogue(self) -> int:
        """The seq of the tag catalogue in force (0 before the batcher is open), for the uplink's status."""
        return self.batcher.cat if self.batcher is not None else 0

    async def _shutdown(self) -> None:
        # A reload in progress finishes first (it could otherwise start drivers after they were stopped);
        # apply() refuses reloads from now on.
        async with self._apply_lock:
            # All at once: the stop budget is one step, however many devices ignore cancellation.
            await asyncio.gather(*(self._stop_driver(name) for name in list(self._driver_tasks)))
            if self._flush_task is not None:
                # Ends at once: the flush in progress is shielded and awaited by the final flush's lock.
                await stop_task(self._flush_task, None)
            await self._flush(final=True)
            if self._uplink_task is not None and not await stop_task(self._uplink_task, _SHUTDOWN_STEP_S):
                log.warning("uplink_stop_slow", gateway=self.config.gateway.id,
                            error=f"still running {_SHUTDOWN_STEP_S:g} s after cancellation")

    # -- one path for start-up and reload ------------------------------------------------------------------

    async def apply(self, new: AgentConfig, *, assume_running: AgentConfig | None = None) -> ApplyResult:
        """Bring the running parts in line with ``new``, restarting only what changed.

        ``assume_running`` replaces the recorded running configuration as the base of the diff: after an
        apply that raised half-way (some parts already changed), ``apply(previous, assume_running=failed)``
        restarts everything the failed one may have touched, so the rollback is complete.
        """
        if self._tg is None:
            raise AgentError("the agent is not running")
        async with self._apply_lock:
            old = assume_running if assume_running is not None else self._running_config
            if self._running_config is not None and self._stop.is_set():
                raise AgentError("the agent is stopping; the new configuration was not applied")
            result = ApplyResult()
            if old is not None:
                problems = _restart_required(old, new)
                if problems:
                    raise ConfigError(problems)

            # The archive's keys are read before anything changes: a missing or broken archive_keys_file refuses
            # the configuration (at start, on reload) instead of leaving an uplink that can never delete.
            from agent.uplink import load_archive_keys

            archive_keys = await asyncio.to_thread(load_archive_keys, new.mqtt)

            # Pipeline first: a changed window, raw-tag set, alarm, deadband or calculated tag closes the open
            # windows into the buffer; tags whose alarm rules did not change keep their alarm state.
            if old is None or _pipeline_settings(old) != _pipeline_settings(new):
                if self.pipeline is not None:
                    await self._flush(final=True)
                self.pipeline = Pipeline.from_config(new, clock=self.clock, on_alarm=self._alarm_wakeup.set,
                                                     previous=self.pipeline)
                if self.batcher is not None:
                    self.batcher.compression = new.pipeline.compression
                    self.batcher.max_rows = new.pipeline.batch_max_rows
                if old is not None:
                    result.restarted.append("pipeline")
            if self.batcher is not None:
                self.batcher.set_catalog(catalog_rows(new))  # stored by the next flush if it changed
            if self._flush_task is None or self._flush_task.done() or (
                old is not None and old.pipeline.batch_interval_s != new.pipeline.batch_interval_s
            ):
                if self._flush_task is not None:
                    self._flush_task.cancel()
                self._flush_task = self._tg.create_task(self._flush_loop(new.pipeline.batch_interval_s),
                                                        name="pipeline.flush")

            old_devices = old.devices if old is not None else {}
            for name in old_devices.keys() - new.devices.keys():
                await self._stop_driver(name)
                self.last_values.forget(f"{name}.")  # a removed device's tags leave `mine-agent tail`
                result.stopped.append(f"device:{name}")
            for name, dev in new.devices.items():
                if name not in old_devices:
                    self._start_driver(name, dev)
                    result.started.append(f"device:{name}")
                elif old_devices[name] != dev:
                    await self._stop_driver(name)
                    self.last_values.forget(f"{name}.")  # its tags may have changed; the next poll refills
                    self._start_driver(name, dev)
                    result.restarted.append(f"device:{name}")
                else:
                    result.unchanged.append(f"device:{name}")

            if old is None or old.mqtt != new.mqtt:
                if self._uplink_task is not None:
                    # Unbounded on purpose: two uplinks must never share the buffer; the uplink bounds its own
                    # goodbye (SHUTDOWN_TIMEOUT_S).
                    await stop_task(self._uplink_task, None)
                    result.restarted.append("uplink")
                else:
                    result.started.append("uplink")
                self.uplink = self._make_uplink(new.mqtt, new.gateway.id, self.queue, clock=self.clock,
                                                archive_keys=archive_keys, catalogue=self._catalogue)
                self._uplink_task = self._tg.create_task(self.uplink.run(), name="uplink")
            elif archive_keys is not None:
                self.uplink.use_archive_keys(archive_keys)  # same [mqtt]; the file itself may have changed

            self._running_config = new
            self.config = new
            if old is not None:
                log.info("config_applied", **result.summary())
            return result

    # -- drivers -------------------------------------------------------------------------------------------

    def _sink(self, samples: Any) -> None:
        # Looked up on each call so a pipeline replaced by a reload receives the samples from then on.
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.ingest(samples)
        self.last_values.record(samples)

    def _start_driver(self, name: str, dev: Any) -> None:
        assert self._tg is not None
        driver = self._make_driver(name, dev, self._sink, clock=self.clock)
        self.drivers[name] = driver
        self._driver_tasks[name] = self._tg.create_task(self._supervise(driver), name=f"driver[{name}].run")

    async def _stop_driver(self, name: str) -> None:
        task = self._driver_tasks.pop(name, None)
        self.drivers.pop(name, None)
        if task is None:
            return
        if not await stop_task(task, _SHUTDOWN_STEP_S):
            log.warning("driver_stop_slow", device=name,
                        error=f"still running {_SHUTDOWN_STEP_S:g} s after cancellation; left to finish")

    async def _supervise(self, driver: Driver) -> None:
        """Drivers handle device trouble themselves; this catches their bugs so one device cannot stop the
        agent, and restarts the driver with backoff."""
        backoff = Backoff(1.0, 60.0)
        while True:
            try:
                await driver.run()
                log.error("driver_returned", device=driver.name, error="run() returned; restarting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                driver.stats.errors += 1
                driver.stats.last_error = f"driver crashed: {exc!r}"
                log.exception("driver_crashed", device=driver.name, error=repr(exc))
            await self.clock.sleep(backoff.next())

    # -- pipeline -> buffer ----------------------------------------------------------------------------------

    async def _flush_loop(self, interval: float) -> None:
        """Flush on a timer aligned to the interval (so batches cover regular spans); in between, store alarm
        events the moment the pipeline signals them, and wake for alarm deadlines (delays, silent devices).
        One task does both, so batches are made one at a time."""
        while True:
            now = self.clock.time()
            flush_at = now + interval - (now % interval)
            # Until the flush is due; a wall clock stepped back (NTP) ends the wait rather than stretching it.
            while flush_at - interval <= (now := self.clock.time()) < flush_at:
                wait = flush_at - now
                deadline = self.pipeline.next_alarm_deadline() if self.pipeline is not None else None
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - now))
                await self._sleep_or_alarm(wait)
                await self._flush_alarms()
            # Shielded: cancelling this loop (shutdown, reload) lets the flush in progress finish; the next
            # flush waits for it on the lock.
            self._flush_inflight = asyncio.get_running_loop().create_task(self._flush(), name="pipeline.flush.step")
            await asyncio.shield(self._flush_inflight)
            self.flushed_at = self.clock.monotonic()

    async def _sleep_or_alarm(self, seconds: float) -> None:
        """Sleep on the agent's clock until ``seconds`` pass or the pipeline signals an alarm."""
        if self._alarm_wakeup.is_set():
            self._alarm_wakeup.clear()
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waiter = asyncio.ensure_future(self._alarm_wakeup.wait())
        try:
            await asyncio.wait((sleeper, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)
        self._alarm_wakeup.clear()

    async def _flush_alarms(self) -> None:
        """Store the alarm events due now as batches of kind "alarm" (the uplink sends that kind first)."""
        async with self._flush_lock:
            if self.pipeline is None or self.batcher is None:
                return
            out = self.pipeline.take_alarms()
            if out:
                await self.batcher.submit(out)

    async def _flush(self, *, final: bool = False) -> None:
        async with self._flush_lock:
            if self.pipeline is None or self.batcher is None:
                return
            out = self.pipeline.collect(final=final)
            if out:
                await self.batcher.submit(out, final=final)
            else:
                await self.batcher.flush(final=final)

    # -- introspection ----------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """A JSON-able snapshot for status, metrics and the health endpoint."""
        from dataclasses import asdict

        return {
            "gateway": self.config.gateway.id,
            "ready": self.ready.is_set(),
            "devices": {name: asdict(d.stats) for name, d in self.drivers.items()},
            "pipeline": asdict(self.pipeline.stats) if self.pipeline else None,
            "alarms_active": self.pipeline.alarms.active() if self.pipeline else {},
            "batcher": asdict(self.batcher.stats) if self.batcher else None,
            "uplink": _stats_dict(self.uplink),
            "seq": self.batcher.head[0] if self.batcher else None,
        }


def _stats_dict(obj: Any) -> dict[str, Any] | None:
    from dataclasses import asdict, is_dataclass

    stats = getattr(obj, "stats", None)
    if stats is None:
        return None
    return asdict(stats) if is_dataclass(stats) and not isinstance(stats, type) else dict(vars(stats))
