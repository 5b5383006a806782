"""Everything the agent writes, with the example configurations' defaults, is where the shipped unit lets it.

systemd/mine-agent.service runs the agent with ``ProtectSystem=strict``: the whole file system is read-only
to it except the directories the unit names (``StateDirectory=``, ``ReadWritePaths=`` and the like). A
default path outside them fails only on a real gateway, at the moment the agent first writes there (a
trust rotation by push, a rejected OPC UA certificate), so the paths are checked here against the unit
itself. The paths come from the code that writes them (the buffer's head file, the configuration state
files, the pid file), not from a list kept beside it.

Rejected: booting the unit under systemd to see what fails (tests/install does that on demand, as root);
it would only catch the writes a short run happens to make.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from agent.protocol import wire
from agent.remote.service import PID_FILE
from agent.remote.state import StateFiles
from buffer import DiskQueue
from config.loader import load_config
from config.schema import AgentConfig, RemoteConfig
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.pki import Pki

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "mine-agent.service"
EXAMPLES = sorted((ROOT / "config" / "examples").glob("*.toml"))
# Where systemd puts the directories named by the unit's *Directory= settings, for a system service.
_DIRECTORY_ROOTS = {"StateDirectory": "/var/lib", "CacheDirectory": "/var/cache", "LogsDirectory": "/var/log",
                    "RuntimeDirectory": "/run"}


def unit_settings(text: str) -> list[tuple[str, str]]:
    """The ``[Service]`` section's settings in order, as (key, value); comments and other sections left out."""
    settings: list[tuple[str, str]] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            settings.append((key.strip(), value.strip()))
    return settings


def writable_dirs(text: str) -> list[PurePosixPath]:
    """The directories a unit with ``ProtectSystem=strict`` may write (PrivateTmp's /tmp aside: it is emptied
    at every start, so nothing the agent keeps may live there)."""
    dirs: list[PurePosixPath] = []
    for key, value in unit_settings(text):
        if key in _DIRECTORY_ROOTS:
            dirs += [PurePosixPath(_DIRECTORY_ROOTS[key]) / name for name in value.split()]
        elif key == "ReadWritePaths":
            dirs += [PurePosixPath(p.lstrip("-+")) for p in value.split()]
    return dirs


def write_paths(config: AgentConfig) -> dict[str, Path]:
    """Each file or directory the agent writes with this configuration, named by what it is."""
    buffer = DiskQueue(config.buffer_path, max_bytes=int(config.buffer.max_bytes), frame_tags=wire.frame_tags)
    state = StateFiles(config.gateway.state_dir)
    # The operator trust list is written by a trust rotation. Without [remote_config] there is none; the
    # check is made for the section as documented, added with its defaults.
    remote = config if config.remote_config is not None else config.model_copy(
        update={"remote_config": RemoteConfig()})
    paths = {
        "state directory": config.gateway.state_dir,
        "buffer": buffer.path,
        "buffer head file": buffer.head_path,
        "buffer quarantine (beside the buffer)": buffer.path.parent,
        "configuration state": state.dir,
        "pid file": config.gateway.state_dir / PID_FILE,
        "operator trust list": remote.trust_path,
    }
    for name, device in config.devices.items():
        if isinstance(device, OpcUaDevice):
            paths[f"device {name}: rejected OPC UA certificates"] = Pki(device.security.pki_dir).rejected
    return {what: path for what, path in paths.items() if path is not None}


def test_the_unit_makes_everything_else_read_only() -> None:
    """The premise of the check below: the unit's writable directories are all the agent may write."""
    settings = dict(unit_settings(UNIT.read_text()))

    assert settings.get("ProtectSystem") == "strict"
    assert writable_dirs(UNIT.read_text()) == [PurePosixPath("/var/lib/mine-agent")]


def test_writable_dirs_reads_every_kind_of_setting() -> None:
    text = ("[Unit]\nStateDirectory=not-service\n[Service]\n# ReadWritePaths=/commented\n"
            "StateDirectory=a b\nReadWritePaths=-/srv/x +/srv/y\nRuntimeDirectory=r\n")

    assert writable_dirs(text) == [PurePosixPath(p) for p in ("/var/lib/a", "/var/lib/b", "/srv/x", "/srv/y",
                                                               "/run/r")]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_default_write_path_is_writable_under_the_unit(example: Path) -> None:
    """Buffer, head file, configuration state, pid file, operator trust list and OPC UA certificates lie in
    a directory the unit lets the agent write."""
    writable = writable_dirs(UNIT.read_text())
    paths = write_paths(load_config(example))

    outside = {what: str(path) for what, path in paths.items()
               if not any(PurePosixPath(path).is_relative_to(d) for d in writable)}

    assert {"buffer", "operator trust list", "pid file"} <= paths.keys()
    assert outside == {}, f"not writable under {UNIT.name} ({[str(d) for d in writable]}): {outside}"


def test_the_gateway_example_is_among_them() -> None:
    """The example the installer copies to /etc/mine-agent/agent.toml is checked, so the loop cannot pass
    by checking nothing that ships."""
    assert ROOT / "config" / "examples" / "gateway.toml" in EXAMPLES


def test_an_explicit_trust_file_is_kept() -> None:
    """``trust_file`` may still name another file; only its default moved into the state directory."""
    config = load_config(ROOT / "config" / "examples" / "gateway.toml")
    remote = RemoteConfig(trust_file=Path("/srv/keys/operators.pub"))

    assert config.model_copy(update={"remote_config": remote}).trust_path == Path("/srv/keys/operators.pub")
    assert config.model_copy(update={"remote_config": RemoteConfig()}).trust_path == (
        config.gateway.state_dir / "operator.trust")
