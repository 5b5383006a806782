"""The runtime stores an alarm batch the moment the pipeline raises it, not at the next flush tick.

The agent runs in-process on a FakeClock that the test never advances: the flush timer therefore never
fires, and an alarm batch can only reach the buffer through the alarm wake-up path. The buffer is the real
SQLite one; the broker address has nothing listening (the uplink just retries), since only the buffer is
looked at here.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from agent.core.clock import FakeClock
from agent.core.sample import Quality, Sample
from agent.demo.localbroker import free_port
from agent.protocol import wire
from agent.protocol.signing import TrustStore, generate_key
from agent.runtime import Agent
from config.loader import parse_config


def _config(tmp_path: Path, alarm: str) -> str:
    return f"""
[gateway]
id = "gw-alarm"
key_file = "{tmp_path / 'keys' / 'gateway.key'}"
state_dir = "{tmp_path / 'state'}"
[mqtt]
host = "127.0.0.1"
port = {free_port()}
archive_keys_file = "{tmp_path / 'archive.keys'}"
[buffer]
max_bytes = "16 MiB"
[pipeline]
window_s = 10
batch_interval_s = 1.0
[devices.gas1]
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {free_port()}
unit = 1
poll_interval_s = 1.0
[[devices.gas1.tags]]
name = "ch4"
address = 0
type = "float32"
[[alarms]]
tag = "gas1.ch4"
{alarm}
"""


async def _alarm_rows(agent: Agent, trust: TrustStore, *, until: str, within_s: float) -> list[list[Any]]:
    """The alarm rows of every alarm batch in the buffer, oldest first, once one of them is in state ``until``
    (the agent's start puts a ``reset`` row per watched alarm ahead of anything else)."""
    async with asyncio.timeout(within_s):
        while True:
            rows = await _stored_alarm_rows(agent, trust)
            if any(r[3] == until for r in rows):
                return rows
            await asyncio.sleep(0.02)


async def _stored_alarm_rows(agent: Agent, trust: TrustStore) -> list[list[Any]]:
    batches = await agent.queue.peek(10, kinds=["alarm"])
    return [r for b in batches for r in wire.decode_body(wire.verify_frame(b.frame, trust)).tables["alarm"].rows]


async def _running(tmp_path: Path, alarm: str, clock: FakeClock) -> tuple[Agent, asyncio.Task[None], TrustStore]:
    signer = generate_key(tmp_path / "keys")
    (tmp_path / "archive.keys").write_text(generate_key(tmp_path / "archive", "archive").public_text + "\n")
    trust = TrustStore()
    trust.add(signer.public_raw)
    agent = Agent(parse_config(_config(tmp_path, alarm)), clock=clock, signer=signer)
    task = asyncio.create_task(agent.run(), name="test.agent")
    async with asyncio.timeout(30):
        await agent.ready.wait()
    return agent, task, trust


async def _stop(agent: Agent, task: asyncio.Task[None]) -> None:
    agent.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_alarm_is_stored_without_waiting_for_the_flush_tick(tmp_path: Path) -> None:
    """A sample over the limit puts a signed alarm batch in the buffer while the clock stands still."""
    clock = FakeClock()
    agent, task, trust = await _running(tmp_path, "high = 1.0", clock)
    try:
        now = int(clock.time() * 1000)
        agent._sink([Sample("gas1.ch4", now, 1.3, Quality.GOOD)])

        rows = await _alarm_rows(agent, trust, until="raised", within_s=30)
    finally:
        await _stop(agent, task)

    assert [r[:4] for r in rows] == [["gas1.ch4", now, "high", "reset"], ["gas1.ch4", now, "high", "raised"]]


async def test_timer_path_raises_when_the_device_is_silent(tmp_path: Path) -> None:
    """With no sample at all, the bad-quality alarm is stored when its deadline passes on the clock."""
    clock = FakeClock()
    agent, task, trust = await _running(tmp_path, "bad_quality_s = 5", clock)
    try:
        start = int(clock.time() * 1000)
        await clock.advance(4.0)
        assert all(r[3] == "reset" for r in await _stored_alarm_rows(agent, trust))
        await clock.advance(1.5)

        rows = await _alarm_rows(agent, trust, until="raised", within_s=30)
    finally:
        await _stop(agent, task)

    assert [r[:4] for r in rows] == [["gas1.ch4", start, "bad_quality", "reset"],
                                     ["gas1.ch4", start + 5_000, "bad_quality", "raised"]]
