"""A throw-away PKI made with ``cryptography`` and a Mosquitto that only speaks TLS, for the uplink's TLS
tests: client-certificate auth, or username/password over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.peers.mosquitto import Mosquitto


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test CA")).issuer_name(_name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: x509.GeneralName | None) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key

    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key",
              directory / "client.pem", directory / "client.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert, key = leaf("broker", ExtendedKeyUsageOID.SERVER_AUTH,
                     x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")))
    pki.server_cert.write_bytes(cert)
    pki.server_key.write_bytes(key)
    cert, key = leaf("mine-agent-gw1", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    pki.client_cert.write_bytes(cert)
    pki.client_key.write_bytes(key)
    return pki


class TlsMosquitto(Mosquitto):
    """Mosquitto with one TLS listener and no anonymous access: ``require_certificate`` for client-cert
    auth, or a password file for username/password auth."""

    def __init__(self, workdir: Path, pki: Pki, *, users: dict[str, str] | None = None) -> None:
        super().__init__(workdir)
        lines = [
            f"listener {self.port} {self.host}",
            f"cafile {pki.ca}", f"certfile {pki.server_cert}", f"keyfile {pki.server_key}",
            "allow_anonymous false", "persistence false",
            # The test files live in a root-only temp dir; keep root so the broker can read them.
            "user root",
            "log_dest stderr", "log_type error", "log_type warning",
        ]
        if users is None:
            lines += ["require_certificate true", "use_identity_as_username true"]
        else:
            passwd = workdir / "passwd"
            passwd.touch()
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True,
                               capture_output=True, timeout=30)
            lines += [f"password_file {passwd}"]
        self.conf.write_text("\n".join(lines) + "\n")
