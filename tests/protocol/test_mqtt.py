"""agent.protocol.mqtt: broker URLs, password files, TLS contexts and the aiomqtt client, with real files and a
real Mosquitto; and the guard that keeps every use of aiomqtt's and paho's privates in that one module."""

from __future__ import annotations

import ast
import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from agent.core.errors import AgentError
from agent.protocol.mqtt import (
    BrokerAddress,
    BrokerSettings,
    LastWill,
    TlsFiles,
    create_client,
    drop_client,
    parse_broker_url,
    read_password,
    tls_context,
)
from tests.peers.mosquitto import Mosquitto
from tests.uplink.tls_broker import Pki, TlsMosquitto, make_pki

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0

# ------------------------------------------------------------------------------------------- broker URLs


def test_broker_url_gives_host_port_and_tls() -> None:
    """mqtts:// means TLS on 8883 unless a port is given; mqtt:// plain TCP on 1883."""
    assert parse_broker_url("mqtts://broker.example") == BrokerAddress("broker.example", 8883, True)
    assert parse_broker_url(" mqtt://10.0.0.5:1884/ ") == BrokerAddress("10.0.0.5", 1884, False)


@pytest.mark.parametrize(("url", "message"), [
    ("tcp://host:1883", "broker URL 'tcp://host:1883': scheme must be mqtt or mqtts, not 'tcp'"),
    ("host", "broker URL 'host': scheme must be mqtt or mqtts, not 'missing'"),
    ("mqtt://:1883", "broker URL 'mqtt://:1883' has no host name"),
    ("mqtt://host:99999", "broker URL 'mqtt://host:99999': Port out of range 0-65535"),
    ("mqtt://host:port", "broker URL 'mqtt://host:port': Port could not be cast to integer value as 'port'"),
    ("mqtt://gw1:s3cret@host", "broker URL 'mqtt://gw1:s3cret@host' contains credentials"),
    ("mqtt://host/mine", "broker URL 'mqtt://host/mine' has a path or query; topics are set with --prefix"),
    ("mqtt://host?x=1", "broker URL 'mqtt://host?x=1' has a path or query; topics are set with --prefix"),
])
def test_bad_broker_url_is_refused_with_what_is_wrong(url: str, message: str) -> None:
    """Each mistake has its own message, names the option, and says what to write instead."""
    with pytest.raises(AgentError) as caught:
        parse_broker_url(url)

    assert caught.value.message == message
    assert caught.value.key == "--broker"
    assert "mqtt://HOST:PORT" in (caught.value.hint or "") or "--password-file" in (caught.value.hint or "")


# ---------------------------------------------------------------------------------------- password files


@pytest.mark.parametrize(("content", "password"), [
    ("s3cret\n", "s3cret"),
    ("s3cret", "s3cret"),
    ("s3cret\r\nsecond line\n", "s3cret"),
    (" spaced out \n", " spaced out "),
])
def test_password_is_the_first_line_without_its_line_end(tmp_path: Path, content: str, password: str) -> None:
    """Only the line end goes; spaces are part of the password."""
    path = tmp_path / "mqtt.password"
    path.write_bytes(content.encode())

    assert read_password(path) == password


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, "cannot read the password file: No such file or directory"),
    (lambda p: p.mkdir(), "cannot read the password file: Is a directory"),
    (lambda p: p.write_bytes(b""), "the password file's first line is empty"),
    (lambda p: p.write_bytes(b"\nTopS3cret\n"), "the password file's first line is empty"),
    (lambda p: p.write_bytes(b"\xffTopS3cret\n"), "the password file is not UTF-8 text"),
])
def test_unusable_password_file_is_an_error_naming_the_file_not_the_secret(
    tmp_path: Path, make: object, message: str
) -> None:
    """Missing, unreadable, empty or garbled: an AgentError with the path and a hint, never the content."""
    path = tmp_path / "mqtt.password"
    make(path)  # type: ignore[operator]

    with pytest.raises(AgentError) as caught:
        read_password(path)

    assert caught.value.message == message
    assert caught.value.path == str(path)
    assert caught.value.hint
    assert "TopS3cret" not in str(caught.value)


def test_settings_never_show_the_password() -> None:
    """A BrokerSettings in a log line or a traceback does not carry the password along."""
    settings = BrokerSettings("broker.example", 8883, username="gw1", password="TopS3cret")

    assert "TopS3cret" not in repr(settings)
    assert settings.broker == "broker.example:8883"


# --------------------------------------------------------------------------------------------------- TLS


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def test_tls_context_verifies_against_the_given_ca_only(pki: Pki) -> None:
    """With a CA file, that CA (and not the system's) is trusted; certificate and host name are checked."""
    context = tls_context(TlsFiles(ca=pki.ca))

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test CA"),),)]


def test_tls_context_without_a_ca_file_still_verifies(pki: Pki) -> None:
    """No CA file means the system's CA store, never "no verification"."""
    context = tls_context(TlsFiles())

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


def test_tls_context_loads_a_client_certificate(pki: Pki) -> None:
    """A matching certificate and key load without complaint."""
    tls_context(TlsFiles(ca=pki.ca, cert=pki.client_cert, key=pki.client_key))


