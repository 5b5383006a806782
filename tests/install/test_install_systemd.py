"""The documented service install, run as a technician runs it, on a fresh Debian 12 booted under systemd.

On demand only (``pytest -m system``; root, debootstrap and systemd-container, and the package mirrors):
a debootstrap root of bookworm (python3, git, sudo; no python3-venv) gets the README's prerequisites, the
source tree and ``sudo systemd/install.sh`` exactly as documented, with no DESTDIR and its own virtualenv
built from the package index. The container is then booted again with only a loopback (a gateway after a
reboot, and no traffic to anything but itself), and every command the installer printed is run, in order,
as the technician user: key, configuration edit (through ``sudoedit``), validation, ``systemctl enable
--now`` and ``mine-agent status``. Then the service behaviour docs/operations.md promises is checked on the
real systemd: READY, a watchdog restart after the main process is frozen with SIGSTOP, ``systemctl
reload`` applying an edited file in place, a rotation of the operator keys by a signed push (which rewrites
the trust list in the state directory, the one place the unit lets the agent write), and ``systemctl stop``
ending cleanly.

The broker is the Debian ``mosquitto`` package inside the container, and the field device is the agent's
own simulated Modbus TCP PLC (``agent.demo.simulator``) on the container's loopback.

Every command and its output goes to a transcript (``MINE_AGENT_TEST_TRANSCRIPT``, default
``<tmp>/transcript.txt``), printed at the end.

Rejected: running only the scratch-root (DESTDIR) install: it never creates the user, never builds the
virtualenv at its real path and never starts the unit, which is where the installs on real gateways broke.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.install.debian_root import Container, Transcript, base_root, booted, copy_root

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
TECH = "tech"
# The working tree is offered as a git repository here; the technician clones it into their home.
ORIGIN = "/srv/mine-edge-agent"
SOURCE = f"/home/{TECH}/mine-edge-agent"
# The README's prerequisites for a fresh Debian or Ubuntu machine, and its service install command.
PREREQUISITES = "sudo apt-get update && sudo apt-get install -y python3-venv"
INSTALL = "sudo systemd/install.sh"
PLC_PORT = 5020

# The technician's edit of the installed example: broker and device are this gateway's own loopback (the
# Debian mosquitto allows anonymous clients on loopback, so no username or password file). No archive runs
# in this test (it is about the installation and the service), so the gateway runs in broker ack mode.
EDIT_CONFIG = f"""#!/bin/sh
set -eu
sed -i -e 's/^host = "broker.example.net"/host = "127.0.0.1"/' \\
       -e '/^username = /d' -e '/^password_file = /d' \\
       -e 's/^archive_keys_file = .*/ack_mode = "broker"/' \\
       -e 's/^host = "192.168.10.20"/host = "127.0.0.1"\\nport = {PLC_PORT}/' "$1"
"""
# For the trust rotation: remote configuration on, with the default trust list in the state directory.
ENABLE_REMOTE = """#!/bin/sh
printf '\\n[remote_config]\\nhealth_window_s = 30\\n' >> "$1"
"""
MINE_BACKEND = "/opt/mine-agent/venv/bin/mine-backend"
# The second edit, applied with systemctl reload: the PLC is polled every 2 s instead of every second.
EDIT_POLL = """#!/bin/sh
sed -i 's/^poll_interval_s = 1.0/poll_interval_s = 2.0/' "$1"
"""


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def source_files() -> list[str]:
    """The working tree as a clone would have it: tracked and new files, not ignored ones."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


