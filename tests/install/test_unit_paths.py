"""The shipped systemd unit and the configuration agree on where the agent may write, read from the unit itself.

The unit runs the agent with ``ProtectSystem=strict``: only ``StateDirectory=`` and ``ReadWritePaths=`` are
writable, ``ProtectHome=`` hides the home directories and ``PrivateTmp=`` gives the agent a /tmp of its own.
A trust rotation by push rewrites the operator trust list, so its default location must be writable under the
unit, or every rotation rolls back; the files the agent only reads (its signing key, TLS and password files,
the archive's public keys) may live in /etc but never where the unit hides them.

tests/service/test_write_paths.py checks every path the agent writes against the same unit; this module adds
the paths it only reads, the copy of the trust list a rotation keeps and the tmpfiles entry, and its last test
runs a real trust rotation (the configuration service's own code, a signed push) in a mount namespace laid out
as the unit's sandbox: everything read-only except the unit's writable directories (root and ``unshare``;
skipped otherwise). The on-demand test in test_install_systemd.py does the same on the real unit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest

from agent.remote.guard import local_settings
from config.loader import parse_config
from config.schema import AgentConfig, GatewayConfig
from tests.service.test_write_paths import unit_settings, writable_dirs

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "mine-agent.service"
TMPFILES = ROOT / "systemd" / "mine-agent.tmpfiles"
EXAMPLES = ROOT / "config" / "examples"


def _settings() -> dict[str, list[str]]:
    """The unit's [Service] settings, each key with all its values in order."""
    settings: dict[str, list[str]] = {}
    for key, value in unit_settings(UNIT.read_text()):
        settings.setdefault(key, []).append(value)
    return settings


def hidden_dirs(settings: dict[str, list[str]]) -> list[PurePosixPath]:
    """Where the unit makes files invisible (or empty) to the agent."""
    hidden = [PurePosixPath(p.lstrip("-+")) for v in settings.get("InaccessiblePaths", []) for p in v.split()]
    if settings.get("ProtectHome", ["no"])[-1] in ("yes", "true", "tmpfs", "read-only"):
        hidden += [PurePosixPath(p) for p in ("/home", "/root", "/run/user")]
    if settings.get("PrivateTmp", ["no"])[-1] in ("yes", "true"):
        hidden += [PurePosixPath("/tmp"), PurePosixPath("/var/tmp")]
    return hidden


def _under(path: str, dirs: list[PurePosixPath]) -> bool:
    p = PurePosixPath(path)
    return any(p == d or d in p.parents for d in dirs)


def _default_remote_config() -> AgentConfig:
    """The installed example (install.sh's default EXAMPLE_CONFIG) with remote configuration enabled as
    docs/config.md shows it: a [remote_config] section without trust_file."""
    text = (EXAMPLES / "gateway.toml").read_text() + "\n[remote_config]\nhealth_window_s = 120\n"
    return parse_config(text, "gateway.toml")


def test_default_trust_file_is_writable_under_the_unit() -> None:
    """The default operator trust list (and the copy a rotation keeps) lies in a directory the unit makes
    writable; the state directory's default is that directory, and tmpfiles creates it for the agent."""
    writable = writable_dirs(UNIT.read_text())
    config = _default_remote_config()
    assert config.trust_path is not None

    assert _under(str(config.trust_path), writable), (config.trust_path, writable)
    assert _under(str(config.gateway.state_dir / "config" / "trust.prev"), writable)
    assert PurePosixPath(str(GatewayConfig.model_fields["state_dir"].default)) in writable
    tmpfiles = [line.split() for line in TMPFILES.read_text().splitlines() if line and not line.startswith("#")]
    assert ["d", str(config.gateway.state_dir), "0750", "mine-agent", "mine-agent", "-"] in tmpfiles


def test_old_trust_location_under_etc_would_not_be_writable() -> None:
    """The control: /etc/mine-agent, where the trust list was once documented, is read-only under the unit,
    so this test's notion of "writable" can fail."""
    assert not _under("/etc/mine-agent/operator.trust", writable_dirs(UNIT.read_text()))


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_no_path_of_the_examples_is_hidden_by_the_unit(example: str) -> None:
    """The files the agent only reads (key files, TLS and password files, the archive's public keys, which may
    stay in /etc) are not where ProtectHome= or PrivateTmp= hide them. The settings are found by type
    (agent.remote.guard.local_settings), so a path setting added later is checked without being named here."""
    hidden = hidden_dirs(_settings())
    text = (EXAMPLES / example).read_text()
    has_remote = re.search(r"^\[remote_config\]", text, re.MULTILINE) is not None
    config = parse_config(text + ("" if has_remote else "\n[remote_config]\n"), example)

    found = {key: s.value or s.default for key, s in local_settings(config).items() if s.kind == "file"}
    hidden_ones = {key: value for key, value in found.items() if value is not None and _under(value, hidden)}

    assert "gateway.key_file" in found
    assert hidden_ones == {}


