"""The Receiver over mqtts:// against a real Mosquitto TLS listener with a test CA made on the spot."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.core.errors import AgentError
from backend.receiver import Receiver, ReceiverStore, TlsFiles
from tests.peers.mosquitto import Mosquitto

DEADLINE = 30.0


def _write_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1; returns (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mine test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_broker(tmp_path: Path) -> tuple[Mosquitto, Path]:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca, cert, key = _write_pki(pki)
    b = Mosquitto(tmp_path / "mosquitto")
    # "user root" keeps a root-started broker from dropping privileges before it reads the files, which live
    # in this test's private temporary directory. Harmless when the tests do not run as root.
    b.conf.write_text(b.conf.read_text() + f"user root\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    b.start()
    try:
        yield b, ca
    finally:
        b.kill()


async def test_receiver_connects_over_tls(tls_broker: tuple[Mosquitto, Path], tmp_path: Path) -> None:
    """With mqtts:// and the CA given, the receiver connects and subscribes over TLS."""
    broker, ca = tls_broker
    with ReceiverStore(tmp_path / "r.sqlite") as store:
        receiver = Receiver(f"mqtts://{broker.host}:{broker.port}", store, client_id="test-receiver",
                            tls=TlsFiles(ca=ca))
        task = asyncio.create_task(receiver.run())
        try:
            async with asyncio.timeout(DEADLINE):
                await receiver.subscribed.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert receiver.stats.reconnects == 0


def test_tls_files_with_plain_url_are_refused(tmp_path: Path) -> None:
    """Giving a CA for an mqtt:// URL is a mistake the receiver names instead of silently ignoring."""
    with ReceiverStore(tmp_path / "r.sqlite") as store, pytest.raises(AgentError, match="mqtts://"):
        Receiver("mqtt://127.0.0.1:1883", store, tls=TlsFiles(ca=tmp_path / "ca.pem"))


async def test_broker_certificate_from_an_unknown_ca_is_refused(tls_broker: tuple[Mosquitto, Path],
                                                                tmp_path: Path) -> None:
    """Without the test CA the receiver does not connect, and its last error names the certificate."""
    broker, _ = tls_broker
    with ReceiverStore(tmp_path / "r.sqlite") as store:
        receiver = Receiver(f"mqtts://{broker.host}:{broker.port}", store,
                            client_id="test-receiver")
        task = asyncio.create_task(receiver.run())
        try:
            async with asyncio.timeout(DEADLINE):
                while receiver.stats.reconnects == 0:  # noqa: ASYNC110 - another task's counter; bounded
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    assert not receiver.subscribed.is_set()
    assert "certificate" in (receiver.stats.last_error or "").lower()
