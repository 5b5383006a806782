"""Pushes that validate: applied through Agent.apply with a health window, or rolled back by themselves."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.demo.localbroker import free_port
from agent.demo.simulator import SimulatedPlc
from agent.protocol.signing import generate_key
from tests.e2e.harness import env, log_events, receiver_process, wait_until
from tests.peers.mosquitto import Mosquitto
from tests.remote.conftest import HEALTH_WINDOW_S, RemoteGateway


def _buffer_rows(rg: RemoteGateway) -> int:
    with sqlite3.connect(f"file:{rg.gw.buffer_path}?mode=ro", uri=True, timeout=5) as db:
        return int(db.execute("SELECT count(*) FROM batches").fetchone()[0])


def test_device_that_cannot_be_reached_is_rolled_back(remote_gw: RemoteGateway) -> None:
    """A push adding a device nobody answers for is applied, fails its health window, and is rolled back:
    the device is stopped again, the running version stays, and the status says why."""
    rg = remote_gw
    dead = free_port()
    text = rg.toml(devices={"plc1": rg.plc_ports[0], "plc9": dead})
    rg.toml()
    before = rg.state()

    status = rg.push(rg.sign(text, version=7))

    assert status["_all"] == ["received", "rolled_back"]
    assert len(status["reasons"]) == 1
    assert status["reasons"][0].startswith(f"device 'plc9': no good reading within {HEALTH_WINDOW_S:g} s")
    assert status["changed"]["started"] == ["device:plc9"]
    assert status["running_version"] == 0
    applied = list(rg.applied_events())
    assert (applied[-2]["started"], applied[-1]["stopped"]) == (["device:plc9"], ["device:plc9"])
    assert "device:plc1" not in applied[-1]["restarted"] + applied[-2]["restarted"]
    after = rg.state()
    assert (after["version"], after["source"], after["highest_version"]) == (0, before["source"], 7)


def test_push_that_breaks_the_uplink_reports_after_rollback(tmp_path: Path, broker: Mosquitto,
                                                           plcs: list[SimulatedPlc],
                                                           request: pytest.FixtureRequest) -> None:
    """A push pointing MQTT at a dead port (one the local file allows a push to choose) cannot connect its
    uplink; it is rolled back to the working broker, its outcome still arrives, and the batches made meanwhile
    stay in the same buffer and are sent."""
    rg = RemoteGateway(tmp_path, broker, [p.port for p in plcs])
    dead = free_port()
    allowed = f'allowed_brokers = ["mqtt://127.0.0.1:{dead}"]'
    rg.toml(remote_extra=allowed)
    rg.start()
    try:
        # Delivered means acknowledged by the archive (the default ack mode): its receiver runs throughout.
        receiver = receiver_process(rg.gw.root, rg.broker.url, rg.gw.trust_file)
        receiver.start()
        request.addfinalizer(receiver.terminate)
        inode, head = rg.buffer_inode(), rg.buffer_head()
        text = rg.toml(mqtt_port=dead, remote_extra=allowed)
        rg.toml(remote_extra=allowed)

        status = rg.push(rg.sign(text, version=8))

        assert status["_all"] == ["received", "rolled_back"]
        assert len(status["reasons"]) == 1
        assert status["reasons"][0].startswith(f"uplink: not connected to the broker within {HEALTH_WINDOW_S:g} s")
        assert "uplink" in status["changed"]["restarted"]
        assert rg.buffer_inode() == inode
        wait_until(lambda: rg.buffer_head() > head + 5, 30, "batches to keep being stored")
        wait_until(lambda: _buffer_rows(rg) <= 3, 60, "the backlog made during the window to be delivered")
    finally:
        rg.stop()


def test_good_push_restarts_only_the_changed_device(remote_gw: RemoteGateway) -> None:
    """Changing one device's settings restarts that device only; the other keeps producing every window."""
    rg = remote_gw
    receiver = receiver_process(rg.gw.root, rg.broker.url, rg.gw.trust_file)
    receiver.start()
    try:
        both = {"plc1": rg.plc_ports[0], "plc2": rg.plc_ports[1]}
        assert rg.push(rg.sign(rg.toml(devices=both), version=11))["state"] == "applied"
        changed = rg.toml(devices=both).replace("timeout_s = 0.5", "timeout_s = 0.7", 2)
        changed = changed.replace("timeout_s = 0.7", "timeout_s = 0.5", 1)  # plc1's block keeps its value
        rg.toml()
        wait_until(lambda: _starts(rg, "plc1.a"), 60, "the receiver to store plc1's windows")
        first = _starts(rg, "plc1.a")[0]

        status = rg.push(rg.sign(changed, version=12))

        assert status["state"] == "applied"
        assert status["changed"] == {"started": [], "stopped": [], "restarted": ["device:plc2"]}
        until = status["ts"] + 3000
        wait_until(lambda: _starts(rg, "plc1.a")[-1] >= until, 60, "plc1's windows after the push to arrive")
        windows = [w for w in _starts(rg, "plc1.a") if first <= w <= until]
        assert windows[0] == first
        assert [b - a for a, b in itertools.pairwise(windows)] == [1000] * (len(windows) - 1)
    finally:
        receiver.terminate()


