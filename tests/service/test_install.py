"""systemd/install.sh: its options, its interpreter check, a scratch-root install (DESTDIR), the live path
(no DESTDIR, with its virtualenv) inside a throwaway overlay of this machine's root, and the unit checked by
systemd-analyze.

The full install on a booted Debian 12 (user, unit, READY, watchdog, reload, stop) is
tests/install/test_install_systemd.py, on demand (``-m system``): it needs minutes and the package mirrors.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
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


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """install.sh with exactly ``env`` added to this process's environment, result not checked."""
    return subprocess.run(["sh", str(INSTALL), *args], env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=60, check=False)


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


def test_script_parses_as_posix_sh() -> None:
    """`sh -n` (dash on Debian, the /bin/sh that runs it) accepts the script."""
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell):
            result = subprocess.run([shell, "-n", str(INSTALL)], capture_output=True, text=True, timeout=30,
                                    check=False)
            assert (shell, result.returncode, result.stderr) == (shell, 0, "")


def test_help_prints_the_usage_block_only() -> None:
    result = run_script("--help")

    assert result.returncode == 0
    assert result.stdout.startswith("# Install (or upgrade, or remove) the mine edge agent")
    assert "apt-get install python3-venv" in result.stdout
    assert result.stdout.rstrip().endswith("(default: config/examples/gateway.toml of this source tree)")


def test_unknown_option_is_refused_before_anything_happens(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    result = run_script("--frobnicate", env={"DESTDIR": str(dest)})

    assert (result.returncode, result.stdout) == (2, "")
    assert "unknown option --frobnicate (try --help)" in result.stderr
    assert not dest.exists()


@pytest.mark.parametrize("prefix", ["/", "opt/mine-agent", "/opt/mine agent", "/opt/mine-agent/", "//opt"])
def test_unsafe_prefix_is_refused(tmp_path: Path, prefix: str) -> None:
    """PREFIX ends up in rm -rf and in the unit: anything but a plain absolute directory is refused."""
    dest = tmp_path / "root"
    result = run_script(env={"DESTDIR": str(dest), "SKIP_VENV": "1", "PREFIX": prefix})

    assert result.returncode == 1
    assert "install.sh: PREFIX " in result.stderr
    assert not dest.exists()


def write_stub(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_old_python_is_refused_with_what_to_install(tmp_path: Path) -> None:
    """An interpreter older than 3.11 (here a stub reporting 3.9.2, as Debian 11's) stops the install before
    any file is written, and the message says what is needed."""
    old = write_stub(tmp_path / "python3.9", "echo 3.9.2\n")
    dest = tmp_path / "root"
    result = run_script(env={"DESTDIR": str(dest), "PYTHON": str(old)})

    assert result.returncode == 1
    assert f"'{old}' is Python 3.9.2; the agent needs Python 3.11 or newer" in result.stderr
    assert "PYTHON=" in result.stderr
    assert not dest.exists()


def test_python_without_venv_is_refused_with_the_debian_package(tmp_path: Path) -> None:
    """A real 3.11+ interpreter whose ensurepip is missing, as on a fresh Debian without python3-venv."""
    shadow = tmp_path / "shadow" / "ensurepip"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\")\n")
    python = write_stub(tmp_path / "python3", f'PYTHONPATH={shadow.parent} exec {sys.executable} "$@"\n')
    dest = tmp_path / "root"
    result = run_script(env={"DESTDIR": str(dest), "PYTHON": str(python)})

    assert result.returncode == 1
    assert "cannot create virtualenvs: its venv or ensurepip module is missing" in result.stderr
    assert "sudo apt-get install python3-venv" in result.stderr
    assert not dest.exists()


@pytest.mark.parametrize("body", ["exit 127\n", "echo 'Python 3.12.1'\n"], ids=["fails", "not-a-version"])
def test_something_that_is_not_python_is_refused(tmp_path: Path, body: str) -> None:
    stub = write_stub(tmp_path / "python3", body)
    dest = tmp_path / "root"
    result = run_script(env={"DESTDIR": str(dest), "PYTHON": str(stub)})

    assert result.returncode == 1
    assert "does not run as a Python interpreter" in result.stderr
    assert not dest.exists()


def test_missing_python_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    result = run_script(env={"DESTDIR": str(dest), "PYTHON": "python3.99-missing"})

    assert result.returncode == 1
    assert "no Python interpreter 'python3.99-missing'" in result.stderr
    assert not dest.exists()


def test_current_python_passes_the_check(tmp_path: Path) -> None:
    """The interpreter running these tests (3.11+, with venv) is accepted: the check refuses only what
    cannot work. SKIP_VENV is not set, so only the venv step is replaced, by a failing pip (no network)."""
    dest = tmp_path / "root"
    result = run_script(env={"DESTDIR": str(dest), "PYTHON": sys.executable, "PIP_INDEX_URL": "http://127.0.0.1:9/",
                             "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": ""})

    assert "install.sh: building the virtualenv failed; the installed version is unchanged" in result.stderr
    assert "Python 3.11 or newer" not in result.stderr
    assert result.returncode == 1
    assert not list((dest / "opt/mine-agent").glob("venv*")), "the failed virtualenv was left behind"


LIVE_IN_OVERLAY = r"""
set -eu
mount -t tmpfs tmpfs "$T"
mkdir "$T/upper" "$T/work" "$T/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$T/upper,workdir=$T/work" "$T/root"
mount --rbind /proc "$T/root/proc"
mount --rbind /dev "$T/root/dev"
mount -t tmpfs tmpfs "$T/root/tmp"
mkdir "$T/root/tmp/src"
(cd "$SRC" && tar -c --exclude=./.git --exclude=./.venv .) | tar -x -C "$T/root/tmp/src"
chroot "$T/root" env -u DESTDIR -u SKIP_VENV PYTHON=/usr/bin/python3 sh /tmp/src/systemd/install.sh
echo "--- after install"
chroot "$T/root" /usr/local/bin/mine-agent validate /etc/mine-agent/agent.toml
readlink "$T/root/opt/mine-agent/venv"
cd "$T/upper" && find etc/systemd/system usr/lib/sysusers.d usr/lib/tmpfiles.d usr/local/bin/mine-agent \
    etc/mine-agent var/lib/mine-agent opt/mine-agent -maxdepth 1 | sort
"""


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or not Path("/usr/bin/python3").exists(),
                    reason="needs root, unshare and /usr/bin/python3")
