"""The spine end to end: simulated PLC -> agent -> Mosquitto -> reference receiver, through real processes.

Every test ends by draining the agent's buffer (an agent started with no devices sends what is stored and
makes nothing new) and then reads the receiver's report, which is what a regulator would see.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.demo.localbroker import Mosquitto, free_port
from agent.demo.simulator import SimulatedPlc
from backend.receiver import ReceiverStore
from tests.e2e.harness import (
    Gateway,
    LoopThread,
    Process,
    agent_process,
    log_events,
    modbus_device,
    receiver_process,
    receiver_report,
    stopped_seq,
    wait_until,
)
from tests.peers.blackhole_proxy import BlackholeProxy

TAGS = [("a", 0, "uint16"), ("b", 1, "int16"), ("c", 2, "float32")]


@pytest.fixture
def plc(peers: LoopThread) -> Iterator[SimulatedPlc]:
    sim = SimulatedPlc(port=free_port(), registers=16)
    peers.call(sim.start())
    yield sim
    peers.call(sim.stop())


def _serve_step(peers: LoopThread, plc: SimulatedPlc, k: int) -> dict[str, Any]:
    """Put step ``k`` into the PLC: a = k, b = -k, c = k / 4 (exact in float32)."""
    c = k / 4
    regs = [k, struct.unpack(">H", struct.pack(">h", -k))[0], *struct.unpack(">2H", struct.pack(">f", c))]
    peers.call(plc.write(0, regs))
    return {"plc1.a": k, "plc1.b": -k, "plc1.c": c}


def _drain(gw: Gateway, mqtt_port: int, log_name: str = "drain.log", *, refused: int = 0) -> int:
    """Start the agent without devices so it only sends what its buffer holds; wait until the receiver has
    every batch up to the last one stored, then stop it. Returns that last seq. ``refused`` batches stay in
    the buffer: the archive never acknowledges a frame it refused, so the gateway keeps it.

    The drain uses end-to-end acknowledgements (the default) so that a receiver still re-subscribing after a
    broker restart cannot make the broker drop what the drain sends: what is checked is the run before it.
    """
    gw.write_config(mqtt_port=mqtt_port, devices="", mqtt_extra="ack_timeout_s = 3")
    drain = agent_process(gw, log_name)
    drain.start()
    try:
        wait_until(lambda: _buffer_head(gw), 30, "the drain agent to open the buffer")
        # Its first flush may append a gap batch (drops found at start, or the collection gap of an unclean
        # stop): let it happen before judging the buffer drained.
        wait_until(lambda: log_events(gw.root / log_name, "agent_started"), 30, "the drain agent to start")
        time.sleep(0.5)
        wait_until(lambda: _buffer_rows(gw) == refused, 60, "the buffer to drain", interval=0.2)
        # The drain may itself append (a gap batch declaring drops found at start): wait for the final head.
        wait_until(lambda: receiver_report(gw.root)["gateways"].get(gw.id, {}).get("last_seq", 0)
                   >= (_buffer_head(gw) or 0), 30, "the receiver to store the last batch", interval=0.3)
    finally:
        drain.terminate()
    return int(_buffer_head(gw) or 0)


def _buffer_head(gw: Gateway) -> int | None:
    if not gw.buffer_path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{gw.buffer_path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute("SELECT max(seq) FROM batches").fetchone()
            head = db.execute("SELECT v FROM meta WHERE k = 'head_seq'").fetchone()
    except sqlite3.Error:
        return None
    values = [v for v in (row[0] if row else None, head[0] if head else None) if v is not None]
    return max(values) if values else None


def _buffer_rows(gw: Gateway) -> int:
    with sqlite3.connect(f"file:{gw.buffer_path}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT count(*) FROM batches").fetchone()[0])


def _scrape(port: int) -> dict[str, float]:
    """The running agent's Prometheus metrics, parsed as a scraper would, summed over labels."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def _assert_complete(report: dict[str, Any], gw: Gateway, last_seq: int) -> None:
    r = report["gateways"][gw.id]
    assert (r["missing"], r["rejected"], r["chain_breaks"], r["declared_gaps"]) == ([], [], [], [])
    assert (r["batches"], r["last_seq"]) == (last_seq, last_seq)


