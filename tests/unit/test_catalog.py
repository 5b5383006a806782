"""The signed tag catalogue: made from the configuration, stored as a ``catalog`` batch when it differs from
the one last committed (across restarts), and named by the ``cat`` of every later batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.batcher import Batcher, catalog_rows
from agent.core.clock import FakeClock
from agent.core.errors import ConfigError
from agent.demo.localbroker import free_port
from agent.pipeline.pipeline import PipelineOutput
from agent.protocol import wire
from agent.protocol.signing import BatchSigner, generate_key
from agent.protocol.tables import CATALOG_COLUMNS, CATALOG_TABLE
from agent.runtime import Agent
from buffer import AsyncDiskQueue
from config.loader import parse_config

T0 = 1_700_000_000_000


def _config(tmp_path: Path, *, unit: str = "%CH4", extra: str = "") -> str:
    archive_keys = tmp_path / "archive.keys"  # the default ack mode verifies acks with the archive's key
    if not archive_keys.exists():
        archive_keys.write_text(BatchSigner(Ed25519PrivateKey.generate()).public_text + "\n")
    return f"""
[gateway]
id = "gw-cat"
key_file = "{tmp_path / 'keys' / 'gateway.key'}"
state_dir = "{tmp_path / 'state'}"
[mqtt]
host = "127.0.0.1"
port = {free_port()}
archive_keys_file = "{archive_keys}"
[buffer]
max_bytes = "16 MiB"
[pipeline]
batch_interval_s = 1.0
[devices.gas1]
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {free_port()}
poll_interval_s = 1.0
[[devices.gas1.tags]]
name = "ch4"
address = 0
type = "float32"
unit = "{unit}"
description = "Methane at the face"
location = "north heading, level -320"
low = 0.0
high = 5.0
[[devices.gas1.tags]]
name = "flow"
address = 2
scale = 0.1
offset = -4.0
[devices.hoist]
protocol = "opcua"
url = "opc.tcp://127.0.0.1:{free_port()}"
[[devices.hoist.tags]]
name = "speed"
node = "ns=2;s=Hoist.Speed"
unit = "m/s"
high = 12.0
[[calculated]]
name = "ch4_mean"
op = "mean"
inputs = ["gas1.ch4"]
unit = "%CH4"
{extra}
"""


def test_catalog_rows_carry_each_tags_metadata(tmp_path: Path) -> None:
    """One row per tag, sorted by name, in the catalog columns; nil where a driver has no such setting."""
    rows = [dict(zip(CATALOG_COLUMNS, r, strict=True)) for r in catalog_rows(parse_config(_config(tmp_path)))]

    assert rows == [
        {"tag": "calc.ch4_mean", "unit": "%CH4", "type": None, "description": None, "scale": None, "offset": None,
         "low": None, "high": None, "location": None},
        {"tag": "gas1.ch4", "unit": "%CH4", "type": "float32", "description": "Methane at the face", "scale": 1.0,
         "offset": 0.0, "low": 0.0, "high": 5.0, "location": "north heading, level -320"},
        {"tag": "gas1.flow", "unit": None, "type": "uint16", "description": None, "scale": 0.1, "offset": -4.0,
         "low": None, "high": None, "location": None},
        {"tag": "hoist.speed", "unit": "m/s", "type": None, "description": None, "scale": None, "offset": None,
         "low": None, "high": 12.0, "location": None},
    ]


@pytest.mark.parametrize("tag", [
    'low = 6.0\nhigh = 5.0\n', 'description = ""\n', f'location = "{"x" * 1025}"\n', "low = nan\n",
], ids=["empty range", "empty description", "long location", "nan"])
def test_catalog_settings_are_checked(tmp_path: Path, tag: str) -> None:
    """An empty plausible range, an empty or oversized text, a non-finite limit: refused with the tag's key."""
    flow = '[[devices.gas1.tags]]\nname = "flow"'
    text = _config(tmp_path).replace(flow, f"{flow}\n{tag}")

    with pytest.raises(ConfigError):
        parse_config(text)


