"""What a validly signed push may still not change (agent.remote.guard), as a scenario table of edits to a real
configuration: file paths never, serial ports and the broker only as the local allow-lists say, the health
endpoint not off loopback, [remote_config]'s own limits not at all.

The path settings are found from the schema's types: a test below derives them independently from the JSON
Schema (``format: path``) and another adds a path setting to a model, so a new one cannot slip past the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import Field

from agent.core.fields import DevicePath, StrictModel
from agent.remote.guard import local_settings, remote_rules
from config.loader import parse_config
from config.schema import AgentConfig, json_schema

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
REMOTE = """
[remote_config]
trust_file = "/var/lib/mine-agent/operator.trust"
health_window_s = 60
"""
# The OPC UA hoist example (TLS broker with a password file, an OPC UA device with a password file) and the
# serial dust monitor, both with remote configuration.
HOIST = (EXAMPLES / "opcua-hoist.toml").read_text() + REMOTE
DUST = (EXAMPLES / "serial-dust.toml").read_text() + REMOTE
OPCUA_DEVICE = """
[devices.crusher]
protocol = "opcua"
url = "opc.tcp://10.20.1.16:4840"
{extra}
[[devices.crusher.tags]]
name = "speed"
node = "ns=2;i=5"
"""


def _sub(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _remote(text: str, extra: str) -> str:
    return _sub(text, "health_window_s = 60\n", f"health_window_s = 60\n{extra}\n")


# (running configuration's text, the pushed text made from it, the reasons; [] = allowed)
CASES: dict[str, tuple[str, Callable[[str], str], list[str]]] = {
    "no change": (HOIST, lambda t: t, []),
    "mqtt.password_file aimed at another file": (HOIST, lambda t: _sub(
        t, '"/etc/mine-agent/mqtt.password"', '"/etc/shadow"'), [
        "mqtt.password_file: a push may not change a file path (got '/etc/shadow'; in force "
        "'/etc/mine-agent/mqtt.password'); only the technician's local file may"]),
    "password file aimed elsewhere and the broker moved": (HOIST, lambda t: _sub(_sub(
        t, '"/etc/mine-agent/mqtt.password"', '"/etc/mine-agent/keys/gateway.key"'),
        'host = "backend.example.net"', 'host = "evil.example.org"'), [
        "mqtt.password_file: a push may not change a file path (got '/etc/mine-agent/keys/gateway.key'; in force "
        "'/etc/mine-agent/mqtt.password'); only the technician's local file may",
        "mqtt: a push may not move the broker connection to mqtts://evil.example.org:8883: it is not in "
        "remote_config.allowed_brokers of the configuration in force (the broker receives the MQTT password)"]),
    "a password file added where there was none": (DUST, lambda t: _sub(
        t, 'host = "broker.example.net"', 'host = "broker.example.net"\nusername = "u"\npassword_file = "/x"'), [
        "mqtt.password_file: a push may not change a file path (got '/x'; in force none); only the technician's "
        "local file may"]),
    "TLS CA file": (HOIST, lambda t: _sub(t, '"/etc/mine-agent/ca.pem"', '"/tmp/ca.pem"'), [
        "mqtt.tls.ca_file: a push may not change a file path (got '/tmp/ca.pem'; in force "
        "'/etc/mine-agent/ca.pem'); only the technician's local file may"]),
    "gateway key file": (HOIST, lambda t: _sub(t, '"/etc/mine-agent/keys/gateway.key"', '"/root/k.pem"'), [
        "gateway.key_file: a push may not change a file path (got '/root/k.pem'; in force "
        "'/etc/mine-agent/keys/gateway.key'); only the technician's local file may"]),
    "state directory": (HOIST, lambda t: _sub(t, "[gateway]\n", '[gateway]\nstate_dir = "/tmp/s"\n'), [
        "gateway.state_dir: a push may not change a file path (got '/tmp/s'; in force '/var/lib/mine-agent'); "
        "only the technician's local file may"]),
    "buffer file": (HOIST, lambda t: t + '\n[buffer]\npath = "/etc/passwd"\n', [
        "buffer.path: a push may not change a file path (got '/etc/passwd'; in force none); only the "
        "technician's local file may"]),
    "OPC UA user password file": (HOIST, lambda t: _sub(
        t, '"/etc/mine-agent/hoist-opcua.password"', '"/etc/mine-agent/mqtt.password"'), [
        "devices.hoist.identity.password_file: a push may not change a file path (got "
        "'/etc/mine-agent/mqtt.password'; in force '/etc/mine-agent/hoist-opcua.password'); only the "
        "technician's local file may"]),
    "OPC UA device with a local password file sent to another server": (HOIST, lambda t: _sub(
        t, "opc.tcp://10.20.1.15:4840", "opc.tcp://evil.example.org:4840"), [
        "devices.hoist.url: a push may not change the address of a device that uses local files "
        "(identity.password_file): their content goes to that server"]),
    "OPC UA device without local files moved": (HOIST + OPCUA_DEVICE.format(extra=""), lambda t: _sub(
        t, "opc.tcp://10.20.1.16:4840", "opc.tcp://10.20.1.17:4840"), []),
    "new OPC UA device with its defaults": (HOIST, lambda t: t + OPCUA_DEVICE.format(extra=""), []),
    "new OPC UA device with a certificate directory": (HOIST, lambda t: t + OPCUA_DEVICE.format(
        extra='[devices.crusher.security]\npki_dir = "/etc"\n'), [
        "devices.crusher.security.pki_dir: a push may not change a file path (got '/etc'; in force "
        "'/var/lib/mine-agent/opcua-pki'); only the technician's local file may"]),
    "trust file moved": (HOIST, lambda t: _sub(t, '"/var/lib/mine-agent/operator.trust"', '"/tmp/t"'), [
        "remote_config.trust_file: a push may not change which file holds the operator keys (rotate keys with "
        "a push that carries a trust list)"]),
    "serial port changed, no allow-list": (DUST, lambda t: _sub(t, '"/dev/ttyUSB1"', '"/dev/ttyUSB2"'), [
        "devices.dust.port: device path '/dev/ttyUSB2' is not allowed by remote_config.allowed_device_paths of "
        "the configuration in force"]),
    "serial port within the allow-list": (_remote(DUST, 'allowed_device_paths = ["/dev/ttyUSB*"]'),
                                          lambda t: _sub(t, '"/dev/ttyUSB1"', '"/dev/ttyUSB2"'), []),
    "serial port climbing out of the allow-list": (_remote(DUST, 'allowed_device_paths = ["/dev/ttyUSB*"]'),
                                                   lambda t: _sub(t, '"/dev/ttyUSB1"', '"/dev/ttyUSB0/../sda"'), [
        "devices.dust.port: device path '/dev/ttyUSB0/../sda' is not allowed by remote_config.allowed_device_paths "
        "of the configuration in force"]),
    "serial port one level deeper than the pattern": (_remote(DUST, 'allowed_device_paths = ["/dev/*"]'),
                                                      lambda t: _sub(t, '"/dev/ttyUSB1"', '"/dev/disk/sda"'), [
        "devices.dust.port: device path '/dev/disk/sda' is not allowed by remote_config.allowed_device_paths "
        "of the configuration in force"]),
    "broker moved, no allow-list": (HOIST, lambda t: _sub(t, "port = 8883", "port = 8884"), [
        "mqtt: a push may not move the broker connection to mqtts://backend.example.net:8884: it is not in "
        "remote_config.allowed_brokers of the configuration in force (the broker receives the MQTT password)"]),
    "broker moved within the allow-list": (
        _remote(HOIST, 'allowed_brokers = ["mqtts://backup.example.net:8883"]'),
        lambda t: _sub(t, 'host = "backend.example.net"', 'host = "backup.example.net"'), []),
    "TLS turned off": (_remote(HOIST, 'allowed_brokers = ["mqtts://backend.example.net:8883"]'),
                       lambda t: _sub(t, '[mqtt.tls]\nca_file = "/etc/mine-agent/ca.pem"\n', ""), [
        "mqtt: a push may not move the broker connection to mqtt://backend.example.net:8883: it is not in "
        "remote_config.allowed_brokers of the configuration in force (the broker receives the MQTT password)"]),
    "allow-list widened by the push itself": (HOIST, lambda t: _remote(t, 'allowed_brokers = ["mqtt://e:1"]'), [
        "remote_config.allowed_brokers: only the technician's local file may change it"]),
    "own expiry stretched": (HOIST, lambda t: _remote(t, "max_push_age_s = 2592000\nmax_version_step = 9"), [
        "remote_config.max_push_age_s: only the technician's local file may change it",
        "remote_config.max_version_step: only the technician's local file may change it"]),
    "health window changed": (HOIST, lambda t: _sub(t, "health_window_s = 60", "health_window_s = 90"), []),
    "remote configuration disabled": (HOIST, lambda t: _remote(t, "enabled = false"), [
        "remote_config: a push may not disable remote configuration (only a technician on site may, by "
        "editing the local file)"]),
    "health endpoint on every address": (HOIST, lambda t: t + '\n[health]\nlisten = "0.0.0.0:9108"\n', [
        "health.listen: a push may not open the health endpoint (no password) on 0.0.0.0; only loopback, or the "
        "host the configuration in force already listens on (set by the technician's file)"]),
    "health endpoint on a named host": (HOIST, lambda t: t + '\n[health]\nlisten = "gw.example.net:9108"\n', [
        "health.listen: a push may not open the health endpoint (no password) on gw.example.net; only loopback, "
        "or the host the configuration in force already listens on (set by the technician's file)"]),
    "health endpoint on another loopback port": (HOIST, lambda t: t + '\n[health]\nlisten = "[::1]:9200"\n', []),
    "health endpoint where the local file already has it": (
        HOIST + '\n[health]\nlisten = "0.0.0.0:9108"\n', lambda t: _sub(t, "0.0.0.0:9108", "0.0.0.0:9200"), []),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_what_a_push_may_not_change(case: str) -> None:
    running_text, edit, reasons = CASES[case]
    running = parse_config(running_text, "running")
    new = parse_config(edit(running_text), "push")

    assert remote_rules(running, new) == reasons


def _path_properties(schema: dict[str, object]) -> set[tuple[str, str]]:
    """(model title, property) of every property the JSON Schema marks as a path, found without the guard."""
    found = set()
    defs = dict(schema.get("$defs", {}))  # type: ignore[call-overload]
    defs["AgentConfig"] = schema
    for name, model in defs.items():
        for prop, spec in model.get("properties", {}).items():
            alternatives = [spec, *spec.get("anyOf", []), *spec.get("items", {}).get("anyOf", [])]
            if any(isinstance(a, dict) and a.get("format") == "path" for a in alternatives):
                found.add((name, prop))
    return found


def test_every_path_setting_of_the_schema_is_guarded() -> None:
    """Every property the JSON Schema types as a path is one the guard finds in a configuration that has every
    table of the schema (the examples together), so none is forgotten."""
    expected = {prop for _, prop in _path_properties(json_schema())}
    seen: set[str] = set()
    for example in [HOIST, DUST, *(p.read_text() for p in EXAMPLES.glob("*.toml"))]:
        config = parse_config(example + ("" if "[remote_config]" in example else REMOTE), "example")
        seen |= {key.rsplit(".", 1)[1] for key, s in local_settings(config).items() if s.kind == "file"}
    assert expected, "the JSON Schema marks no path at all: this test would prove nothing"
    assert expected - seen == set(), expected - seen


def test_a_new_path_setting_is_covered_without_naming_it() -> None:
    """A path setting added to a table later (here: to a model built on the fly) is found by its type."""

    class Future(StrictModel):
        archive_keys_file: Path | None = None
        spool: list[Path] = Field(default_factory=list)
        modem: DevicePath = "/dev/ttyACM0"
        note: str = "not a path"

    running = parse_config(HOIST, "running")
    found = local_settings(Future(archive_keys_file=Path("/etc/k"), spool=[Path("/a")]))  # type: ignore[arg-type]
    assert {k: (s.kind, s.value) for k, s in found.items()} == {
        "archive_keys_file": ("file", "/etc/k"), "spool": ("file", "/a"), "modem": ("device", "/dev/ttyACM0")}
    assert isinstance(running, AgentConfig)