@pytest.fixture
def receiver(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Gateway, Process]]:
    gw = Gateway(tmp_path)
    rx = receiver_process(tmp_path, broker.url, gw.trust_file)
    rx.start()
    yield gw, rx
    rx.terminate()


@pytest.mark.slow
def test_every_window_arrives_once_with_the_values_served(
    broker: Mosquitto, plc: SimulatedPlc, peers: LoopThread, receiver: tuple[Gateway, Process]
) -> None:
    """Windows produced arrive exactly once after dedup, and every value is one the PLC served."""
    gw, _ = receiver
    gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", plc.port, TAGS))
    served: dict[str, set[Any]] = {"plc1.a": {0}, "plc1.b": {0}, "plc1.c": {0.0}}
    agent = agent_process(gw)
    agent.start()
    wait_until(lambda: (_buffer_head(gw) or 0) >= 1, 30, "the first batch")
    for k in range(1, 31):
        for tag, value in _serve_step(peers, plc, k).items():
            served[tag].add(value)
        time.sleep(0.15)
    metrics = _scrape(gw.health_port)
    agent.terminate()
    produced = stopped_seq(gw.root / "agent.log")
    last = _drain(gw, broker.port)

    _assert_complete(receiver_report(gw.root), gw, last)
    assert last == produced + 1  # the drain, configured without devices, stores its own (empty) tag catalogue
    with ReceiverStore(gw.root / "receiver.sqlite") as store:
        rows = list(store.records(gw=gw.id, limit=1_000_000))
    raw = [r for r in rows if r["table"] == "raw" and r["quality"] == 0]
    windows = [r for r in rows if r["table"] == "win"]
    assert len(raw) > 50
    assert all(r["value"] in served[r["tag"]] for r in raw)
    assert metrics["mine_agent_device_polls_total"] > 20
    assert metrics["mine_agent_device_errors_total"] == 0
    assert metrics["mine_agent_uplink_connected"] == 1
    keys = [(w["tag"], w["start"]) for w in windows]
    assert len(keys) == len(set(keys)), "a window arrived twice"
    for w in windows:
        in_window = [r["value"] for r in raw if r["tag"] == w["tag"] and w["start"] <= r["ts"] < w["start"] + 1000]
        assert w["good"] == len(in_window)
        if in_window:
            assert (w["min"], w["max"]) == (min(in_window), max(in_window))


@pytest.mark.slow
def test_broker_down_for_20_s_leaves_no_sequence_gap(
    broker: Mosquitto, plc: SimulatedPlc, receiver: tuple[Gateway, Process]
) -> None:
    """Batches made while the broker is dead are kept on disk and delivered when it returns.

    The test broker keeps no sessions across a restart, like a broker that crashed and lost its state, so
    batches it acknowledges before the receiver has re-subscribed are dropped by the broker. Only the
    end-to-end acknowledgement mode (the agent deletes a batch when the backend confirms it) guarantees no gap
    against such a broker, so that is the mode under test here (the default).
    """
    gw, _ = receiver
    backend_ack = "ack_timeout_s = 5"
    gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", plc.port, TAGS), mqtt_extra=backend_ack)
    agent = agent_process(gw)
    agent.start()
    wait_until(lambda: (receiver_report(gw.root)["gateways"].get(gw.id) or {}).get("batches", 0) >= 5, 30,
               "first batches")
    broker.kill()
    time.sleep(20)
    broker.start()
    time.sleep(3)
    agent.terminate()
    last = _drain(gw, broker.port)

    _assert_complete(receiver_report(gw.root), gw, last)
    assert last >= 60  # about 5 batches a second for the whole run, outage included


