"""What a validly signed push may still not change: the settings that would turn the gateway against itself.

A push is signed by an operator key, but a key can leak and an operator can be mistaken; a push must not be able
to make the gateway hand out what it holds locally. So, whatever its signature:

* **File paths** (every setting typed ``Path`` in the schema: key files, TLS files, password files, trust files,
  the state directory, the buffer, OPC UA certificate paths, and any path setting added later) may not be
  changed at all. A push that pointed ``mqtt.password_file`` at another readable file sent that file's first
  line in MQTT CONNECT; a certificate or key path is the same kind of read. The files a gateway uses are the
  technician's business, set on site; a new device added by a push may use a path setting's default only.
* **Serial device paths** (settings typed ``agent.core.fields.DevicePath``) may change only to a path that
  ``remote_config.allowed_device_paths`` in the configuration in force allows.
* **The broker** (``mqtt.host``, ``mqtt.port``, TLS on or off) receives the MQTT password: it may change only to
  an entry of ``remote_config.allowed_brokers``. Likewise a device that uses a local file the technician gave it
  (an OPC UA password, certificate or key file) keeps its address (``url``, ``host``, ``port``): the file's
  content goes to that server.
* **The health endpoint**, which needs no password, may not be moved off loopback unless the configuration in
  force already listens on that host (which only a technician's file can have set).
* **[remote_config]** itself: only ``health_window_s``, ``max_push_bytes`` and ``history`` may change; a push
  may not disable remote configuration, move the trust file, widen its own allow-lists or stretch its own
  expiry and version limits.

The paths are found from the schema's types (:func:`local_settings`), never from a list kept by hand, so a path
setting added to the schema is covered without anyone remembering this module. Everything is compared with the
configuration in force, which by induction holds only what a technician's file set or these rules let through.

Rejected: an allow-list of file paths a push may choose; every entry would be a file the push could read out
through some other setting, and no operator task needs to move a gateway's files remotely.
"""

from __future__ import annotations

__all__ = ["LOCAL_ONLY", "local_settings", "push_limits", "remote_rules"]

import dataclasses
import ipaddress
import types
import typing
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from agent.core.fields import LocalDevice
from agent.protocol.push import PushLimits
from config.schema import AgentConfig, RemoteConfig

Kind = Literal["file", "device"]

#: The settings of [remote_config] a push may change; any other (including one added later) is local-only.
PUSH_MAY_CHANGE = frozenset({"health_window_s", "max_push_bytes", "history"})
LOCAL_ONLY = frozenset(RemoteConfig.model_fields) - PUSH_MAY_CHANGE


@dataclasses.dataclass(frozen=True, slots=True)
class LocalSetting:
    kind: Kind
    value: str | None
    default: str | None


def push_limits(remote: RemoteConfig) -> PushLimits:
    return PushLimits(max_bytes=remote.max_push_bytes, max_age_s=float(remote.max_push_age_s),
                      clock_skew_s=float(remote.clock_skew_s), max_version_step=remote.max_version_step)


def remote_rules(running: AgentConfig, new: AgentConfig) -> list[str]:
    """Every reason ``new``, arriving by push, may not replace ``running``; empty when it may."""
    reasons: list[str] = []
    remote = new.remote_config
    if remote is None or not remote.enabled:
        return ["remote_config: a push may not disable remote configuration (only a technician on site may, by "
                "editing the local file)"]
    old_remote = running.remote_config or RemoteConfig()
    if new.trust_path != running.trust_path:
        reasons.append("remote_config.trust_file: a push may not change which file holds the operator keys "
                       "(rotate keys with a push that carries a trust list)")
    for key in sorted(LOCAL_ONLY - {"enabled", "trust_file"}):
        if getattr(remote, key) != getattr(old_remote, key):
            reasons.append(f"remote_config.{key}: only the technician's local file may change it")
    reasons += _path_rules(running, new, old_remote)
    reasons += _broker_rules(running, new, old_remote)
    reasons += _credential_address_rules(running, new)
    reasons += _health_rules(running, new)
    return reasons


def _path_rules(running: AgentConfig, new: AgentConfig, remote: RemoteConfig) -> list[str]:
    reasons = []
    before = local_settings(running)
    for key, setting in local_settings(new).items():
        if key == "remote_config.trust_file":
            continue  # its own rule above
        old = before[key].value if key in before else setting.default
        if setting.value == old:
            continue
        if setting.kind == "file":
            reasons.append(f"{key}: a push may not change a file path (got {_short(setting.value)}; in force "
                           f"{_short(old)}); only the technician's local file may")
        elif setting.value is None or not _device_allowed(setting.value, remote.allowed_device_paths):
            reasons.append(f"{key}: device path {_short(setting.value)} is not allowed by "
                           "remote_config.allowed_device_paths of the configuration in force")
    return reasons


