"""Which configuration starts (the technician's file or the last push) and what an interrupted attempt leaves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.core.errors import ConfigError
from agent.remote.service import INTERRUPTED, startup_config
from agent.remote.state import ConfigState, StateFiles, sha256_text, write_atomic
from tests.e2e.harness import Gateway


def _gateway(tmp_path: Path) -> Gateway:
    gw = Gateway(tmp_path)
    gw.write_config(mqtt_port=1883)
    return gw


def test_first_start_records_the_local_file_as_good(tmp_path: Path) -> None:
    """With no state yet, the local file starts and becomes the last-known-good configuration."""
    gw = _gateway(tmp_path)
    text = gw.config_path.read_text()

    config, pending = startup_config(gw.config_path)

    files = StateFiles(gw.state)
    assert (config.gateway.id, pending) == ("gw-test", [])
    assert files.good_text() == text
    assert (files.load_state().source, files.load_state().local_sha256) == ("local", sha256_text(text))


def test_pushed_config_starts_while_the_local_file_is_unchanged(tmp_path: Path) -> None:
    """A remotely applied configuration is what starts as long as the local file is as it was."""
    gw = _gateway(tmp_path)
    local = gw.config_path.read_text()
    pushed = local.replace("window_s = 1", "window_s = 5")
    StateFiles(gw.state).accept(pushed, ConfigState(source="remote", version=4, highest_version=4,
                                                    local_sha256=sha256_text(local)))

    config, _ = startup_config(gw.config_path)

    assert config.pipeline.window_s == 5


def test_edited_local_file_wins_over_a_push(tmp_path: Path) -> None:
    """Once the technician edits the file, it starts, and the push versions already tried stay refused."""
    gw = _gateway(tmp_path)
    local = gw.config_path.read_text()
    StateFiles(gw.state).accept(local.replace("window_s = 1", "window_s = 5"),
                                ConfigState(source="remote", version=4, highest_version=6,
                                            local_sha256=sha256_text(local)))
    gw.config_path.write_text(local.replace("window_s = 1", "window_s = 2"))

    config, _ = startup_config(gw.config_path)

    state = StateFiles(gw.state).load_state()
    assert config.pipeline.window_s == 2
    assert (state.source, state.version, state.highest_version) == ("local", 0, 6)


def test_attempt_interrupted_by_a_stop_is_reported_rolled_back(tmp_path: Path) -> None:
    """A staged attempt found at start-up (a crash or power cut mid-window) is not started; it is recorded
    and reported as rolled back, and its version counts as tried."""
    gw = _gateway(tmp_path)
    files = StateFiles(gw.state)
    files.stage("broken = true\n", {"source": "remote", "version": 9, "push": "abc", "kid": "k",
                                    "received_ms": 5})

    config, pending = startup_config(gw.config_path)

    assert config.pipeline.window_s == 1
    assert [(o.state, o.version, o.reasons) for o in pending] == [("rolled_back", 9, [INTERRUPTED])]
    assert files.staged() is None
    assert files.load_state().highest_version == 9
    assert files.history()[-1]["state"] == "rolled_back"


def test_damaged_state_file_is_set_aside_not_trusted(tmp_path: Path) -> None:
    """A state file that is not JSON is renamed .bad and the local file starts."""
    gw = _gateway(tmp_path)
    files = StateFiles(gw.state)
    files.dir.mkdir(parents=True)
    files.state_path.write_text("{not json")

    config, _ = startup_config(gw.config_path)

    assert config.gateway.id == "gw-test"
    assert files.state_path.with_suffix(".json.bad").exists()


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """write_atomic replaces the file in one step, with the requested mode, and cleans up after itself."""
    path = tmp_path / "d" / "good.toml"
    write_atomic(path, b"old")

    write_atomic(path, b"new", 0o600)

    assert path.read_bytes() == b"new"
    assert os.listdir(path.parent) == ["good.toml"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_invalid_local_file_starts_the_last_known_good(tmp_path: Path) -> None:
    """A local file that does not validate at boot does not stop the gateway when a known-good configuration
    exists: that one starts, and the refusal is reported with every problem."""
    gw = _gateway(tmp_path)
    startup_config(gw.config_path)
    gw.config_path.write_text(gw.config_path.read_text().replace("window_s = 1", "window_s = 7"))

    config, pending = startup_config(gw.config_path)

    assert config.pipeline.window_s == 1
    assert [(o.state, o.source) for o in pending] == [("rejected", "local")]
    assert "pipeline.window_s: does not divide a day" in pending[0].reasons[0]


def test_invalid_local_file_without_known_good_refuses_to_start(tmp_path: Path) -> None:
    """With nothing known-good to fall back on, an invalid local file is the ConfigError it always was."""
    gw = _gateway(tmp_path)
    gw.config_path.write_text(gw.config_path.read_text().replace("window_s = 1", "window_s = 7"))

    with pytest.raises(ConfigError):
        startup_config(gw.config_path)


def test_local_edit_that_was_rolled_back_does_not_start_at_boot(tmp_path: Path) -> None:
    """An edit that failed its health window keeps the last-known-good running across a reboot, until the
    file changes again."""
    gw = _gateway(tmp_path)
    startup_config(gw.config_path)
    edited = gw.config_path.read_text().replace("window_s = 1", "window_s = 2")
    gw.config_path.write_text(edited)
    files = StateFiles(gw.state)
    state = files.load_state()
    state.bad_local_sha256 = sha256_text(edited)
    files.save_state(state)

    kept, _ = startup_config(gw.config_path)
    gw.config_path.write_text(edited.replace("window_s = 2", "window_s = 5"))
    changed, _ = startup_config(gw.config_path)

    assert (kept.pipeline.window_s, changed.pipeline.window_s) == (1, 5)


def test_state_file_values_of_the_wrong_type_fall_back_to_defaults(tmp_path: Path) -> None:
    """A state.json with values of the wrong type (damaged, hand-edited) loads with defaults for those fields,
    so a push's version is compared with a number, never with whatever the file held."""
    from agent.remote.state import StateFiles

    files = StateFiles(tmp_path)
    files.dir.mkdir(parents=True)
    files.state_path.write_text('{"source": "remote", "version": "7", "highest_version": 1e999, '
                                '"push": ["x"], "applied_ms": true, "kid": "k"}')

    state = files.load_state()

    assert (state.source, state.version, state.highest_version, state.push, state.applied_ms, state.kid) == (
        "remote", 0, 0, None, None, "k")