@pytest.mark.slow
def test_black_holed_link_is_noticed_and_leaves_no_gap(
    broker: Mosquitto, plc: SimulatedPlc, peers: LoopThread, receiver: tuple[Gateway, Process]
) -> None:
    """A link that silently stops forwarding (no reset) is detected by publish timeout; nothing is lost."""
    gw, _ = receiver
    proxy = BlackholeProxy(broker.port)
    peers.call(proxy.__aenter__())
    try:
        gw.write_config(mqtt_port=proxy.port, devices=modbus_device("plc1", plc.port, TAGS))
        agent = agent_process(gw)
        agent.start()
        wait_until(lambda: (receiver_report(gw.root)["gateways"].get(gw.id) or {}).get("batches", 0) >= 5, 30,
                   "first batches")
        peers.loop.call_soon_threadsafe(proxy.blackhole)
        wait_until(lambda: log_events(gw.root / "agent.log", "uplink_down"), 20, "the uplink to notice the dead link")
        time.sleep(2)
        peers.loop.call_soon_threadsafe(proxy.heal)
        wait_until(lambda: log_events(gw.root / "agent.log", "uplink_restored"), 30, "the uplink to reconnect")
        time.sleep(2)
        agent.terminate()
    finally:
        peers.call(proxy.__aexit__(None, None, None))
    last = _drain(gw, broker.port)

    _assert_complete(receiver_report(gw.root), gw, last)


@pytest.mark.slow
@pytest.mark.parametrize("kills", [5, pytest.param(30, marks=[pytest.mark.soak, pytest.mark.timeout(3600)])])
def test_kill_9_while_publishing_then_restart_continues_the_sequence(
    broker: Mosquitto, plc: SimulatedPlc, receiver: tuple[Gateway, Process], kills: int
) -> None:
    """After repeated kill -9 at random moments the sequence and the chain continue: no gap, no break,
    no seq reused (CI runs 5 kills; ``-m soak`` runs 30)."""
    gw, _ = receiver
    gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", plc.port, TAGS))
    rng = random.Random(2)
    for i in range(kills):
        agent = agent_process(gw, f"agent-{i}.log")
        agent.start()
        wait_until(lambda: _buffer_head(gw), 30, "the agent to open its buffer")
        time.sleep(rng.uniform(1.0, 2.5))
        agent.kill9()
    last = _drain(gw, broker.port)

    _assert_complete(receiver_report(gw.root), gw, last)


