"""The archive's keys reach the uplink through the runtime: read at start, read again on every reload (even
one that changes nothing in [mqtt]), and a missing or broken file refuses the configuration before anything
changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.errors import ConfigError
from agent.protocol.signing import BatchSigner
from agent.runtime import Agent
from tests.service.standins import StandIns, make_config


@contextlib.asynccontextmanager
async def _running(agent: Agent) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(agent.run(), name="test.agent")
    try:
        async with asyncio.timeout(30):
            await agent.ready.wait()
        yield task
    finally:
        agent.stop()
        async with asyncio.timeout(30):
            await task


async def test_a_reload_reads_the_archive_keys_file_again(tmp_path: Path, signer: BatchSigner) -> None:
    """A new key written into archive_keys_file is what the uplink verifies with after a reload of the same
    configuration; the uplink itself is not restarted."""
    made = StandIns()
    config = make_config(tmp_path)
    keys_file = config.mqtt.archive_keys_file
    assert keys_file is not None
    agent = made.agent(config, signer=signer)
    async with _running(agent):
        before = made.uplinks[-1].archive_keys
        rotated = BatchSigner(Ed25519PrivateKey.generate())
        keys_file.write_text(keys_file.read_text() + rotated.public_text + "\n")
        result = await agent.apply(config)

    assert before is not None
    assert rotated.kid not in before
    assert rotated.kid in made.uplinks[-1].archive_keys  # type: ignore[operator]
    assert len(made.uplinks) == 1
    assert "uplink" not in result.restarted


@pytest.mark.parametrize(("content", "words"), [(None, "cannot read"), ("", "lists no key"),
                                                ("ed25519:not-base64\n", "base64")])
async def test_a_reload_with_a_broken_archive_keys_file_is_refused_before_anything_changes(
        tmp_path: Path, signer: BatchSigner, content: str | None, words: str) -> None:
    """Missing, empty or malformed: the reload raises ConfigError naming mqtt.archive_keys_file, and the uplink
    keeps the keys it had."""
    made = StandIns()
    config = make_config(tmp_path)
    keys_file = config.mqtt.archive_keys_file
    assert keys_file is not None
    agent = made.agent(config, signer=signer)
    async with _running(agent):
        before = made.uplinks[-1].archive_keys
        if content is None:
            keys_file.unlink()
        else:
            keys_file.write_text(content)
        with pytest.raises(ConfigError) as caught:
            await agent.apply(config)

    (problem,) = caught.value.problems
    assert problem.key == "mqtt.archive_keys_file"
    assert words in problem.message
    assert made.uplinks[-1].archive_keys is before


async def test_the_agent_does_not_start_without_its_archive_keys(tmp_path: Path, signer: BatchSigner) -> None:
    """At start a missing archive_keys_file stops the agent with the ConfigError, before the buffer is opened
    or any uplink exists."""
    made = StandIns()
    config = make_config(tmp_path)
    assert config.mqtt.archive_keys_file is not None
    config.mqtt.archive_keys_file.unlink()

    with pytest.raises(ConfigError) as caught:
        async with asyncio.timeout(30):
            await made.agent(config, signer=signer).run()

    assert caught.value.problems[0].key == "mqtt.archive_keys_file"
    assert made.queues == []
    assert made.uplinks == []
