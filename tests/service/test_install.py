"""systemd/install.sh into a scratch root (DESTDIR, no venv), and the unit checked by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "systemd" / "install.sh"
UNIT = ROOT / "systemd" / "mine-agent.service"


def run_install(dest: Path, *args: str, example: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(dest), "SKIP_VENV": "1"}
    if example is not None:
        env["EXAMPLE_CONFIG"] = str(example)
    return subprocess.run(["sh", str(INSTALL), *args], env=env, capture_output=True, text=True, timeout=60,
                          check=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "example.toml"
    path.write_text("## An example configuration.\n[gateway]\nid = \"gw-01\"\n")
    return path


def test_install_lays_out_files_with_their_modes(tmp_path: Path, example: Path) -> None:
    """The unit, sysusers and tmpfiles entries, config and state directories land with the intended modes."""
    dest = tmp_path / "root"
    run_install(dest, example=example)

    expected = {
        "etc/systemd/system/mine-agent.service": 0o644,
        "usr/lib/sysusers.d/mine-agent.conf": 0o644,
        "usr/lib/tmpfiles.d/mine-agent.conf": 0o644,
        "etc/mine-agent": 0o750,
        "etc/mine-agent/keys": 0o750,
        "etc/mine-agent/agent.toml": 0o640,
        "var/lib/mine-agent": 0o750,
    }
    assert {p: mode(dest / p) for p in expected} == expected
    assert (dest / "etc/mine-agent/agent.toml").read_text() == example.read_text()
    assert os.readlink(dest / "usr/local/bin/mine-agent") == "/opt/mine-agent/venv/bin/mine-agent"


def test_installed_unit_is_the_shipped_unit(tmp_path: Path, example: Path) -> None:
    """The installed unit is the one in the tree, with Type=notify, the watchdog and the venv's ExecStart."""
    dest = tmp_path / "root"
    run_install(dest, example=example)
    text = (dest / "etc/systemd/system/mine-agent.service").read_text()

    assert text == UNIT.read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=60s", "KillMode=mixed", "Restart=on-failure",
                 "ExecReload=/bin/kill -HUP $MAINPID", "User=mine-agent", "StateDirectory=mine-agent",
                 "ProtectSystem=strict", "DevicePolicy=closed", "NoNewPrivileges=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
                 "ExecStart=/opt/mine-agent/venv/bin/mine-agent run --config /etc/mine-agent/agent.toml"):
        assert line in text.splitlines(), line


def test_prefix_is_substituted(tmp_path: Path, example: Path) -> None:
    """PREFIX moves the program, and the unit's ExecStart follows."""
    dest = tmp_path / "root"
    env_prefix = {"PREFIX": "/srv/agent"}
    subprocess.run(["sh", str(INSTALL)], env={**os.environ, **env_prefix, "DESTDIR": str(dest), "SKIP_VENV": "1",
                                              "EXAMPLE_CONFIG": str(example)},
                   capture_output=True, text=True, timeout=60, check=True)
    text = (dest / "etc/systemd/system/mine-agent.service").read_text()

    assert "ExecStart=/srv/agent/venv/bin/mine-agent run --config /etc/mine-agent/agent.toml" in text.splitlines()


def test_existing_configuration_is_not_overwritten(tmp_path: Path, example: Path) -> None:
    """Re-running the installer (an upgrade) keeps the gateway's edited configuration."""
    dest = tmp_path / "root"
    run_install(dest, example=example)
    config = dest / "etc/mine-agent/agent.toml"
    config.write_text("# edited on site\n")
    result = run_install(dest, example=example)

    assert config.read_text() == "# edited on site\n"
    assert "kept existing configuration" in result.stdout


def test_uninstall_keeps_data_and_configuration(tmp_path: Path, example: Path) -> None:
    """--uninstall removes program and unit but keeps the buffer directory and /etc/mine-agent."""
    dest = tmp_path / "root"
    run_install(dest, example=example)
    (dest / "var/lib/mine-agent/buffer.sqlite").write_bytes(b"batches not yet sent")
    run_install(dest, "--uninstall")

    assert not (dest / "etc/systemd/system/mine-agent.service").exists()
    assert not (dest / "opt/mine-agent").exists()
    assert not (dest / "usr/local/bin/mine-agent").is_symlink()
    assert (dest / "var/lib/mine-agent/buffer.sqlite").read_bytes() == b"batches not yet sent"
    assert (dest / "etc/mine-agent/agent.toml").exists()


def test_default_example_is_the_tree_example(tmp_path: Path) -> None:
    """Without EXAMPLE_CONFIG the tree's config/examples/gateway.toml is installed."""
    source = ROOT / "config" / "examples" / "gateway.toml"
    if not source.exists():
        pytest.skip("config/examples/gateway.toml is not on this branch yet")
    dest = tmp_path / "root"
    run_install(dest)

    assert (dest / "etc/mine-agent/agent.toml").read_bytes() == source.read_bytes()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify finds nothing to complain about (ExecStart pointed at an existing program)."""
    unit = tmp_path / "mine-agent.service"
    program = shutil.which("true") or "/bin/true"
    unit.write_text(UNIT.read_text().replace("/opt/mine-agent/venv/bin/mine-agent", program))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            check=False)

    assert (result.returncode, result.stderr.strip()) == (0, "")
