"""The gateway's OPC UA certificate store (a directory; the layout is the one most OPC UA tools use).

    <pki_dir>/own/cert.der       this gateway's application instance certificate (DER)
    <pki_dir>/own/key.pem        its private key (PEM, mode 0600)
    <pki_dir>/trusted/certs/     server certificates this gateway trusts (DER or PEM), one per file
    <pki_dir>/trusted/crl/       revocation lists of the CAs in trusted/ (optional)
    <pki_dir>/rejected/          server certificates that were presented but not trusted, named by
                                 SHA-1 thumbprint, so a technician can inspect one and trust it with
                                 ``mine-agent opcua trust <file>``

This module has no asyncua import: the ``opcua cert`` and ``opcua trust`` commands use only
``cryptography``. Why self-signed by default: most mine SCADA servers are configured by trusting the
client certificate file itself, and a gateway has no CA to ask.
"""

from __future__ import annotations

__all__ = ["Pki", "certificate_summary", "create_client_certificate", "load_certificate_file"]

import datetime as dt
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.core.errors import DriverError


@dataclass(frozen=True, slots=True)
class Pki:
    root: Path

    @property
    def own_cert(self) -> Path:
        return self.root / "own" / "cert.der"

    @property
    def own_key(self) -> Path:
        return self.root / "own" / "key.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted" / "certs"

    @property
    def crl(self) -> Path:
        return self.root / "trusted" / "crl"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    def ensure_dirs(self) -> None:
        for d in (self.own_cert.parent, self.trusted, self.crl, self.rejected):
            d.mkdir(parents=True, exist_ok=True)

    def save_rejected(self, cert: x509.Certificate) -> Path:
        """Write an untrusted server certificate to rejected/ (idempotent) and return its path."""
        self.rejected.mkdir(parents=True, exist_ok=True)
        target = self.rejected / f"{thumbprint(cert)}.der"
        if not target.exists():
            _write_atomic(target, cert.public_bytes(serialization.Encoding.DER))
        return target

    def trust(self, source: Path) -> Path:
        """Copy a certificate into trusted/ as DER named by thumbprint; drop it from rejected/."""
        cert = load_certificate_file(source)
        self.trusted.mkdir(parents=True, exist_ok=True)
        target = self.trusted / f"{thumbprint(cert)}.der"
        _write_atomic(target, cert.public_bytes(serialization.Encoding.DER))
        (self.rejected / target.name).unlink(missing_ok=True)
        return target


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 thumbprint in hex, the identifier OPC UA tools show for a certificate (Part 6 §6.2.3)."""
    return cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - OPC UA thumbprints are SHA-1 by definition


def load_certificate_file(path: Path) -> x509.Certificate:
    """A certificate from a DER or PEM file, whatever its suffix, with an error that names the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DriverError(f"cannot read certificate {str(path)!r}: {exc.strerror}") from exc
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise DriverError(
            f"{str(path)!r} is not an X.509 certificate (DER or PEM)",
            hint="pass the server's certificate file, e.g. one from the pki rejected/ directory",
        ) from exc


def certificate_summary(cert: x509.Certificate) -> str:
    """Subject, application URI, validity and thumbprint, for a technician deciding whether to trust it."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = ", ".join(san.get_values_for_type(x509.UniformResourceIdentifier)) or "-"
    except x509.ExtensionNotFound:
        uris = "-"
    return (
        f"subject:    {cert.subject.rfc4514_string()}\n"
        f"uri:        {uris}\n"
        f"valid:      {cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}\n"
        f"thumbprint: {thumbprint(cert)}"
    )


def create_client_certificate(
    pki: Pki,
    application_uri: str,
    *,
    hostname: str | None = None,
    days: int = 3650,
    key_bits: int = 2048,
    overwrite: bool = False,
) -> x509.Certificate:
    """Create own/key.pem and own/cert.der: a self-signed application instance certificate.

    Part 6 §6.2.2 requires the application URI in subjectAltName and key usages digitalSignature,
    nonRepudiation, keyEncipherment and dataEncipherment; servers reject certificates without them.
    RSA 2048 satisfies every policy from Basic256Sha256 to Aes256Sha256RsaPss.
    """
    if pki.own_cert.exists() and not overwrite:
        raise DriverError(
            f"{pki.own_cert} already exists",
            hint="pass --force to replace it; servers that trusted the old one must then trust the new one",
        )
    pki.ensure_dirs()
    host = hostname or socket.gethostname()
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "mine-agent"),
            x509.NameAttribute(NameOID.DOMAIN_COMPONENT, host),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(pki.own_key, key_pem, mode=0o600)
    _write_atomic(pki.own_cert, cert.public_bytes(serialization.Encoding.DER))
    return cert


def _write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """tmp -> fsync -> rename -> fsync(dir): a power cut leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