def _starts(rg: RemoteGateway, tag: str) -> list[int]:
    """Window starts of ``tag`` the receiver has stored, in order."""
    db = rg.gw.root / "receiver.sqlite"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("SELECT DISTINCT ts FROM records WHERE tbl = 'win' AND tag = ? ORDER BY ts",
                               (tag,)).fetchall()
    except sqlite3.Error:
        return []
    return [int(r[0]) for r in rows]


def test_trust_rotation_rewrites_the_default_trust_file(tmp_path: Path, broker: Mosquitto,
                                                        plcs: list[SimulatedPlc]) -> None:
    """Without ``trust_file`` the operator keys are ``<state_dir>/operator.trust``, and a rotation by push
    rewrites that file (the directory the service may write)."""
    rg = RemoteGateway(tmp_path, broker, [p.port for p in plcs])
    rg.use_default_trust_file()
    text = rg.toml()
    assert "trust_file" not in text
    rg.start()
    try:
        new_key = generate_key(rg.gw.root / "operator2", "operator")
        rotated = rg.push(rg.sign(text, version=20, trust=[new_key.public_text]))
        new_accepted = rg.push(rg.sign(text, version=21, signer=new_key))
    finally:
        rg.stop()

    assert (rotated["state"], new_accepted["state"]) == ("applied", "applied")
    assert (rg.gw.state / "operator.trust").read_text().splitlines()[1:] == [new_key.public_text]
    assert (rg.gw.state / "config" / "trust.prev").read_text() == rg.operator.public_text + "\n"


def test_trust_rotation_by_a_trusted_push(remote_gw: RemoteGateway) -> None:
    """A push signed by a trusted key may replace the operator keys: afterwards the old key is refused and
    the new one accepted."""
    rg = remote_gw
    new_key = generate_key(rg.gw.root / "operator2", "operator")
    text = rg.toml()

    rotated = rg.push(rg.sign(text, version=20, trust=[new_key.public_text]))
    old_refused = rg.push(rg.sign(text, version=21))
    new_accepted = rg.push(rg.sign(text, version=22, signer=new_key))

    assert rotated["state"] == "applied"
    assert rg.trust_file.read_text().splitlines()[1:] == [new_key.public_text]
    assert old_refused["reasons"] == [f"signature refused: unknown key id '{rg.operator.kid}' (hint: add the "
                                      "signer's public key to the trust file)"]
    assert new_accepted["state"] == "applied"


def test_pushed_config_survives_restart_until_the_local_file_changes(remote_gw: RemoteGateway) -> None:
    """After a restart the pushed configuration is still in force; once the technician edits the local file,
    the file wins at the next start."""
    rg = remote_gw
    both = {"plc1": rg.plc_ports[0], "plc2": rg.plc_ports[1]}
    pushed = rg.toml(devices=both)
    rg.toml()
    assert rg.push(rg.sign(pushed, version=30))["state"] == "applied"

    rg.stop()
    agent = rg.start("agent2.log")
    kept = log_events(agent.log, "config_from_push")
    rg.toml(pipeline_extra="batch_max_rows = 1234")
    rg.stop()
    agent = rg.start("agent3.log")
    local = log_events(agent.log, "config_local_file_wins")

    assert [e["version"] for e in kept] == [30]
    assert log_events(rg.gw.root / "agent2.log", "agent_started")[0]["devices"] == 2
    assert [e["version"] for e in local] == [30]
    assert log_events(agent.log, "agent_started")[0]["devices"] == 1
    assert (rg.state()["source"], rg.state()["version"], rg.state()["highest_version"]) == ("local", 0, 30)


def _reload(rg: RemoteGateway) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "reload", "--config", str(rg.gw.config_path),
                           "--timeout", "60"], capture_output=True, text=True, env=env(), timeout=90, check=False)