def prepare_root(root: Path) -> None:
    """What the Debian installer and the technician did before this test starts: a hostname, a user with
    sudo, the source tree to clone. Plus what only this test machine needs (see below)."""
    (root / "etc/hostname").write_text("gateway\n")
    with (root / "etc/hosts").open("a") as f:
        f.write("127.0.1.1\tgateway\n")
    dest = root / ORIGIN.lstrip("/")
    for name in source_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    # HTTPS from this machine may go through a proxy with its own CA: give the container the same local
    # CAs, and tell pip to use the system bundle (it otherwise uses its own certifi copy).
    local_cas = sorted(Path("/usr/local/share/ca-certificates").glob("*.crt"))
    for ca in local_cas:
        shutil.copy2(ca, root / "usr/local/share/ca-certificates" / ca.name)
    if local_cas:
        (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")


@pytest.fixture
def transcript(tmp_path: Path) -> Transcript:
    path = Path(os.environ.get("MINE_AGENT_TEST_TRANSCRIPT", tmp_path / "transcript.txt"))
    return Transcript(path)


@pytest.fixture
def gateway_root(tmp_path: Path, transcript: Transcript) -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap, systemd-nspawn)")
    missing = [tool for tool in ("debootstrap", "systemd-nspawn", "nsenter") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install debootstrap systemd-container")
    started = time.monotonic()
    base = base_root(tmp_path / "debootstrap.log")
    transcript.write(f"## debootstrap root {base} ready after {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    root = copy_root(base, tmp_path / "gateway")
    transcript.write(f"## copied to {root} in {time.monotonic() - started:.0f} s")
    prepare_root(root)
    return root


def install_as_documented(gw: Container) -> list[str]:
    """Boot 1 (package mirrors reachable): the README's prerequisites and the installer. Returns the
    commands the installer printed for the technician to run next."""
    # Test scaffolding, not technician steps: the technician user; the working tree committed into a
    # repository to clone; the broker standing in for the mine's (Debian's mosquitto), installed with no
    # service started by a package while this boot shares the test machine's network.
    gw.sh(f"useradd -m -s /bin/bash -G sudo {TECH} && echo '{TECH} ALL=(ALL) NOPASSWD: ALL' "
          f"> /etc/sudoers.d/{TECH} && chown -R {TECH}: {ORIGIN} && update-ca-certificates >/dev/null")
    gw.sh(f"cd {ORIGIN} && git init -q && git add -A && git -c user.name=test -c user.email=test@localhost "
          "commit -q -m 'working tree under test'", user=TECH)
    gw.sh("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d")
    gw.sh("apt-get install -y -q mosquitto", timeout=600)
    gw.sh(f"git clone -q {ORIGIN} {SOURCE}", user=TECH)

    # Before the prerequisites, the installer stops at its interpreter check and says what to install.
    refused = gw.sh(f"cd {SOURCE} && {INSTALL}", user=TECH, check=False)
    assert refused.returncode == 1
    assert "sudo apt-get install python3-venv" in refused.stderr
    assert not Path(gw.root, "opt/mine-agent").exists(), "the refused install wrote files"

    gw.sh(PREREQUISITES, user=TECH, timeout=600)
    result = gw.sh(f"cd {SOURCE} && {INSTALL}", user=TECH, timeout=900)
    # systemd-sysusers reports the user it created; nothing else may go to stderr.
    assert all(line.startswith("Creating ") for line in result.stderr.splitlines()), result.stderr
    # The documented upgrade is the same command again: a new virtualenv, the old one removed, the
    # configuration kept.
    first = os.readlink(Path(gw.root, "opt/mine-agent/venv"))
    time.sleep(1)  # virtualenvs are named by the second
    again = gw.sh(f"cd {SOURCE} && {INSTALL}", user=TECH, timeout=900)
    assert again.stderr == ""
    assert "kept existing configuration /etc/mine-agent/agent.toml" in again.stdout
    assert "upgraded; a running agent was restarted" in again.stdout
    venvs = sorted(p.name for p in Path(gw.root, "opt/mine-agent").glob("venv-*"))
    assert venvs == [os.readlink(Path(gw.root, "opt/mine-agent/venv"))] != [first]
    gw.sh("rm /usr/sbin/policy-rc.d")

    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("installed. "))
    printed = [line.strip() for line in lines[start + 1:] if line.startswith("  ")]
    assert printed, result.stdout
    return printed


def run_printed(gw: Container, command: str) -> None:
    """Run one command the installer printed, as printed, as the technician. The one interactive step,
    sudoedit, gets an editor that makes the technician's edit."""
    if command.startswith("sudoedit "):
        gw.sh(f"cat > ~/edit-config <<'EOF'\n{EDIT_CONFIG}EOF\nchmod 755 ~/edit-config", user=TECH, record=False)
        gw.sh(command, user=TECH, env={"SUDO_EDITOR": f"/home/{TECH}/edit-config"})
        return
    if command == "mine-agent status":
        # Degraded until the first batch is acknowledged and the PLC answered: retry, then insist on ok.
        wait_for("mine-agent status: ok", lambda: gw.sh(command, user=TECH, check=False, record=False)
                 .returncode == 0, timeout=60)
    gw.sh(command, user=TECH)


def journal(gw: Container, since: str = "") -> str:
    return gw.sh(f"journalctl -u mine-agent -o cat --no-pager {since}", record=False).stdout


def test_documented_install_on_fresh_debian(gateway_root: Path, transcript: Transcript) -> None:
    started = time.monotonic()
    try:
        with booted(gateway_root, "gw-install", transcript, private_network=False) as gw:
            printed = install_as_documented(gw)
        transcript.write(f"## install boot done after {time.monotonic() - started:.0f} s")

        # Every path the printed steps name is one the example configuration and the unit agree on.
        config_text = (gateway_root / "etc/mine-agent/agent.toml").read_text()
        key_file = re.search(r'^key_file = "(.*)"$', config_text, re.MULTILINE)
        assert key_file is not None
        assert f"sudo chown mine-agent: {key_file.group(1)}" in printed
        assert f"sudo mine-agent keys init {Path(key_file.group(1)).parent}" in printed

        with booted(gateway_root, "gw-run", transcript, private_network=True) as gw:
            check_service(gw, printed)
    finally:
        transcript.write(f"## total {time.monotonic() - started:.0f} s")
        print(transcript.path.read_text())


def check_service(gw: Container, printed: list[str]) -> None:
    # The field device: the agent's simulated Modbus PLC on this gateway's loopback; the broker came with
    # the mosquitto package and starts at boot.
    gw.sh(f"systemd-run --unit=plc-sim /opt/mine-agent/venv/bin/python -m agent.demo.simulator --port {PLC_PORT}")
    gw.sh("systemctl is-active mosquitto")

    for command in printed:
        run_printed(gw, command)

    # Started: systemctl enable --now returned only after READY=1 (Type=notify).
    state = gw.show("ActiveState", "SubState", "NRestarts", "MainPID", "Result")
    assert (state["ActiveState"], state["SubState"], state["NRestarts"]) == ("active", "running", "0"), state
    gw.sh("systemctl show -p ActiveState,SubState,NRestarts,MainPID,StatusText mine-agent")
    assert '"agent_ready"' in journal(gw)
    gw.sh("ls -l /var/lib/mine-agent /etc/mine-agent /etc/mine-agent/keys")

    # Watchdog: a frozen agent sends no pings; after WatchdogSec=60s systemd aborts it and starts it again.
    frozen = state["MainPID"]
    gw.sh(f"kill -STOP {frozen}")
    wait_for("the watchdog restart", lambda: gw.show("NRestarts")["NRestarts"] == "1", timeout=150)
    wait_for("READY after the restart", lambda: gw.show("ActiveState", "SubState") ==
             {"ActiveState": "active", "SubState": "running"}, timeout=120)
    gw.sh("systemctl show -p ActiveState,SubState,NRestarts,MainPID mine-agent")
    restarted = gw.show("MainPID")["MainPID"]
    assert restarted not in (frozen, "0")
    watchdog_lines = gw.sh("journalctl -u mine-agent --no-pager -o cat | grep -i -E 'watchdog|Dumping|thread'"
                           " | head -5").stdout
    assert "Watchdog timeout" in watchdog_lines
    gw.sh("mine-agent status", user=TECH, check=False)

    # Reload: an edited poll interval is applied in place, by the same process.
    gw.sh(f"cat > ~/edit-poll <<'EOF'\n{EDIT_POLL}EOF\nchmod 755 ~/edit-poll", user=TECH, record=False)
    gw.sh("sudoedit /etc/mine-agent/agent.toml", user=TECH, env={"SUDO_EDITOR": f"/home/{TECH}/edit-poll"})
    gw.sh("sudo mine-agent validate /etc/mine-agent/agent.toml", user=TECH)
    gw.sh("sudo systemctl reload mine-agent", user=TECH)
    wait_for("config_applied in the journal", lambda: '"config_applied"' in journal(gw), timeout=30)
    gw.sh("journalctl -u mine-agent -o cat --no-pager | grep config_applied")
    after = gw.show("ActiveState", "SubState", "NRestarts", "MainPID")
    assert after == {"ActiveState": "active", "SubState": "running", "NRestarts": "1", "MainPID": restarted}

    check_trust_rotation(gw)

    # Stop: SIGTERM, windows committed, buffer closed, exit 0 well within TimeoutStopSec.
    gw.sh("sudo systemctl stop mine-agent", user=TECH, timeout=60)
    stopped = gw.show("ActiveState", "SubState", "Result", "ExecMainStatus")
    gw.sh("systemctl show -p ActiveState,SubState,Result,ExecMainStatus mine-agent")
    assert stopped == {"ActiveState": "inactive", "SubState": "dead", "Result": "success",
                       "ExecMainStatus": "0"}, stopped
    assert '"agent_stopped"' in journal(gw)
    gw.sh("journalctl -u mine-agent --no-pager -o cat | tail -n 4")


def check_trust_rotation(gw: Container) -> None:
    """Operator keys rotated by a signed push under the real unit (ProtectSystem=strict): the push is applied,
    the default trust list in the state directory now holds the new key only, the old key is refused and the
    new one accepted."""
    gw.sh(f"{MINE_BACKEND} config keys init /root/op1 && {MINE_BACKEND} config keys init /root/op2")
    gw.sh("install -o mine-agent -g mine-agent -m 0644 /root/op1/operator.pub /var/lib/mine-agent/operator.trust")
    gw.sh(f"cat > ~/enable-remote <<'EOF'\n{ENABLE_REMOTE}EOF\nchmod 755 ~/enable-remote", user=TECH, record=False)
    gw.sh("sudoedit /etc/mine-agent/agent.toml", user=TECH, env={"SUDO_EDITOR": f"/home/{TECH}/enable-remote"})
    gw.sh("sudo mine-agent validate /etc/mine-agent/agent.toml", user=TECH)
    gw.sh("sudo systemctl reload mine-agent", user=TECH)
    wait_for("the configuration channel", lambda: '"config_channel_connected"' in journal(gw), timeout=60)
    found = re.search(r'^id = "(.*)"$', gw.sh("cat /etc/mine-agent/agent.toml", record=False).stdout, re.MULTILINE)
    assert found is not None
    version = int(time.time())

    def push(key: str, version: int, *extra: str) -> subprocess.CompletedProcess[str]:
        return gw.sh(f"{MINE_BACKEND} config push --gateway {found.group(1)} --broker mqtt://127.0.0.1:1883 "
                     f"--timeout 120 --key /root/{key}/operator.key --version {version} {' '.join(extra)} "
                     "/etc/mine-agent/agent.toml", timeout=180, check=False)

    rotated = push("op1", version, "--trust", "/root/op2/operator.pub")
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert json.loads(rotated.stdout.splitlines()[-1])["state"] == "applied"
    new_key = gw.sh("cat /root/op2/operator.pub", record=False).stdout.strip()
    trust = gw.sh("ls -l /var/lib/mine-agent/operator.trust && cat /var/lib/mine-agent/operator.trust").stdout
    assert [line for line in trust.splitlines() if line.startswith("ed25519:")] == [new_key]
    gw.sh("test -f /var/lib/mine-agent/config/trust.prev")

    old_refused = push("op1", version + 1)
    assert old_refused.returncode == 1, old_refused.stdout + old_refused.stderr
    assert "unknown key id" in old_refused.stdout
    new_accepted = push("op2", version + 2)
    assert new_accepted.returncode == 0, new_accepted.stdout + new_accepted.stderr
