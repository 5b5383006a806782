"""TLS to a real Mosquitto with a test CA: client-certificate auth and username/password over TLS."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.uplink import MqttUplink
from buffer import AsyncDiskQueue
from config.schema import TlsConfig
from tests.uplink.harness import GW, Collector, Producer, mqtt_config, running, wait_until
from tests.uplink.tls_broker import Pki, TlsMosquitto, make_pki


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@contextlib.contextmanager
def tls_broker(tmp_path: Path, pki: Pki, users: dict[str, str] | None = None) -> Iterator[TlsMosquitto]:
    broker = TlsMosquitto(tmp_path / "tls-broker", pki, users=users)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def collector(broker: TlsMosquitto, pki: Pki, **auth: str) -> Collector:
    """A subscriber that connects over TLS with the client certificate (and ``auth``, if given)."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return Collector(broker.port, client_id="tls-collector", tls_context=context, **auth)


async def test_client_certificate_auth_over_tls_delivers(
    tmp_path: Path, pki: Pki, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """With the CA and a client certificate configured, the uplink connects to a cert-only broker."""
    with tls_broker(tmp_path, pki) as broker:
        tls = TlsConfig(ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        uplink = MqttUplink(mqtt_config(broker.port, tls=tls), GW, queue)
        async with collector(broker, pki) as received, running(uplink):
            await producer.append(5)
            await wait_until(lambda: received.unique == set(range(1, 6)), "delivered over TLS")
            await wait_until(lambda: uplink.stats.acked == 5, "PUBACKs received over TLS")

    assert uplink.stats.connect_failures == 0


async def test_password_file_over_tls_delivers_and_is_never_logged(
    tmp_path: Path, pki: Pki, queue: AsyncDiskQueue, producer: Producer
) -> None:
    """Username and a password read from password_file authenticate over TLS; the password is not logged."""
    secret = "s3cret-Pa55"
    password_file = tmp_path / "mqtt.pass"
    password_file.write_text(secret + "\n")
    with tls_broker(tmp_path, pki, users={"gw1": secret, "reader": "r"}) as broker:
        tls = TlsConfig(ca_file=pki.ca)
        config = mqtt_config(broker.port, tls=tls, username="gw1", password_file=password_file)
        uplink = MqttUplink(config, GW, queue)
        await producer.append(3)
        async with collector(broker, pki, username="reader", password="r") as received:
            with capture_logs() as logs:
                async with running(uplink):
                    await wait_until(lambda: received.unique == {1, 2, 3}, "delivered over TLS")
                    await wait_until(lambda: uplink.stats.acked == 3, "PUBACKs received over TLS")

    assert secret not in repr(logs)


async def test_wrong_password_is_one_warning_with_a_hint_and_keeps_retrying(
    tmp_path: Path, pki: Pki, queue: AsyncDiskQueue
) -> None:
    """A refused login is reported once per outage, with what to check, and retried with backoff."""
    password_file = tmp_path / "mqtt.pass"
    password_file.write_text("wr0ng-Secret\n")
    with tls_broker(tmp_path, pki, users={"gw1": "right"}) as broker:
        config = mqtt_config(broker.port, tls=TlsConfig(ca_file=pki.ca), username="gw1",
                             password_file=password_file)
        uplink = MqttUplink(config, GW, queue)
        with capture_logs() as logs:
            async with running(uplink):
                await wait_until(lambda: uplink.stats.connect_failures >= 3, "several attempts")

    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "uplink_down"
    assert "wr0ng-Secret" not in repr(logs)
    assert not uplink.stats.connected


async def test_untrusted_broker_certificate_is_refused(
    tmp_path: Path, pki: Pki, queue: AsyncDiskQueue
) -> None:
    """A broker whose certificate is not signed by the configured CA is never talked to."""
    other = make_pki(tmp_path / "other-pki")
    with tls_broker(tmp_path, pki) as broker:
        tls = TlsConfig(ca_file=other.ca, cert_file=pki.client_cert, key_file=pki.client_key)
        uplink = MqttUplink(mqtt_config(broker.port, tls=tls), GW, queue)
        async with running(uplink):
            await wait_until(lambda: uplink.stats.connect_failures >= 2, "refused attempts")

    assert "certificate" in (uplink.stats.last_error or "").lower()
    assert uplink.stats.published == 0
