"""End to end: an alarm raised while a large backlog drains reaches the receiver ahead of that backlog.

Real processes and peers, through the integrator's harness (tests/e2e/harness.py): a simulated Modbus PLC,
the agent (``mine-agent run``), Mosquitto, and the reference receiver (``mine-backend receive``). Before the
agent starts, its buffer is filled with a backlog of signed data batches, as after a long link outage. Once
the receiver is visibly draining that backlog, the PLC's methane reading goes over the alarm limit. The
receiver's insertion order (its ``records.id``) shows what arrived when. The agent reaches the broker
through a proxy adding 25 ms each way (tests/pipeline/latency_proxy.py): on bare loopback the broker's queue
towards the receiver, not the gateway, would decide the order.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.demo.localbroker import free_port
from agent.demo.simulator import SimulatedPlc
from agent.protocol import wire
from agent.protocol.tables import WIN_COLUMNS
from tests.e2e.harness import Gateway, LoopThread, agent_process, modbus_device, receiver_process, wait_until
from tests.peers.mosquitto import Mosquitto
from tests.pipeline.latency_proxy import LatencyProxy

BACKLOG = 3000
ROWS = 5
LINK_DELAY_S = 0.025  # one way: a 50 ms round trip, so the gateway's uplink, not the receiver, sets the pace
T0 = 1_700_000_000_000


@pytest.fixture
def plc(peers: LoopThread) -> Iterator[SimulatedPlc]:
    sim = SimulatedPlc(port=free_port(), registers=8)
    peers.call(sim.start())
    yield sim
    peers.call(sim.stop())


def _set_ch4(peers: LoopThread, plc: SimulatedPlc, value: float) -> None:
    peers.call(plc.write(0, list(struct.unpack(">2H", struct.pack(">f", value)))))


def _prefill(gw: Gateway, batches: int, rows: int) -> None:
    """Append ``batches`` signed data batches to the gateway's buffer, as an outage would leave them."""
    from buffer import DiskQueue, QueuedBatch

    gw.state.mkdir(parents=True, exist_ok=True)
    queue = DiskQueue(gw.buffer_path, max_bytes=1 << 30, frame_tags=wire.frame_tags, sync="normal")
    queue.open()
    try:
        seq, prev = queue.chain_head()
        tags = [f"old{i}.t" for i in range(rows)]
        for k in range(batches):
            t0 = T0 + k * 10_000
            table = wire.Table(WIN_COLUMNS, [[i, 0, 10_000, 10, 10, 0, 1.0, 2.0, 1.5, 1.7, 0, 10, 1.5, 0.3, 1.0,
                                              t0, t0 + 9_000, t0, t0 + 9_000, 0] for i in range(rows)])
            body = wire.encode_body(tags, {"win": table}, t0, "zstd")
            seq += 1
            batch = wire.encode_frame(gw.signer, gw=gw.id, seq=seq, prev=prev, created=t0, t0=t0, t1=t0 + 10_000,
                                      kind="data", enc="zstd", body=body)
            queue.append(QueuedBatch(seq=seq, kind="data", created_ms=t0, t0_ms=t0, t1_ms=t0 + 10_000,
                                     records=rows, hash=batch.hash, frame=batch.frame))
            prev = batch.hash
    finally:
        queue.close()


def _arrivals(db_path: Path, gw: str) -> list[tuple[int, str, int]]:
    """(seq, kind, first records.id) per stored batch, in the order the receiver stored them."""
    if not db_path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                "SELECT b.seq, b.kind, min(r.id) FROM batches b JOIN records r ON r.gw = b.gw AND r.seq = b.seq "
                "WHERE b.gw = ? GROUP BY b.seq ORDER BY min(r.id)", (gw,)).fetchall()
    except sqlite3.Error:
        return []
    return [(int(s), str(k), int(i)) for s, k, i in rows]


def _alarm_rows(db_path: Path, gw: str) -> list[dict[str, Any]]:
    import json

    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
        return [json.loads(d) for (d,) in db.execute("SELECT data FROM records WHERE gw = ? AND tbl = 'alarm'",
                                                      (gw,))]


@pytest.mark.slow
def test_alarm_overtakes_a_draining_backlog(
    tmp_path: Path, broker: Mosquitto, plc: SimulatedPlc, peers: LoopThread
) -> None:
    """The alarm batch is stored by the receiver while most of the older backlog is still on its way."""
    gw = Gateway(tmp_path)
    _prefill(gw, BACKLOG, ROWS)
    _set_ch4(peers, plc, 0.4)
    rx = receiver_process(tmp_path, broker.url, gw.trust_file)
    rx.start()
    devices = modbus_device("plc1", plc.port, [("ch4", 0, "float32")], poll_s=0.1, raw=False)
    devices += '\n[[alarms]]\ntag = "plc1.ch4"\nhigh = 1.0\n'
    link = LatencyProxy(broker.port, LINK_DELAY_S)
    peers.call(link.__aenter__())
    gw.write_config(mqtt_port=link.port, devices=devices)
    agent = agent_process(gw)
    agent.start()
    db = tmp_path / "receiver.sqlite"
    try:
        wait_until(lambda: sum(1 for s, _, _ in _arrivals(db, gw.id) if s <= BACKLOG) >= 50, 60,
                   "the receiver to start storing the backlog", interval=0.05)
        _set_ch4(peers, plc, 1.5)
        wait_until(lambda: [a for a in _arrivals(db, gw.id) if a[1] == "alarm"], 60, "the alarm batch",
                   interval=0.05)
        wait_until(lambda: sum(1 for s, _, _ in _arrivals(db, gw.id) if s <= BACKLOG) == BACKLOG, 120,
                   "the whole backlog", interval=0.5)
    finally:
        agent.terminate()
        rx.terminate()
        peers.call(link.__aexit__(None, None, None))

    arrivals = _arrivals(db, gw.id)
    alarm_at = next(i for i, (_, kind, _) in enumerate(arrivals) if kind == "alarm")
    backlog_after = sum(1 for s, _, _ in arrivals[alarm_at:] if s <= BACKLOG)
    (row,) = [r for r in _alarm_rows(db, gw.id) if r["state"] == "raised"]
    assert (row["alarm"], row["value"], row["limit"]) == ("high", 1.5, 1.0)
    # Raised after 50 of 3000 backlog batches were stored: nearly all of the backlog must come after it.
    assert backlog_after > BACKLOG // 2, f"only {backlog_after} backlog batches arrived after the alarm"