def _device_allowed(value: str, patterns: list[str]) -> bool:
    path = PurePosixPath(value)
    if not path.is_absolute() or ".." in path.parts or str(path) != value:
        return False
    return any(path.match(pattern) and len(path.parts) == len(PurePosixPath(pattern).parts) for pattern in patterns)


def _broker_rules(running: AgentConfig, new: AgentConfig, remote: RemoteConfig) -> list[str]:
    def broker(config: AgentConfig) -> tuple[str, str, int]:
        mqtt = config.mqtt
        return ("mqtts" if mqtt.tls is not None else "mqtt", mqtt.host.lower(), mqtt.port)

    wanted = broker(new)
    if wanted == broker(running):
        return []
    allowed = {(u.partition("://")[0], *_host_port(u.partition("://")[2])) for u in remote.allowed_brokers}
    if wanted in allowed:
        return []
    scheme, host, port = wanted
    return [f"mqtt: a push may not move the broker connection to {scheme}://{_short_text(host)}:{port}: it is not "
            "in remote_config.allowed_brokers of the configuration in force (the broker receives the MQTT "
            "password)"]


_ADDRESS_FIELDS = ("url", "host", "port")


def _credential_address_rules(running: AgentConfig, new: AgentConfig) -> list[str]:
    reasons = []
    settings = local_settings(running)
    for name, device in running.devices.items():
        pushed = new.devices.get(name)
        if pushed is None:
            continue
        files = [key for key, s in settings.items() if key.startswith(f"devices.{name}.") and s.kind == "file"
                 and s.value is not None and s.value != s.default]
        if not files:
            continue
        named = ", ".join(key.removeprefix(f"devices.{name}.") for key in files)
        for field in _ADDRESS_FIELDS:
            if getattr(device, field, None) != getattr(pushed, field, None):
                reasons.append(f"devices.{name}.{field}: a push may not change the address of a device that uses "
                               f"local files ({named}): their content goes to that server")
    return reasons


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]").lower(), int(port)


def _health_rules(running: AgentConfig, new: AgentConfig) -> list[str]:
    if not new.health.enabled:
        return []
    host = new.health.host
    if _loopback(host) or (running.health.enabled and host.lower() == running.health.host.lower()):
        return []
    return [f"health.listen: a push may not open the health endpoint (no password) on {_short_text(host)}; only "
            "loopback, or the host the configuration in force already listens on (set by the technician's file)"]


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_settings(config: AgentConfig) -> dict[str, LocalSetting]:
    """Every setting of ``config`` that names something of this machine, by dotted key
    (``devices.plc1.security.pki_dir``): kind ``file`` for ``Path`` types, ``device`` for ``DevicePath``."""
    found: dict[str, LocalSetting] = {}
    _walk(config, "", found)
    return found


def _walk(value: object, prefix: str, found: dict[str, LocalSetting]) -> None:
    if isinstance(value, BaseModel):
        fields: dict[str, FieldInfo] = type(value).model_fields
    elif dataclasses.is_dataclass(value) and hasattr(value, "__pydantic_fields__"):
        fields = value.__pydantic_fields__
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{prefix}{key}.", found)
        return
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _walk(item, f"{prefix}{i}.", found)
        return
    else:
        return
    for name, field in fields.items():
        item = getattr(value, name)
        kind = _kind(field)
        if kind is not None:
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            found[prefix + name] = LocalSetting(kind, _text(item), _text(default))
        else:
            _walk(item, f"{prefix}{name}.", found)


def _kind(field: FieldInfo) -> Kind | None:
    if any(isinstance(m, LocalDevice) for m in field.metadata):
        return "device"
    return _kind_of(field.annotation)


def _kind_of(annotation: Any) -> Kind | None:
    if annotation is None:
        return None
    if isinstance(annotation, type) and issubclass(annotation, PurePosixPath | Path):
        return "file"
    if typing.get_origin(annotation) is typing.Annotated:
        if any(isinstance(m, LocalDevice) for m in annotation.__metadata__):
            return "device"
        return _kind_of(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (list, tuple, set, frozenset):
        kinds = {_kind_of(arg) for arg in typing.get_args(annotation)} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = {_kind_of(arg) for arg in typing.get_args(annotation)} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(sorted(str(v) for v in value))
    return str(value)


def _short(value: str | None) -> str:
    return "none" if value is None else repr(_short_text(value))


def _short_text(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
