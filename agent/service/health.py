"""Is the agent alive, and is it well? One answer for systemd's watchdog, the health endpoint and metrics.

Two different questions, deliberately kept apart:

*Alive* (drives the systemd watchdog: no pings when not alive, so systemd restarts the agent) means the
process can still do its job and a restart is the right cure. All of these must hold:

1. **The event loop is responsive**: the watchdog task runs on the loop; a loop blocked for longer than
   ``max_loop_lag_s`` (a blocking call, a runaway computation) fails the check, and a loop blocked for good
   sends no pings at all.
2. **The pipeline flushes**: the runtime's flush loop (pipeline -> batcher -> buffer) completed within
   ``flush_stall_s`` (plus three flush intervals). A buffer append that hangs in its worker thread, or a
   flush loop that died, stops it.
3. **The buffer answers**: ``queue.stats()`` returns within ``buffer_timeout_s``.
4. **No poll loop is stuck**: for every polled device (one with ``poll_interval_s``) the driver's counters
   (polls, errors, samples, skipped polls) changed within ``max(device_stall_s, 20 poll intervals)``. A
   device that is down still counts failed polls or errors, so only a poll that hangs forever (an I/O call
   without a timeout) freezes them. Devices that only report changes (subscriptions) are not judged.
5. **The uplink is not wedged**: it is disconnected (waiting in backoff is legitimate, whatever the length
   of the outage), or it has nothing to send (no backlog, nothing in flight), or ``published``/``acked``
   moved within ``uplink_stall_s``. Connected, with work, and no progress at all is wedged.

*Well* (the ``status`` of ``/health``: ok, degraded or failing, with reasons for a technician) also looks at
things a restart does not cure: a device that is down, a broker that is unreachable, a growing backlog,
buffer drops, a buffer that refuses or drops batches, limits clamped at start. Those make the status
``degraded``; not ready or not alive makes it ``failing``.

*Publishing* (``publishing`` and ``publishing_reason`` in ``/health``, the same words as the retained MQTT
status): false when the gateway is not getting its batches stored and out, with the first reason of: the
buffer's condition (``disk_full``, ``buffer_full``, ``store_error``: not storing; ``dropping``: storing, but
evicting unsent data), then ``link`` (not connected to the broker). Drops are called declared only when the
buffer no longer holds them as pending records, i.e. when their gap batch is stored (gap batches are never
evicted) or delivered; until then ``/health`` says how many still await their declaration.
"""

from __future__ import annotations

__all__ = [
    "HealthMonitor", "HealthReport", "LivenessPolicy", "assess", "process_age_s", "process_stats", "publishing_state",
]

import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import TYPE_CHECKING, Any

from agent.core.cancellation import timeout

if TYPE_CHECKING:
    from agent.runtime import Agent


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    """Thresholds of the liveness checks (module docstring). Defaults suit a gateway with WatchdogSec=60s."""

    flush_stall_s: float = 60.0
    buffer_timeout_s: float = 10.0
    device_stall_s: float = 180.0
    device_stall_polls: int = 20  # ... or this many poll intervals, whichever is longer
    uplink_stall_s: float = 120.0
    max_loop_lag_s: float = 10.0
    backlog_warn_s: float = 300.0  # oldest unsent batch older than this: degraded
    recent_s: float = 600.0  # a counter that moved within this is "recent" (append failures, drops)


