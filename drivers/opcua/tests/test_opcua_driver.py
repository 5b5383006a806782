"""The driver against a real asyncua server on loopback (one server per module: it takes ~2 s to start)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from asyncua import ua

from agent.core.sample import Quality
from drivers.opcua.tests.helpers import device, running
from drivers.opcua.tests.peer import NAMESPACE, PlcServer, free_port, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
LIMIT = 4


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PlcServer]:
    server = PlcServer(free_port(), tmp_path_factory.mktemp("server-pki"), n_vars=12, limit=LIMIT)
    await server.start()
    yield server
    await server.stop()


def v(plc: PlcServer, i: int) -> str:
    return f"ns={plc.ns};s=Plc.v{i}"


async def test_subscribed_value_changes_arrive_with_source_timestamp(plc: PlcServer) -> None:
    """A value written on the server arrives as a GOOD sample stamped with its source timestamp."""
    cfg = device(plc.url, [{"name": "speed", "node": v(plc, 0)}], publishing_interval_s=0.05)
    async with running("hoist", cfg) as (_, sink):
        await wait_for(lambda: sink.has("hoist.speed", quality=Quality.GOOD))
        source = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
        await plc.write("v0", 3.25, source=source)
        await wait_for(lambda: sink.has("hoist.speed", 3.25))

    sample = next(s for s in sink.of("hoist.speed") if s.value == 3.25)
    assert (Quality.GOOD, int(source.timestamp() * 1000)) == (sample.quality, sample.ts_ms)


async def test_bad_status_becomes_bad_sample_named_by_status(plc: PlcServer) -> None:
    """A Bad status code from the server gives a BAD sample with no value and the status name as reason."""
    cfg = device(plc.url, [{"name": "t", "node": v(plc, 1)}], publishing_interval_s=0.05)
    async with running("d", cfg) as (_, sink):
        await wait_for(lambda: sink.has("d.t", quality=Quality.GOOD))
        await plc.write("v1", 0.0, status=ua.StatusCodes.BadSensorFailure)
        await wait_for(lambda: sink.has("d.t", quality=Quality.BAD))

    bad = next(s for s in sink.of("d.t") if s.quality is Quality.BAD)
    assert (bad.value, bad.reason) == (None, "BadSensorFailure")


async def test_uncertain_status_keeps_value_and_names_status(plc: PlcServer) -> None:
    """An Uncertain status keeps the value, marks it UNCERTAIN and names the status."""
    cfg = device(plc.url, [{"name": "t", "node": v(plc, 2), "mode": "poll"}], poll_interval_s=0.1)
    async with running("d", cfg) as (_, sink):
        await wait_for(lambda: sink.has("d.t", quality=Quality.GOOD))
        await plc.write("v2", 9.5, status=ua.StatusCodes.UncertainLastUsableValue)
        await wait_for(lambda: sink.has("d.t", quality=Quality.UNCERTAIN))

    s = next(s for s in sink.of("d.t") if s.quality is Quality.UNCERTAIN)
    assert (s.value, s.reason) == (9.5, "UncertainLastUsableValue")


async def test_poll_mode_reads_typed_values(plc: PlcServer) -> None:
    """Poll tags read Int32, Boolean and String nodes by numeric and string NodeIds."""
    tags = [
        {"name": "count", "node": f"ns={plc.ns};i=1001", "mode": "poll"},
        {"name": "running", "node": f"ns={plc.ns};s=Plc.running", "mode": "poll"},
        {"name": "mode", "node": f"ns={plc.ns};s=Plc.mode", "mode": "poll"},
    ]
    async with running("d", device(plc.url, tags, poll_interval_s=0.1)) as (_, sink):
        await wait_for(lambda: all(sink.last(f"d.{t}") is not None for t in ("count", "running", "mode")))

    assert [sink.last(f"d.{t}").value for t in ("count", "running", "mode")] == [7, True, "auto"]  # type: ignore[union-attr]


async def test_browse_path_and_namespace_uri_resolve(plc: PlcServer) -> None:
    """Tags addressed by browse path or by namespace URI (nsu=) resolve to the right nodes."""
    tags = [
        {"name": "by_path", "path": f"Objects/{plc.ns}:Plc/{plc.ns}:v3"},
        {"name": "by_uri", "node": f"nsu={NAMESPACE};s=Plc.v4"},
    ]
    async with running("d", device(plc.url, tags, publishing_interval_s=0.05)) as (_, sink):
        await wait_for(lambda: sink.last("d.by_path") is not None and sink.last("d.by_uri") is not None)

    assert [sink.last("d.by_path").value, sink.last("d.by_uri").value] == [3.0, 4.0]  # type: ignore[union-attr]


async def test_unknown_node_is_one_bad_sample_and_others_still_work(plc: PlcServer) -> None:
    """A node the server does not have gives a BAD sample named by status; other tags are unaffected."""
    tags = [{"name": "ghost", "node": f"ns={plc.ns};s=Plc.nothing"}, {"name": "ok", "node": v(plc, 5)}]
    async with running("d", device(plc.url, tags, publishing_interval_s=0.05)) as (driver, sink):
        await wait_for(lambda: sink.has("d.ok", 5.0))
        await wait_for(lambda: sink.last("d.ghost") is not None)
        failed = driver.stats.failed_items

    ghost = sink.last("d.ghost")
    assert ghost is not None
    assert (ghost.quality, ghost.reason, failed) == (Quality.BAD, "BadNodeIdUnknown", 1)


async def test_requests_are_split_to_the_servers_operation_limits(plc: PlcServer) -> None:
    """With limits of 4, ten subscribed, ten polled and ten browse-path tags all work in requests of <= 4."""
    tags = [{"name": f"s{i}", "node": v(plc, i)} for i in range(10)]
    tags += [{"name": f"p{i}", "node": v(plc, i), "mode": "poll"} for i in range(10)]
    tags += [
        {"name": f"b{i}", "path": f"Objects/{plc.ns}:Plc/{plc.ns}:v{i}", "mode": "poll"} for i in range(10)
    ]
    for i in range(10):
        await plc.write(f"v{i}", float(i))
    plc.requests.read.clear()
    plc.requests.monitored_items.clear()
    plc.requests.translate.clear()
    cfg = device(plc.url, tags, publishing_interval_s=0.05, poll_interval_s=0.1)
    async with running("d", cfg) as (driver, sink):
        await wait_for(lambda: all(sink.last(f"d.{t['name']}") is not None for t in tags))
        await wait_for(lambda: driver.stats.polls >= 3)
        limits = driver.stats.limits

    values = {s.tag: s.value for s in sink.samples}
    assert all(values[f"d.{p}{i}"] == float(i) for p in "spb" for i in range(10))
    assert limits.max_nodes_per_read == LIMIT
    assert max(plc.requests.read) <= LIMIT
    assert max(plc.requests.monitored_items) <= LIMIT
    assert max(plc.requests.translate) <= LIMIT
    assert len(plc.requests.monitored_items) >= 3


async def test_absolute_deadband_suppresses_small_changes(plc: PlcServer) -> None:
    """With an absolute deadband of 1.0, a change of 0.5 is not reported and a change of 2.0 is."""
    await plc.write("v6", 100.0)
    tag = {
        "name": "t",
        "node": v(plc, 6),
        "deadband": "absolute",
        "deadband_value": 1.0,
        "sampling_interval_s": 0,
    }
    async with running("d", device(plc.url, [tag], publishing_interval_s=0.05)) as (_, sink):
        await wait_for(lambda: sink.has("d.t", 100.0))
        await plc.write("v6", 100.5)
        await plc.write("v6", 102.0)
        await wait_for(lambda: sink.has("d.t", 102.0))

    assert [s.value for s in sink.of("d.t")] == [100.0, 102.0]


async def test_one_sink_call_per_publish_burst(plc: PlcServer) -> None:
    """Ten items changed together arrive in one sink call per publish, not one call per item."""
    tags = [{"name": f"s{i}", "node": v(plc, i)} for i in range(10)]
    cfg = device(plc.url, tags, publishing_interval_s=0.2)
    async with running("d", cfg) as (_, sink):
        await wait_for(lambda: len({s.tag for s in sink.samples}) == 10)
        for i in range(10):
            await plc.write(f"v{i}", 500.0 + i)
        await wait_for(lambda: all(sink.has(f"d.s{i}", 500.0 + i) for i in range(10)))

    carrying = [b for b in sink.bursts if any(isinstance(s.value, float) and s.value >= 500 for s in b)]
    # The ten writes take well under a millisecond and publishes are 200 ms apart, so they land in
    # one publish; two only if a publish falls exactly between two writes on a stalled machine.
    assert len(carrying) <= 2
    assert sum(len(b) for b in carrying) == 10


async def test_client_queue_overflow_is_counted(plc: PlcServer) -> None:
    """When a publish burst exceeds the gateway's queue, every dropped notification is counted."""
    tags = [{"name": f"s{i}", "node": v(plc, i)} for i in range(10)]
    # Bypass validation (which refuses a queue smaller than the tags' queues) to force an overflow.
    cfg = device(plc.url, tags, publishing_interval_s=0.2).model_copy(update={"client_queue_size": 2})
    async with running("d", cfg) as (driver, sink):
        await wait_for(lambda: driver.stats.notifications + driver.stats.client_queue_overflows >= 10)
        overflows = driver.stats.client_queue_overflows
        delivered = driver.stats.notifications

    assert overflows > 0
    assert overflows + delivered == 10
    assert delivered == len(sink.samples)
