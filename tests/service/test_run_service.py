"""The agent under a (simulated) systemd: READY, watchdog pings only while alive, reload, stop.

These run the real runtime, pipeline, batcher, watchdog task and notifier against a notify socket the
test binds; the buffer, uplink and field driver are the in-memory stand-ins of tests.service.standins so
each can be stalled on purpose. Liveness thresholds are shortened through LivenessPolicy; the watchdog
period comes from WATCHDOG_USEC exactly as systemd sets it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from agent.protocol.signing import BatchSigner
from config.schema import HealthConfig
from tests.service.conftest import NotifyReceiver, running
from tests.service.standins import SimDriver, StandIns, config_toml, make_config


async def test_ready_only_after_the_agent_runs(tmp_path: Path, signer: BatchSigner,
                                               notify_receiver: NotifyReceiver) -> None:
    """READY=1 is sent once the buffer is open and every device and the uplink are started."""
    made = StandIns()
    async with running(tmp_path, signer, notify_receiver, standins=made) as (agent, _, _):
        await notify_receiver.wait_for("READY=1")

        assert agent.ready.is_set()
        assert sorted(agent.drivers) == ["plc0", "plc1"]
        assert made.queues == [agent.queue]
        assert made.uplinks == [agent.uplink]


async def test_watchdog_pings_while_alive(tmp_path: Path, signer: BatchSigner,
                                          notify_receiver: NotifyReceiver) -> None:
    """A healthy agent pings the watchdog repeatedly."""
    async with running(tmp_path, signer, notify_receiver):
        await notify_receiver.wait_for("READY=1")
        for _ in range(3):
            await notify_receiver.wait_for("WATCHDOG=1")


async def test_no_pings_while_the_buffer_append_hangs(tmp_path: Path, signer: BatchSigner,
                                                      notify_receiver: NotifyReceiver) -> None:
    """A wedged buffer (append and stats never return) stops the pings; they resume when it recovers."""
    async with running(tmp_path, signer, notify_receiver) as (agent, _, _):
        await notify_receiver.wait_for("WATCHDOG=1")
        agent.queue.stall()

        await notify_receiver.silence("WATCHDOG=1", quiet_s=2.0)
        agent.queue.unstall()
        await notify_receiver.wait_for("WATCHDOG=1")


async def test_no_pings_while_a_poll_loop_is_stuck(tmp_path: Path, signer: BatchSigner,
                                                   notify_receiver: NotifyReceiver) -> None:
    """One device whose poll never returns stops the pings (systemd will restart the agent)."""
    async with running(tmp_path, signer, notify_receiver) as (agent, _, _):
        await notify_receiver.wait_for("WATCHDOG=1")
        driver = agent.drivers["plc0"]
        assert isinstance(driver, SimDriver)
        driver.gate.clear()

        await notify_receiver.silence("WATCHDOG=1", quiet_s=2.0)


async def test_no_pings_while_the_uplink_is_wedged(tmp_path: Path, signer: BatchSigner,
                                                   notify_receiver: NotifyReceiver) -> None:
    """Connected, with batches waiting, and no publish for longer than the stall limit stops the pings."""
    async with running(tmp_path, signer, notify_receiver) as (agent, _, _):
        await notify_receiver.wait_for("WATCHDOG=1")
        agent.uplink.wedge()

        await notify_receiver.silence("WATCHDOG=1", quiet_s=2.0)


async def test_pings_continue_while_the_broker_is_unreachable(tmp_path: Path, signer: BatchSigner,
                                                              notify_receiver: NotifyReceiver) -> None:
    """A disconnected uplink waiting in backoff is legitimate: the backlog grows and the pings go on."""
    async with running(tmp_path, signer, notify_receiver) as (agent, _, _):
        await notify_receiver.wait_for("WATCHDOG=1")
        agent.uplink.disconnect()
        seq = agent.batcher.head[0] if agent.batcher else 0
        while (agent.batcher.head[0] if agent.batcher else 0) < seq + 3:  # 3 more batches: ~3 s of backlog
            await notify_receiver.wait_for("WATCHDOG=1")

        await notify_receiver.wait_for("WATCHDOG=1")


async def test_sighup_reloads_between_reloading_and_ready(tmp_path: Path, signer: BatchSigner,
                                                          notify_receiver: NotifyReceiver) -> None:
    """SIGHUP sends RELOADING=1 with MONOTONIC_USEC, applies the edited file, then READY=1 again."""
    async with running(tmp_path, signer, notify_receiver, devices=1) as (agent, path, _):
        await notify_receiver.wait_for("READY=1")
        path.write_text(config_toml(make_config(tmp_path, devices=2)))
        os.kill(os.getpid(), signal.SIGHUP)

        reloading = await notify_receiver.wait_for("RELOADING=1")
        await notify_receiver.wait_for("READY=1")

        assert any(line.startswith("MONOTONIC_USEC=") for line in reloading.split("\n"))
        assert sorted(agent.drivers) == ["plc0", "plc1"]


async def test_sigterm_sends_stopping_and_commits_open_windows(tmp_path: Path, signer: BatchSigner,
                                                               notify_receiver: NotifyReceiver) -> None:
    """SIGTERM: STOPPING=1, a clean return, and every row the pipeline produced is in a stored batch."""
    async with running(tmp_path, signer, notify_receiver) as (agent, _, task):
        await notify_receiver.wait_for("WATCHDOG=1")
        os.kill(os.getpid(), signal.SIGTERM)

        await notify_receiver.wait_for("STOPPING=1")
        async with asyncio.timeout(30):
            code = await task

        assert code == 0
        assert agent.pipeline is not None
        assert agent.batcher is not None
        produced = agent.pipeline.stats.windows + agent.pipeline.stats.raw_rows
        assert produced > 0
        assert agent.batcher.stats.rows == produced
        assert agent.queue.appended == agent.batcher.stats.batches


async def test_health_port_in_use_does_not_stop_data_collection(tmp_path: Path, signer: BatchSigner,
                                                               notify_receiver: NotifyReceiver) -> None:
    """If the health port is taken the agent still starts (READY) and logs why /health is missing."""
    import socket

    import structlog

    from agent.cli.run import run_agent
    from agent.service.sdnotify import Notifier

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(tmp_path, health_listen=f"127.0.0.1:{port}")
        agent = StandIns().agent(config, signer=signer)
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(run_agent(agent, tmp_path / "agent.toml",
                                                 notifier=Notifier({"NOTIFY_SOCKET": notify_receiver.name})))
            try:
                await notify_receiver.wait_for("READY=1")
            finally:
                agent.stop()
                async with asyncio.timeout(30):
                    await task

    assert any(e["event"] == "health_endpoint_unavailable" and str(port) in e["error"] for e in logs)


async def test_reload_applies_health_settings(tmp_path: Path, signer: BatchSigner,
                                              notify_receiver: NotifyReceiver) -> None:
    """A reload that disables [health] closes the endpoint; the agent keeps running."""
    import structlog

    with structlog.testing.capture_logs() as logs:
        async with running(tmp_path, signer, notify_receiver) as (agent, path, _):
            await notify_receiver.wait_for("READY=1")
            host, port = next(e["listen"] for e in logs if e["event"] == "health_listening").rsplit(":", 1)
            _, w = await asyncio.open_connection(host, int(port))
            w.close()
            edited = make_config(tmp_path).model_copy(update={"health": HealthConfig(enabled=False)})
            path.write_text(config_toml(edited))
            os.kill(os.getpid(), signal.SIGHUP)
            await notify_receiver.wait_for("RELOADING=1")
            await notify_receiver.wait_for("READY=1")

            with pytest.raises(ConnectionRefusedError):
                await asyncio.open_connection(host, int(port))
            assert agent.ready.is_set()


async def test_reload_that_removes_a_device_drops_its_tags_from_tail(
    tmp_path: Path, signer: BatchSigner, notify_receiver: NotifyReceiver
) -> None:
    """`mine-agent tail` shows only configured tags: a device removed by a reload leaves it."""
    async with running(tmp_path, signer, notify_receiver) as (agent, path, _):
        await notify_receiver.wait_for("READY=1")
        for _ in range(100):
            if agent.last_values.select(["plc1.*"]):
                break
            await asyncio.sleep(0.05)
        assert sorted(agent.last_values.select(["*"])) == [f"plc{d}.t{i}" for d in (0, 1) for i in range(3)]
        path.write_text(config_toml(make_config(tmp_path, devices=1)))
        os.kill(os.getpid(), signal.SIGHUP)
        await notify_receiver.wait_for("RELOADING=1")
        await notify_receiver.wait_for("READY=1")

        assert agent.last_values.select(["plc1.*"]) == {}
        assert sorted(agent.last_values.select(["*"])) == [f"plc0.t{i}" for i in range(3)]


async def test_stop_during_a_slow_buffer_append_loses_no_rows(tmp_path: Path, signer: BatchSigner,
                                                              notify_receiver: NotifyReceiver) -> None:
    """SIGTERM while a flush waits on the buffer: that flush completes, then the final one; no row is lost."""
    async with running(tmp_path, signer, notify_receiver) as (agent, _, task):
        await notify_receiver.wait_for("WATCHDOG=1")
        assert agent.batcher is not None
        assert agent.pipeline is not None
        async with asyncio.timeout(30):
            while agent.batcher.cat == 0:  # noqa: ASYNC110 - the start's catalogue batch is stored first
                await asyncio.sleep(0.02)  # (stalled before it, the first flush holds no rows and never ends)
        queue = agent.queue
        queue.stall()
        async with asyncio.timeout(30):
            while agent.pipeline.stats.windows + agent.pipeline.stats.raw_rows == agent.batcher.stats.rows:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # until a flush has taken rows that the stalled buffer holds up
        agent.stop()
        await asyncio.sleep(0.3)  # shutdown is now waiting on the stalled append
        queue.unstall()
        async with asyncio.timeout(30):
            await task

        assert agent.batcher.stats.rows == agent.pipeline.stats.windows + agent.pipeline.stats.raw_rows
        assert queue.appended == agent.batcher.stats.batches


async def test_stop_during_a_reload_does_not_hang(tmp_path: Path, signer: BatchSigner,
                                                  notify_receiver: NotifyReceiver) -> None:
    """A reload that is still applying when SIGTERM arrives finishes or is refused; the stop completes."""
    async with running(tmp_path, signer, notify_receiver, devices=1) as (agent, _, task):
        await notify_receiver.wait_for("READY=1")
        bigger = make_config(tmp_path, devices=4).model_copy(
            update={"pipeline": make_config(tmp_path).pipeline.model_copy(update={"window_s": 2})})
        agent.queue.stall()  # the reload's final flush of the old windows waits on the buffer
        reload = asyncio.create_task(agent.apply(bigger))
        await asyncio.sleep(0.3)
        agent.stop()
        await asyncio.sleep(0.3)  # shutdown has begun too
        agent.queue.unstall()
        async with asyncio.timeout(30):
            code = await task
        await asyncio.gather(reload, return_exceptions=True)

        assert code == 0
        assert all(t.done() for t in agent._driver_tasks.values())