async def _batcher(path: Path, signer: BatchSigner) -> tuple[AsyncDiskQueue, Batcher]:
    q = AsyncDiskQueue(path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags, sync="normal",
                       min_free_bytes=0)
    await q.open()
    b = Batcher("gw-cat", signer, q, catalog_state=path / "catalog.json")
    await b.open()
    return q, b


def _raw(i: int) -> PipelineOutput:
    return PipelineOutput(raw=[["gas1.ch4", T0 + i, 0.4, 0, None]])


async def _all(q: AsyncDiskQueue) -> list[wire.Batch]:
    return [wire.open_frame(b.frame) for b in await q.peek(100)]


async def test_catalogue_is_stored_once_and_named_by_later_batches(tmp_path: Path) -> None:
    """First start: the catalogue goes first, cat 0; later batches name it. A restart with the same
    catalogue sends none; a changed one is sent (naming the previous one) and named from then on."""
    signer = generate_key(tmp_path / "keys")
    rows = catalog_rows(parse_config(_config(tmp_path)))
    q, b = await _batcher(tmp_path, signer)
    try:
        b.set_catalog(rows)
        await b.submit(_raw(1))
    finally:
        await q.close()
    q, b = await _batcher(tmp_path, signer)
    try:
        b.set_catalog(rows)
        await b.submit(_raw(2))
        b.set_catalog(catalog_rows(parse_config(_config(tmp_path, unit="ppm"))))
        await b.submit(_raw(3))
        stored = await _all(q)
    finally:
        await q.close()

    assert [(x.seq, x.kind, x.cat) for x in stored] == [
        (1, "catalog", 0), (2, "data", 1), (3, "data", 1), (4, "catalog", 1), (5, "data", 4)]
    first = wire.decode_body(stored[0]).tables["catalog"]
    assert first.cols == CATALOG_COLUMNS
    assert [r[:2] for r in first.rows] == [[r[0], r[1]] for r in rows]
    assert stored[0].t0 == stored[0].t1
    changed = wire.decode_body(stored[3]).tables["catalog"].rows
    assert [r[1] for r in changed if r[0] == "gas1.ch4"] == ["ppm"]
    assert json.loads((tmp_path / "catalog.json").read_text())["seq"] == 4


async def test_catalogue_is_sent_again_when_the_buffer_chain_is_behind_it(tmp_path: Path) -> None:
    """A remembered catalogue seq the buffer's chain has not reached (a buffer replaced by an older or a new
    one) is not trusted: the catalogue is sent again."""
    signer = generate_key(tmp_path / "keys")
    rows: list[list[Any]] = catalog_rows(parse_config(_config(tmp_path)))
    q, b = await _batcher(tmp_path, signer)
    try:
        b.set_catalog(rows)
        await b.submit(_raw(1))
    finally:
        await q.close()
    state = json.loads((tmp_path / "catalog.json").read_text())
    (tmp_path / "catalog.json").write_text(json.dumps({**state, "seq": 99}))
    q, b = await _batcher(tmp_path, signer)
    try:
        b.set_catalog(rows)
        await b.submit(_raw(2))
        stored = await _all(q)
    finally:
        await q.close()

    assert [(x.seq, x.kind, x.cat) for x in stored] == [(1, "catalog", 0), (2, "data", 1), (3, "catalog", 0),
                                                         (4, "data", 3)]


