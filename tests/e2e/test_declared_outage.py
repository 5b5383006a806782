"""kill -9 of a real agent process: the next run declares the collection gap, signed, and it reaches the archive."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from agent.demo.localbroker import Mosquitto
from agent.demo.simulator import SimulatedPlc
from backend.receiver import ReceiverStore
from tests.e2e.harness import Gateway, Process, agent_process, log_events, modbus_device, wait_until
from tests.e2e.test_spine import TAGS, _buffer_head, _drain, plc, receiver  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def test_kill_9_then_restart_declares_the_collection_gap_at_the_receiver(
    broker: Mosquitto, plc: SimulatedPlc, receiver: tuple[Gateway, Process]  # noqa: F811 - fixtures
) -> None:
    """An agent collecting from a PLC is killed with SIGKILL; the restarted agent's first gap batch carries an
    outage row (unclean_stop) from the t1 of the last batch committed before the kill to the first new
    sample, naming the configured tags; the receiver stores it with the rest of the chain, nothing missing."""
    gw, _ = receiver
    gw.write_config(mqtt_port=broker.port, devices=modbus_device("plc1", plc.port, TAGS))
    first = agent_process(gw, "first.log")
    first.start()
    wait_until(lambda: (_buffer_head(gw) or 0) >= 5, 60, "the first run to commit batches")
    first.kill9()
    with sqlite3.connect(f"file:{gw.buffer_path}?mode=ro", uri=True) as db:
        killed_at = int(db.execute("SELECT v FROM meta WHERE k = 'last_t1_ms'").fetchone()[0])
    second = agent_process(gw, "second.log")
    second.start()
    wait_until(lambda: log_events(gw.root / "second.log", "batcher_outage_declared"), 60,
               "the restarted agent to declare the outage")
    time.sleep(1.0)
    second.terminate()
    last = _drain(gw, broker.port)

    (event,) = log_events(gw.root / "second.log", "batcher_outage_declared")
    with sqlite3.connect(gw.root / "receiver.sqlite") as db:
        rows = db.execute("SELECT gap_seq, from_ms, to_ms, reason, tags FROM declared_outages WHERE gw = ?",
                          (gw.id,)).fetchall()
        kinds = dict(db.execute("SELECT seq, kind FROM batches WHERE gw = ?", (gw.id,)).fetchall())
    assert len(rows) == 1
    seq, from_ms, to_ms, reason, tags = rows[0]
    assert seq == event["seq"]
    assert kinds[seq] == "gap"
    assert reason == "unclean_stop"
    assert from_ms == killed_at
    assert killed_at <= to_ms
    assert json.loads(tags) == sorted(f"plc1.{name}" for name, _, _ in TAGS)
    assert sorted(kinds) == list(range(1, last + 1))
    with ReceiverStore(gw.root / "receiver.sqlite") as store:
        report = store.report()["gateways"][gw.id]
    assert report["declared_outages"] == [{"from_ms": from_ms, "to_ms": to_ms, "reason": "unclean_stop",
                                           "tags_count": len(TAGS)}]