@dataclass(slots=True)
class HealthReport:
    status: str  # ok | degraded | failing
    alive: bool
    reasons: list[str]  # why not alive or not ok; empty when ok
    snapshot: dict[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The JSON document of ``/health``."""
        return {"status": self.status, "alive": self.alive, "reasons": self.reasons, **self.snapshot}


class _Progress:
    """When did a value last change? Used to tell slow from stuck."""

    __slots__ = ("changed_at", "value")

    def __init__(self, value: Any, now: float) -> None:
        self.value = value
        self.changed_at = now

    def observe(self, value: Any, now: float) -> float:
        """Record ``value``; return seconds since it last changed."""
        if value != self.value:
            self.value = value
            self.changed_at = now
        return now - self.changed_at


def _plain(stats: Any) -> dict[str, Any] | None:
    if stats is None:
        return None
    if is_dataclass(stats) and not isinstance(stats, type):
        return asdict(stats)
    if isinstance(stats, Mapping):
        return dict(stats)
    return {k: v for k, v in vars(stats).items() if not k.startswith("_")}


def process_stats() -> dict[str, float]:
    """Resident memory, CPU seconds and open descriptors of this process, from /proc (Linux)."""
    out: dict[str, float] = {}
    t = os.times()
    out["cpu_seconds"] = t.user + t.system
    try:
        with open("/proc/self/statm", "rb") as f:
            out["rss_bytes"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        out["open_fds"] = len(os.listdir("/proc/self/fd"))
    except OSError:
        pass
    return out


def process_age_s() -> float:
    """Seconds since this process started (from /proc, so it includes interpreter start and imports)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of proc(5); the first two fields were split off
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.process_time()


_CONFIG_HASHES: dict[int, tuple[Any, str]] = {}


def config_hash(config: Any) -> str:
    """Short hash of the running configuration (secrets masked), to tell which version a gateway runs."""
    cached = _CONFIG_HASHES.get(id(config))
    if cached is not None and cached[0] is config:
        return cached[1]
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
    _CONFIG_HASHES.clear()
    _CONFIG_HASHES[id(config)] = (config, digest)
    return digest


class HealthMonitor:
    """Collects a snapshot of the agent and judges it. ``check()`` is cheap enough to call every second."""

    def __init__(self, agent: Agent, policy: LivenessPolicy | None = None) -> None:
        self.agent = agent
        self.policy = policy or LivenessPolicy()
        self.loop_lag_s = 0.0  # set by the watchdog task, which measures its own wake-up delay
        self.last: HealthReport | None = None
        self._progress: dict[str, _Progress] = {}
        self._started = time.time()

    def _since_change(self, key: str, value: Any, now: float) -> float:
        p = self._progress.get(key)
        if p is None:
            self._progress[key] = _Progress(value, now)
            return 0.0
        return p.observe(value, now)

    async def snapshot(self) -> dict[str, Any]:
        """``Agent.health()`` plus buffer, process and configuration figures."""
        agent = self.agent
        snap = agent.health()
        snap["buffer"] = None
        snap["buffer_error"] = None
        if agent.queue is not None and agent.ready.is_set():
            try:
                async with timeout(self.policy.buffer_timeout_s):
                    snap["buffer"] = _plain(await agent.queue.stats())
            except TimeoutError:
                snap["buffer_error"] = f"the buffer did not answer within {self.policy.buffer_timeout_s:g} s"
            except Exception as exc:  # reported, not raised: health must answer while things are broken
                snap["buffer_error"] = f"buffer stats failed: {exc!r}"
        snap["process"] = process_stats()
        snap["process"]["start_time_s"] = self._started
        snap["config_hash"] = config_hash(agent.config)
        snap["uptime_s"] = (agent.clock.monotonic() - agent.started_at) if agent.started_at is not None else None
        snap["loop_lag_s"] = self.loop_lag_s
        flushed_at = agent.flushed_at
        snap["since_flush_s"] = agent.clock.monotonic() - flushed_at if flushed_at is not None else None
        snap["ts_ms"] = int(agent.clock.time() * 1000)
        return snap

    async def check(self) -> HealthReport:
        snap = await self.snapshot()
        report = assess(snap, self, self.agent.clock.monotonic())
        self.last = report
        return report


_NOT_STORING = {
    "disk_full": "the buffer refuses new batches: the disk is full (or below buffer.min_free_bytes)",
    "buffer_full": "the buffer refuses new batches: undelivered gap and catalog batches fill buffer.max_bytes",
    "store_error": "the buffer cannot write (I/O error)",
    "dropping": "the buffer is evicting unsent data to make room (declared as loss)",
}


def publishing_state(snap: dict[str, Any]) -> tuple[bool, str | None]:
    """(publishing, reason) of a snapshot: the buffer's condition first, then the link (module docstring)."""
    condition = (snap.get("buffer") or {}).get("condition")
    if condition:
        return False, str(condition)
    up = snap.get("uplink")
    if up is not None and not up.get("connected"):
        return False, "link"
    return True, None


def assess(snap: dict[str, Any], monitor: HealthMonitor, now: float) -> HealthReport:
    """Judge a snapshot: liveness first (module docstring), then well-being."""
    policy = monitor.policy
    agent = monitor.agent
    dead: list[str] = []
    unwell: list[str] = []
    snap["publishing"], snap["publishing_reason"] = publishing_state(snap)
    if not snap.get("ready"):
        return HealthReport("failing", alive=True, reasons=["starting: not ready yet"], snapshot=snap)

    # 1. event loop
    if snap["loop_lag_s"] > policy.max_loop_lag_s:
        dead.append(f"event loop blocked for {snap['loop_lag_s']:.1f} s")
    # 2. flush loop
    interval = float(agent.config.pipeline.batch_interval_s)
    since_flush = snap["since_flush_s"]
    if since_flush is None and agent.started_at is not None:
        since_flush = now - agent.started_at
    if since_flush is not None and since_flush > policy.flush_stall_s + 3 * interval:
        dead.append(f"pipeline flush has not completed for {since_flush:.0f} s (buffer append stuck?)")
    # 3. buffer
    if snap["buffer_error"]:
        dead.append(snap["buffer_error"])
    # 4. poll loops
    for name, dev in snap["devices"].items():
        dev_cfg = agent.config.devices.get(name)
        poll = getattr(dev_cfg, "poll_interval_s", None)
        progress = (dev["polls"], dev["errors"], dev["samples"], dev["skipped_polls"])
        stalled = monitor._since_change(f"device:{name}", progress, now)
        if poll is not None and stalled > max(policy.device_stall_s, policy.device_stall_polls * float(poll)):
            dead.append(f"device {name}: poll loop stuck, no poll or error for {stalled:.0f} s")
        if not dev["connected"]:
            unwell.append(f"device {name}: not connected" + (f" ({dev['last_error']})" if dev["last_error"] else ""))
    # 5. uplink
    up = snap.get("uplink")
    buf = snap.get("buffer") or {}
    backlog = int(buf.get("batches", 0) or 0)
    if up is not None:
        moved = monitor._since_change("uplink", (up.get("published"), up.get("acked")), now)
        work = backlog > 0 or bool(up.get("inflight"))
        if up.get("connected") and work and moved > policy.uplink_stall_s:
            dead.append(f"uplink wedged: connected with {backlog} batches waiting, no publish or ack for {moved:.0f} s")
        if not up.get("connected"):
            err = up.get("last_error")
            unwell.append("uplink: not connected to the broker" + (f" ({err})" if err else ""))

    # Well-being beyond liveness.
    condition = buf.get("condition")
    if condition:
        unwell.insert(0, f"not publishing: {condition}: {_NOT_STORING.get(str(condition), 'see the buffer')}")
    unwell.extend(buf.get("clamped") or [])
    oldest = buf.get("oldest_created_ms")
    if oldest:
        age = snap["ts_ms"] / 1000 - oldest / 1000
        if age > policy.backlog_warn_s:
            unwell.append(f"backlog: {backlog} batches waiting, oldest {age / 60:.0f} min old")
    batcher = snap.get("batcher") or {}
    failures = batcher.get("append_failures")
    if failures and monitor._since_change("append_failures", failures, now) < policy.recent_s:
        unwell.append(f"buffer refused appends ({batcher['append_failures']} times since start; disk full?)")
    if batcher.get("rows_dropped_unbuffered"):
        unwell.append(f"{batcher['rows_dropped_unbuffered']} rows lost because the buffer refused them")
    dropped = buf.get("dropped_batches")
    pending = int(buf.get("pending_drop_batches") or 0)
    if pending:
        # Not "declared": the gap batch that declares them is not stored yet (module docstring).
        unwell.append(f"buffer dropped {dropped} batches to stay within its limits; {pending} of them not yet "
                      "declared (pending in the buffer until a gap batch can be stored)")
    elif dropped and monitor._since_change("dropped", dropped, now) < policy.recent_s:
        unwell.append(f"buffer dropped {dropped} batches to stay within its limits (declared in signed gap "
                      "batches, which are never evicted)")

    if dead:
        return HealthReport("failing", alive=False, reasons=dead + unwell, snapshot=snap)
    return HealthReport("degraded" if unwell else "ok", alive=True, reasons=unwell, snapshot=snap)
