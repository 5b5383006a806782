"""``mine-agent run --config FILE``: run the agent in the foreground (what the systemd unit starts).

SIGTERM and SIGINT stop it in order (see agent.runtime); SIGHUP reloads the configuration file through the
same validation and apply path as start-up, restarting only what changed. A reload that fails validation
leaves the running configuration untouched and logs every problem.

Under systemd (``Type=notify``) it tells the service manager READY=1 once the agent runs (buffer open,
configuration applied, every part started), RELOADING=1 and READY=1 around a reload, STOPPING=1 on
SIGTERM, and sends watchdog pings only while the agent is alive (agent.service.health_watchdog). The local health
endpoint (agent.service.health_server) runs beside the agent; if its port is taken the agent runs without it,
because data collection matters more than the endpoint.

Reloads and signed remote pushes both go through :class:`agent.remote.service.ConfigService` (validate, stage,
apply, health window, automatic rollback); which file is in force at start-up, the technician's or the last
pushed one, is decided by :func:`agent.remote.service.startup_config`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from agent.core.cancellation import stop_task
from agent.core.errors import AgentError
from agent.runtime import Agent
from agent.service.health import HealthMonitor, LivenessPolicy, process_age_s
from agent.service.health_server import HealthServer
from agent.service.health_watchdog import watchdog_loop
from agent.service.logs import configure_logging
from agent.service.sdnotify import Notifier
from config.schema import HealthConfig

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, required=True, help="the gateway's TOML configuration")
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default="auto",
                        help="auto: JSON under systemd or when not on a terminal, readable otherwise")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")


def main(args: argparse.Namespace) -> int:
    from agent.remote.service import startup_config

    configure_logging(args.log_format, args.log_level)
    config, pending = startup_config(args.config)
    return asyncio.run(run_agent(Agent(config), args.config, pending=pending))


class _Endpoint:
    """The health server, restarted when a reload or a remote push changes ``[health]``."""

    def __init__(self, agent: Agent, monitor: HealthMonitor) -> None:
        self.agent = agent
        self.monitor = monitor
        self.config: HealthConfig | None = None
        self.server: HealthServer | None = None
        # A reload and a push can both ask for a sync; one at a time, so two servers never race for a port.
        self._lock = asyncio.Lock()

    async def sync(self) -> None:
        async with self._lock:
            await self._sync()

    async def _sync(self) -> None:
        wanted = self.agent.config.health
        if wanted == self.config:
            return
        await self.stop()
        self.config = wanted
        if not wanted.enabled:
            return
        server = HealthServer(self.monitor, self.agent.last_values, wanted.listen)
        try:
            await server.start()
        except AgentError as exc:
            log.error("health_endpoint_unavailable", error=str(exc),
                      hint="the agent keeps running without /metrics and /health; free the port or change "
                           "[health] listen")
            return
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


_REMOTE_STOP_S = 5.0  # the configuration channel's goodbye is bounded by its own 2 s DISCONNECT


async def run_agent(
    agent: Agent,
    config_path: Path,
    *,
    notifier: Notifier | None = None,
    policy: LivenessPolicy | None = None,
    pending: list[Any] | None = None,
) -> int:
    from agent.remote.service import ConfigService

    loop = asyncio.get_running_loop()
    service = ConfigService(agent, config_path, pending=pending)
    notifier = notifier or Notifier()
    monitor = HealthMonitor(agent, policy)
    endpoint = _Endpoint(agent, monitor)
    background: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None], name: str) -> None:
        task = loop.create_task(coro, name=name)
        background.add(task)
        task.add_done_callback(background.discard)
        task.add_done_callback(_log_crash)

    async def reload() -> None:
        # READY=1 only after the endpoint follows the new [health] too: the reload is complete then.
        notifier.reloading()
        try:
            await service.reload_local()
            await endpoint.sync()
        finally:
            notifier.ready()

    service.on_change.append(lambda: spawn(endpoint.sync(), "health.sync"))

    def on_hup() -> None:
        spawn(reload(), "agent.reload")

    def on_term() -> None:
        notifier.stopping()
        agent.stop()

    def on_ready() -> None:
        notifier.ready(status=f"running, {len(agent.drivers)} devices")
        log.info("agent_ready", since_start_s=round(process_age_s(), 3), watchdog_s=notifier.watchdog_interval)
        spawn(watchdog_loop(monitor, notifier), "agent.watchdog")

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    remote = loop.create_task(service.run(), name="remote_config")
    remote.add_done_callback(_log_crash)
    try:
        await endpoint.sync()
        await agent.run(on_ready=on_ready)
    finally:
        try:
            await stop_task(remote, _REMOTE_STOP_S)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in list(background):
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await endpoint.stop()
            notifier.close()
    return 0


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("service_task_crashed", error=repr(task.exception()), task=task.get_name())
