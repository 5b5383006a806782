"""The watchdog task: judge liveness every half watchdog period and ping systemd only while alive.

A ping from a bare timer would only prove that the event loop runs; this task pings after
:meth:`agent.service.health.HealthMonitor.check` found the pipeline flushing, the buffer answering, no poll loop
stuck and the uplink not wedged (see :mod:`agent.service.health`). When a check fails the pings stop, one error
names the reasons, and systemd restarts the agent ``WatchdogSec`` later; if the condition clears first
the pings resume and one line says so.

The same task keeps ``STATUS=`` (shown by ``systemctl status``) current, logs the first stored and the first
published batch after start-up with their delay (start-up figures a technician can compare), and flushes
the rate-limited log summaries.
"""

from __future__ import annotations

__all__ = ["watchdog_loop"]

import asyncio

import structlog

from agent.service.health import HealthMonitor, HealthReport, process_age_s
from agent.service.logs import flush_suppressed
from agent.service.sdnotify import Notifier

log = structlog.get_logger(__name__)

_DEFAULT_PERIOD_S = 5.0  # how often health is judged when systemd's watchdog is off


def _status_line(report: HealthReport) -> str:
    snap = report.snapshot
    devices = snap.get("devices") or {}
    up = sum(1 for d in devices.values() if d.get("connected"))
    backlog = (snap.get("buffer") or {}).get("batches", "?")
    link = "online" if (snap.get("uplink") or {}).get("connected") else "offline"
    text = (f"{report.status}: devices {up}/{len(devices)} connected, uplink {link}, backlog {backlog}, "
            f"seq {snap.get('seq')}")
    if report.reasons:
        text += f"; {report.reasons[0]}"
    return text


async def watchdog_loop(monitor: HealthMonitor, notifier: Notifier) -> None:
    """Run until cancelled."""
    loop = asyncio.get_running_loop()
    period = notifier.watchdog_interval or _DEFAULT_PERIOD_S
    agent = monitor.agent
    withheld = False
    status = ""
    first_stored = first_published = False
    while True:
        t0 = loop.time()
        await asyncio.sleep(period)
        monitor.loop_lag_s = max(0.0, loop.time() - t0 - period)
        report = await monitor.check()
        if report.alive:
            if notifier.watchdog_interval is not None:
                notifier.watchdog()
            if withheld:
                log.warning("watchdog_resumed", error=None)
                withheld = False
        elif not withheld:
            log.error("watchdog_withheld", error="agent not alive; systemd will restart it", reasons=report.reasons)
            withheld = True
        line = _status_line(report)
        if line != status:
            notifier.status(line)
            status = line
        if not first_stored and agent.batcher is not None and agent.batcher.stats.batches:
            first_stored = True
            log.info("agent_first_batch_stored", seq=agent.batcher.head[0], since_start_s=round(process_age_s(), 3))
        published = (report.snapshot.get("uplink") or {}).get("published")
        if not first_published and published:
            first_published = True
            log.info("agent_first_batch_published", since_start_s=round(process_age_s(), 3))
        flush_suppressed()