def test_local_reload_goes_through_validation_and_apply(remote_gw: RemoteGateway) -> None:
    """'mine-agent reload' refuses an invalid local edit (exit 1, nothing changes) and applies a valid one,
    restarting only what changed."""
    rg = remote_gw
    good = rg.toml(devices={"plc1": rg.plc_ports[0], "plc2": rg.plc_ports[1]})
    rg.write_local(good.replace("window_s = 1", "window_s = 7"))
    applied = len(rg.applied_events())

    refused = _reload(rg)
    rg.write_local(good)
    accepted = _reload(rg)

    assert refused.returncode == 1, refused.stderr
    assert '"state": "rejected"' in refused.stdout
    assert "pipeline.window_s: does not divide a day" in refused.stdout
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert '"state": "applied"' in accepted.stdout
    events = rg.applied_events()
    assert len(events) == applied + 1
    assert events[-1]["started"] == ["device:plc2"]
    assert rg.good_text() == good


def test_reload_keeps_a_push_while_the_local_file_is_unchanged(remote_gw: RemoteGateway) -> None:
    """A reload with the technician's file untouched since the push leaves the pushed configuration in force."""
    rg = remote_gw
    pushed = rg.toml(pipeline_extra="batch_max_rows = 999")
    rg.toml()
    assert rg.push(rg.sign(pushed, version=40))["state"] == "applied"

    kept = _reload(rg)

    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert '"state": "kept"' in kept.stdout
    assert rg.good_text() == pushed


def test_reload_without_a_running_agent_says_so(tmp_path: Path) -> None:
    """'mine-agent reload' for a gateway whose agent is not running fails with a hint, exit 1."""
    from tests.e2e.harness import Gateway

    gw = Gateway(tmp_path)
    gw.write_config(mqtt_port=1883)

    out = subprocess.run([sys.executable, "-m", "agent.cli", "reload", "--config", str(gw.config_path)],
                         capture_output=True, text=True, env=env(), timeout=60, check=False)

    assert out.returncode == 1
    assert "no running agent found" in out.stderr


def test_local_edit_that_fails_its_health_window_is_rolled_back(remote_gw: RemoteGateway) -> None:
    """A technician's edit adding a device nobody answers for is rolled back like a push: 'mine-agent
    reload' exits 1 with the reason, and the last-known-good configuration stays."""
    rg = remote_gw
    good = rg.good_text()
    rg.write_local(rg.toml(devices={"plc1": rg.plc_ports[0], "plc9": free_port()}))

    out = _reload(rg)

    assert out.returncode == 1, out.stdout + out.stderr
    assert '"state": "rolled_back"' in out.stdout
    assert "device 'plc9': no good reading within" in out.stdout
    assert rg.good_text() == good
    assert rg.applied_events()[-1]["stopped"] == ["device:plc9"]


def test_push_changing_mqtt_settings_is_applied_once_the_uplink_reconnects(remote_gw: RemoteGateway) -> None:
    """A push changing [mqtt] restarts the uplink, waits for it to reconnect, and reports "applied" over
    the status connection made with the new settings."""
    rg = remote_gw
    text = rg.toml().replace("keepalive_s = 5", "keepalive_s = 7")
    rg.toml()

    status = rg.push(rg.sign(text, version=50))

    assert status["_all"] == ["received", "applied"]
    assert status["changed"] == {"started": [], "stopped": [], "restarted": ["uplink"]}
    assert len(log_events(rg.agent.log, "config_channel_connected")) == 2  # type: ignore[union-attr]


def _health_answers(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status in (200, 503))
    except urllib.error.HTTPError as exc:
        return exc.code == 503
    except OSError:
        return False


def test_push_moving_the_health_endpoint_moves_it(remote_gw: RemoteGateway) -> None:
    """A push that changes [health] listen is followed by the endpoint, as a local reload is: the new port
    answers and the old one is closed."""
    rg = remote_gw
    old = rg.gw.health_port
    wait_until(lambda: _health_answers(old), 30, "the health endpoint on its first port")
    rg.gw.health_port = free_port()
    text = rg.toml()
    rg.gw.health_port = old
    rg.toml()

    status = rg.push(rg.sign(text, version=21))

    assert status["state"] == "applied"
    new = int(text.split('listen = "127.0.0.1:')[1].split('"')[0])
    wait_until(lambda: _health_answers(new), 30, "the health endpoint on the pushed port")
    assert not _health_answers(old)