@pytest.mark.slow
def test_altered_batch_is_rejected_and_deleted_batch_shows_as_gap(
    broker: Mosquitto, plc: SimulatedPlc, receiver: tuple[Gateway, Process]
) -> None:
    """Tampering with the buffer file on the gateway is visible at the backend: an altered batch fails its
    signature, a removed one leaves a missing range."""
    gw, _ = receiver
    broker.stop()
    gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", plc.port, TAGS))
    agent = agent_process(gw)
    agent.start()
    wait_until(lambda: (_buffer_head(gw) or 0) >= 8, 30, "eight batches in the buffer")
    agent.terminate()
    with sqlite3.connect(gw.buffer_path) as db:
        frame = bytearray(db.execute("SELECT frame FROM batches WHERE seq = 3").fetchone()[0])
        frame[len(frame) // 2] ^= 0x01  # a tamperer who also fixes up the row's checksum
        db.execute("UPDATE batches SET frame = ?, crc = ? WHERE seq = 3", (bytes(frame), zlib.crc32(frame)))
        db.execute("DELETE FROM batches WHERE seq = 5")
    broker.start()
    last = _drain(gw, broker.port, refused=1)  # the altered seq 3 is refused, so never acknowledged

    r = receiver_report(gw.root)["gateways"][gw.id]
    assert [x["seq"] for x in r["rejected"]] == [3]
    assert "signature" in r["rejected"][0]["reason"]
    assert [5, 5] in r["missing"]
    assert r["last_seq"] == last


@pytest.mark.slow
def test_sigterm_under_load_stops_cleanly_and_restart_leaves_no_gap(
    broker: Mosquitto, plc: SimulatedPlc, receiver: tuple[Gateway, Process]
) -> None:
    """SIGTERM while polling and publishing stops within 5 s with exit 0; after a restart the receiver has an
    unbroken sequence, including the windows that were open at the stop."""
    _sigterm_under_load(broker, plc, receiver)


@pytest.mark.soak
@pytest.mark.parametrize("run", range(50))
def test_sigterm_under_load_50_times(
    run: int, broker: Mosquitto, plc: SimulatedPlc, receiver: tuple[Gateway, Process]
) -> None:
    """On demand (``pytest -m soak -k sigterm_under_load_50``): the stop above, 50 times, each with its own
    broker, PLC and receiver. It once failed about one run in ten (a driver dropped its cancellation)."""
    _sigterm_under_load(broker, plc, receiver)


def _sigterm_under_load(broker: Mosquitto, plc: SimulatedPlc, receiver: tuple[Gateway, Process]) -> None:
    gw, _ = receiver
    gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", plc.port, TAGS, poll_s=0.1),
                    batch_interval_s=0.1)
    stops = []
    for i in range(3):
        agent = agent_process(gw, f"agent-{i}.log")
        agent.start()
        wait_until(lambda n=3 * (i + 1): (_buffer_head(gw) or 0) >= n, 30, "batches being made")
        stops.append(agent.terminate())
        assert agent.proc is not None
        assert agent.proc.returncode == 0, agent.tail()
    last = _drain(gw, broker.port)

    assert max(stops) < 5.0
    _assert_complete(receiver_report(gw.root), gw, last)
    assert last == stopped_seq(gw.root / "agent-2.log") + 1  # and the drain's own tag catalogue


def _dropped(gw: Gateway) -> tuple[int, int]:
    with sqlite3.connect(f"file:{gw.buffer_path}?mode=ro", uri=True, timeout=5) as db:
        meta = dict(db.execute("SELECT k, v FROM meta WHERE k IN ('n:dropped_batches', 'n:dropped_records')"))
    return int(meta.get("n:dropped_batches", 0)), int(meta.get("n:dropped_records", 0))


@pytest.mark.slow
def test_full_buffer_drops_are_declared_exactly_at_the_receiver(
    tmp_path: Path, broker: Mosquitto, peers: LoopThread, receiver: tuple[Gateway, Process]
) -> None:
    """With a 1 MiB cap and the broker away, the oldest batches are dropped; the receiver's declared gaps
    add up to exactly the agent's drop counters and nothing is merely missing."""
    gw, _ = receiver
    big = SimulatedPlc(port=free_port(), registers=2000)
    peers.call(big.start())
    walk = asyncio.run_coroutine_threadsafe(big.random_walk(0.2, seed=3), peers.loop)
    try:
        broker.stop()
        tags = [(f"r{i}", i, "uint16") for i in range(2000)]
        gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", big.port, tags, poll_s=0.2),
                        max_bytes="1 MiB")
        agent = agent_process(gw)
        agent.start()
        wait_until(lambda: gw.buffer_path.exists() and _dropped(gw)[0] >= 3, 150, "the cap to drop batches",
                   interval=1.0)
        agent.terminate()
    finally:
        walk.cancel()
        peers.call(big.stop())
    broker.start()
    last = _drain(gw, broker.port)
    dropped_batches, dropped_records = _dropped(gw)

    r = receiver_report(gw.root)["gateways"][gw.id]
    assert (r["missing"], r["rejected"], r["chain_breaks"]) == ([], [], [])
    assert r["last_seq"] == last
    assert sum(g["batches"] for g in r["declared_gaps"]) == dropped_batches
    assert sum(g["records"] for g in r["declared_gaps"]) == dropped_records