def test_hidden_dirs_reads_the_unit() -> None:
    """The control: the shipped unit hides the home directories and /tmp, so the check above can fail."""
    hidden = hidden_dirs(_settings())
    assert _under("/root/gateway.key", hidden)
    assert _under("/tmp/ca.pem", hidden)


ROTATE = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from agent.core.clock import SystemClock
    from agent.protocol.push import sign_push
    from agent.protocol.signing import load_signer
    from agent.remote.service import ConfigService
    from config.loader import load_config
    from tests.remote.test_health_window import StandInAgent

    local, keys = Path(sys.argv[1]), Path(sys.argv[2])
    config = load_config(local)
    old, new = load_signer(keys / "old.key"), load_signer(keys / "new.key")
    config.trust_path.write_text(old.public_text + "\\n")  # the technician's step before the first push
    try:
        Path("/etc/mine-agent-sandbox-probe").write_text("x")
        etc_writable = True
    except OSError:
        etc_writable = False

    async def main():
        service = ConfigService(StandInAgent(config, SystemClock()), local)
        text = local.read_text()
        import time
        now = int(time.time() * 1000)
        rotated = await service.handle_push(sign_push(old, gateway=config.gateway.id, version=now // 1000,
                                                      toml=text, issued_ms=now, trust=[new.public_text]))
        after = await service.handle_push(sign_push(new, gateway=config.gateway.id, version=now // 1000 + 1,
                                                    toml=text, issued_ms=now + 1))
        return rotated, after

    rotated, after = asyncio.run(main())
    print(json.dumps({"etc_writable": etc_writable, "rotated": [rotated.state, rotated.reasons],
                      "after": [after.state, after.reasons], "trust": config.trust_path.read_text(),
                      "prev": (config.gateway.state_dir / "config" / "trust.prev").read_text()}))
""")

SANDBOX = textwrap.dedent("""
    set -eu
    mount --make-rprivate /
    # A scratch /var/lib, so the host's is neither seen nor touched; the unit's state directories in it.
    mount -t tmpfs -o mode=0755 tmpfs /var/lib
    for dir in "$@"; do mkdir -p "$dir"; mount --bind "$dir" "$dir"; done
    # ProtectSystem=strict: every other mount read-only.
    awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r target; do
        keep=0
        for dir in "$@"; do [ "$target" = "$dir" ] && keep=1; done
        [ "$keep" = 1 ] || mount -o remount,bind,ro "$target" 2>/dev/null || true
    done
    exec "$PYTHON" -c "$ROTATE" "$LOCAL" "$KEYS"
""")


def test_trust_rotation_by_push_works_in_the_units_sandbox(tmp_path: Path) -> None:
    """A signed push carrying a trust list rewrites the default trust file and is applied, with the file
    system laid out as the unit's sandbox; afterwards the new operator key is the one trusted."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to lay out the unit's sandbox")
    writable = [str(d) for d in writable_dirs(UNIT.read_text())]
    if not all(d.startswith("/var/lib/") for d in writable):
        pytest.fail(f"this sandbox emulation only makes directories under /var/lib writable: {writable}")
    from agent.protocol.signing import generate_key

    old, new = generate_key(tmp_path / "keys", "old"), generate_key(tmp_path / "keys", "new")
    local = tmp_path / "agent.toml"
    local.write_text((EXAMPLES / "gateway.toml").read_text() + "\n[remote_config]\nhealth_window_s = 5\n")
    env = {**os.environ, "PYTHON": sys.executable, "ROTATE": ROTATE, "LOCAL": str(local),
           "KEYS": str(tmp_path / "keys"), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")

    out = subprocess.run(["unshare", "-m", "sh", "-c", SANDBOX, "sandbox", *writable], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120, check=False)

    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["etc_writable"] is False, "the sandbox is not read-only: this test would prove nothing"
    assert result["rotated"] == ["applied", []]
    assert result["after"] == ["applied", []]
    assert result["trust"].splitlines()[1:] == [new.public_text]
    assert result["prev"] == old.public_text + "\n"