def test_missing_ca_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"

    with pytest.raises(AgentError, match="cannot load the CA certificate") as caught:
        tls_context(TlsFiles(ca=missing))

    assert caught.value.path == str(missing)


def test_key_of_another_certificate_is_an_error_naming_the_certificate(tmp_path: Path, pki: Pki) -> None:
    other = make_pki(tmp_path / "other")

    with pytest.raises(AgentError, match="cannot load the client certificate") as caught:
        tls_context(TlsFiles(ca=pki.ca, cert=pki.client_cert, key=other.client_key))

    assert caught.value.path == str(pki.client_cert)
    assert "key matches the certificate" in (caught.value.hint or "")


# ------------------------------------------------------------------------------------ the client, for real


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[TlsMosquitto]:
    b = TlsMosquitto(tmp_path / "tls-broker", pki, users={"gw1": "first-S3cret"})
    b.start()
    try:
        yield b
    finally:
        b.kill()


async def test_password_file_is_read_again_at_every_client(tmp_path: Path, pki: Pki,
                                                           tls_broker: TlsMosquitto) -> None:
    """Over TLS with the test CA: the password file's current content is used, so a rotated (here: wrong)
    password takes effect at the next client without a restart."""
    secret = tmp_path / "mqtt.password"
    secret.write_text("first-S3cret\n")
    settings = BrokerSettings(tls_broker.host, tls_broker.port, username="gw1", password_file=secret,
                              tls=TlsFiles(ca=pki.ca), client_id="test-rotation")

    async with asyncio.timeout(DEADLINE_S):
        async with await create_client(settings) as client:
            await client.publish("mine/test", b"x", qos=1, timeout=10)
        secret.write_text("rotated-S3cret\n")
        with pytest.raises(aiomqtt.MqttError, match=r"(?i)not authori"):
            async with await create_client(settings):
                pass


async def test_dropped_client_leaves_without_disconnect_so_its_will_is_published(broker: Mosquitto) -> None:
    """drop_client closes the socket without DISCONNECT: the broker publishes the last will, as after a
    dead link, and nothing of the dropped client raises or complains afterwards."""
    will = LastWill("mine/test/status", b"offline", qos=1, retain=False)
    gateway = BrokerSettings(broker.host, broker.port, client_id="test-dropped", keepalive_s=5)
    watcher = BrokerSettings(broker.host, broker.port, client_id="test-watcher")

    async with asyncio.timeout(DEADLINE_S), await create_client(watcher) as watching:
        await watching.subscribe(will.topic, qos=1, timeout=10)
        client = await create_client(gateway, will=will)
        await client.__aenter__()
        drop_client(client)
        message = await anext(aiter(watching.messages))

    assert message.payload == b"offline"


# ------------------------------------------------------------------------------------------------- guard

_PRIVATE_NAMES = {"_client", "_sock_close", "_connected", "_disconnected", "_loop", "_queue"}
_PRODUCT = ("agent", "backend", "drivers", "buffer", "config")
_THE_MODULE = Path("agent/protocol/mqtt.py")


def _violations(source: str) -> list[str]:
    """What in ``source`` reaches into aiomqtt or paho: a private attribute of an object that is not the
    module's own (``self``/``cls``), an ``aiomqtt.Client(...)`` call, or an import of paho or of aiomqtt's
    ``Client`` by name."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in _PRIVATE_NAMES:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Client":
            if isinstance(node.func.value, ast.Name) and node.func.value.id == "aiomqtt":
                found.append(f"line {node.lineno}: aiomqtt.Client(")
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            if node.module.split(".")[0] == "paho":
                found.append(f"line {node.lineno}: from {node.module} import")
            if node.module.startswith("aiomqtt") and any(a.name == "Client" for a in node.names):
                found.append(f"line {node.lineno}: from {node.module} import Client")
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "paho" for a in node.names):
            found.append(f"line {node.lineno}: import paho")
    return found


def test_guard_recognises_what_it_forbids() -> None:
    """The scan below is not vacuous: each forbidden form is found, the module's own attributes are not."""
    source = (
        "import aiomqtt\nimport paho.mqtt.client\nfrom aiomqtt import Client\n"
        "c = aiomqtt.Client('h')\nc._client.ack(1, 1)\nc._client._sock_close()\nc._disconnected.done()\n"
        "class Own:\n    def f(self):\n        return self._client\n"
    )

    assert len(_violations(source)) == 7


def test_only_the_mqtt_module_touches_aiomqtt_internals_or_builds_clients() -> None:
    """Every aiomqtt client is made by agent.protocol.mqtt.create_client and only that module touches
    aiomqtt's or paho's privates, so an aiomqtt upgrade is checked in one place. Tests are not scanned."""
    offenders: dict[str, list[str]] = {}
    for package in _PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative == _THE_MODULE or "tests" in relative.parts:
                continue
            found = _violations(path.read_text(encoding="utf-8"))
            if found:
                offenders[str(relative)] = found

    assert offenders == {}