def test_live_install_path_without_destdir(tmp_path: Path) -> None:
    """The path every real install takes: no DESTDIR, as root, the virtualenv built with pip. It runs in a
    private mount namespace on an overlay of this machine's root, in a chroot, so the system's own /etc,
    /opt and /usr/local stay untouched; without a booted systemd the installer activates nothing (no
    user, no systemctl) and says so. ``${DESTDIR:?}`` aborted exactly this path."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    system_paths = [Path(p) for p in ("/opt/mine-agent", "/etc/systemd/system/mine-agent.service",
                                      "/usr/local/bin/mine-agent", "/etc/mine-agent", "/var/lib/mine-agent")]
    before = {p: p.exists() or p.is_symlink() for p in system_paths}
    env = {**os.environ, "T": str(mnt), "SRC": str(ROOT)}
    env.pop("DESTDIR", None)
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", LIVE_IN_OVERLAY],
                            env=env, capture_output=True, text=True, timeout=900, check=False)
    out = result.stdout

    assert result.returncode == 0, result.stderr
    assert "installed into / (files only: no user, directories or service were activated)" in out
    after = out.split("--- after install\n", 1)[1].splitlines()
    assert after[0] == "/etc/mine-agent/agent.toml: ok (1 device, 3 tags)"
    assert after[1].startswith("venv-")
    assert {"etc/systemd/system/mine-agent.service", "usr/lib/sysusers.d/mine-agent.conf",
            "usr/lib/tmpfiles.d/mine-agent.conf", "usr/local/bin/mine-agent", "etc/mine-agent/agent.toml",
            "var/lib/mine-agent", f"opt/mine-agent/{after[1]}", "opt/mine-agent/venv"} <= set(after[2:])
    assert {p: p.exists() or p.is_symlink() for p in system_paths} == before, "the real system was written"