async def test_catalogue_is_sent_again_when_the_buffer_lost_its_batch(tmp_path: Path) -> None:
    """A buffer that lost the catalogue batch before it was delivered (here: the store file is gone, its chain
    head survives) declares the loss, and the catalogue is sent again instead of being named as lost."""
    signer = generate_key(tmp_path / "keys")
    rows: list[list[Any]] = catalog_rows(parse_config(_config(tmp_path)))
    q, b = await _batcher(tmp_path, signer)
    try:
        b.set_catalog(rows)
        await b.submit(_raw(1))
    finally:
        await q.close()
    (tmp_path / "buffer.sqlite").unlink()
    q, b = await _batcher(tmp_path, signer)
    try:
        b.set_catalog(rows)
        await b.submit(_raw(2), final=True)
        stored = await _all(q)
    finally:
        await q.close()

    assert [(x.seq, x.kind, x.cat) for x in stored] == [(3, "gap", 0), (4, "catalog", 0), (5, "data", 4)]


async def test_the_running_agent_sends_its_catalogue_and_a_changed_one_after_a_reload(tmp_path: Path) -> None:
    """Start: a catalog batch before anything else; a reload that changes a unit: a new one."""
    clock = FakeClock()
    signer = generate_key(tmp_path / "keys")
    agent = Agent(parse_config(_config(tmp_path)), clock=clock, signer=signer)
    task = asyncio.create_task(agent.run(), name="test.agent")
    try:
        async with asyncio.timeout(30):
            await agent.ready.wait()
            while not await agent.queue.peek(10, kinds=["catalog"]):
                await clock.advance(1.0)
            await agent.apply(parse_config(_config(tmp_path, unit="ppm")))
            while len(await agent.queue.peek(10, kinds=["catalog"])) < 2:
                await clock.advance(1.0)
        catalogs = [wire.open_frame(b.frame) for b in await agent.queue.peek(10, kinds=["catalog"])]
    finally:
        agent.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    assert [(c.seq, c.cat) for c in catalogs] == [(1, 0), (catalogs[1].seq, 1)]
    units = {r[0]: r[1] for r in wire.decode_body(catalogs[1]).tables["catalog"].rows}
    assert units["gas1.ch4"] == "ppm"


def _many_tags(tmp_path: Path, count: int, text: str) -> str:
    """The test configuration with ``count`` more tags on gas1, each with description and location ``text``."""
    more = "".join(f'[[devices.gas1.tags]]\nname = "t{i}"\naddress = {100 + i}\ndescription = "{text}"\n'
                   f'location = "{text}"\n' for i in range(count))
    return _config(tmp_path).replace("[devices.hoist]", f"{more}[devices.hoist]")


def test_a_catalogue_beyond_one_batch_is_refused_by_validation(tmp_path: Path) -> None:
    """The catalogue is one batch (every later batch names its seq), so it is not split: a configuration
    whose catalogue would exceed the frame bound is refused, saying why and what to do."""
    with pytest.raises(ConfigError) as caught:
        parse_config(_many_tags(tmp_path, 1400, "€" * 1024))
    assert "the tag catalogue does not fit one batch" in str(caught.value)
    assert "shorten descriptions and locations" in str(caught.value)


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_the_largest_catalogue_validation_accepts_is_a_batch_a_receiver_accepts(
        tmp_path: Path, compression: str) -> None:
    """Just inside the bound (long descriptions of 3-byte characters), the catalogue batch opens and decodes
    as a receiver does, even uncompressed, with a row per tag."""
    rows = catalog_rows(parse_config(_many_tags(tmp_path, 1300, "€" * 1024)))
    q = AsyncDiskQueue(tmp_path / "buffer.sqlite", max_bytes=1 << 30, frame_tags=wire.frame_tags, min_free_bytes=0)
    await q.open()
    try:
        b = Batcher("gw-cat", generate_key(tmp_path / "keys"), q, compression=compression)
        await b.open()
        b.set_catalog(rows)
        await b.flush()
        (stored,) = await q.peek(1)
    finally:
        await q.close()
    batch = wire.open_frame(stored.frame)
    assert batch.kind == "catalog"
    assert len(wire.decode_body(batch).tables[CATALOG_TABLE].rows) == len(rows) == 1304
