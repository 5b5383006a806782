"""Build an asyncua ``Client`` from a device's config: endpoint, security policy, identity, trust list.

asyncua by default validates no server certificate at all; here a secured connection validates the
server's certificate against ``<pki_dir>/trusted`` (time range, application URI, trust, revocation). An
untrusted certificate is saved to ``<pki_dir>/rejected`` and the connect fails with a hint naming the
command that trusts it. With policy None there is no server authentication: that is what None means.
"""

from __future__ import annotations

__all__ = ["RejectingValidator", "build_client", "describe_error"]

import asyncio
import logging
from pathlib import Path

from asyncua import Client, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import security_policies
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509

from agent.core.cancellation import timeout
from agent.core.errors import DriverError
from drivers.opcua.config import OpcUaDevice
from drivers.opcua.pki import Pki
from drivers.opcua.status import status_name

# asyncua logs a traceback per second while a server is down, an error per dropped notification and
# warnings about certificate host names. The driver reports each outage once and counts drops, and
# browse reports its own errors, so asyncua's records add only noise here. Raised only if nobody set
# the "asyncua" logger's level explicitly: an operator debugging with it keeps theirs.
_asyncua_log = logging.getLogger("asyncua")
if _asyncua_log.level == logging.NOTSET:
    _asyncua_log.setLevel(logging.CRITICAL)

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
_SERVER_CHECKS = (
    CertificateValidatorOptions.TIME_RANGE
    | CertificateValidatorOptions.URI
    | CertificateValidatorOptions.TRUSTED
    | CertificateValidatorOptions.REVOKED
    | CertificateValidatorOptions.PEER_SERVER
)


class RejectingValidator:
    """Validates the server certificate; on failure saves it to rejected/ and remembers where."""

    def __init__(self, pki: Pki, store: TrustStore | None) -> None:
        self._pki = pki
        # An empty trust list trusts nothing (asyncua cannot build an empty store, so no validator).
        self._validator = CertificateValidator(_SERVER_CHECKS, store) if store is not None else None
        self.rejected_file: Path | None = None

    async def __call__(self, cert: x509.Certificate, app_description: ua.ApplicationDescription) -> None:
        if self._validator is None:
            self.rejected_file = await asyncio.to_thread(self._pki.save_rejected, cert)
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        try:
            await self._validator.validate(cert, app_description)
        except Exception:
            self.rejected_file = await asyncio.to_thread(self._pki.save_rejected, cert)
            raise


async def build_client(device: str, cfg: OpcUaDevice) -> tuple[Client, RejectingValidator | None]:
    """A configured, unconnected client; raises DriverError for missing certificate or password files."""
    client = Client(cfg.url, timeout=cfg.timeout_s, watchdog_intervall=cfg.watchdog_s)
    client.name = client.description = f"mine-agent {device}"
    client.session_timeout = int(cfg.session_timeout_s * 1000)
    validator = None
    sec = cfg.security
    if sec.policy != "None":
        pki = Pki(sec.pki_dir)
        if not pki.own_cert.is_file() or not pki.own_key.is_file():
            raise DriverError(
                f"client certificate {pki.own_cert} or key {pki.own_key} is missing",
                device=device,
                key="security.pki_dir",
                hint=f"create them with: mine-agent opcua cert --pki-dir {sec.pki_dir}",
            )
        own = await asyncio.to_thread(pki.own_cert.read_bytes)
        client.application_uri = (
            _application_uri(x509.load_der_x509_certificate(own)) or client.application_uri
        )
        store = await _load_trust_list(device, pki)
        validator = RejectingValidator(pki, store)
        client.certificate_validator = validator
        try:
            async with timeout(cfg.timeout_s * 2):
                # Without a pinned server certificate asyncua fetches it from GetEndpoints first.
                await client.set_security(
                    _POLICIES[sec.policy],
                    str(pki.own_cert),
                    str(pki.own_key),
                    mode=_MODES[sec.mode or "Sign"],
                )
        except ua.UaError as exc:
            if "endpoint" in str(exc).lower():
                raise DriverError(
                    f"server offers no endpoint with policy {sec.policy} and mode {sec.mode}",
                    device=device,
                    key="security",
                    hint="mine-agent browse --endpoints lists what it offers",
                    recoverable=True,
                ) from exc
            raise
    ident = cfg.identity
    if ident.kind == "username":
        client.set_user(ident.username or "")
        client.set_password(await asyncio.to_thread(_password, device, cfg))
    elif ident.kind == "certificate":
        assert ident.cert_file is not None
        assert ident.key_file is not None
        try:
            await client.load_client_certificate(str(ident.cert_file))
            await client.load_private_key(ident.key_file)
        except (OSError, ValueError) as exc:
            raise DriverError(
                f"cannot load user certificate {str(ident.cert_file)!r} / key {str(ident.key_file)!r}: {exc}",
                device=device,
                key="identity",
            ) from exc
    return client, validator


async def _load_trust_list(device: str, pki: Pki) -> TrustStore | None:
    if not pki.trusted.is_dir() or not any(pki.trusted.iterdir()):
        return None
    store = TrustStore([pki.trusted], [pki.crl] if pki.crl.is_dir() and any(pki.crl.iterdir()) else [])
    try:
        await store.load()
    except ValueError as exc:
        raise DriverError(
            f"trust list {pki.trusted} holds a file that is not a certificate: {exc}",
            device=device,
            key="security.pki_dir",
            hint="keep only certificates there; add them with: mine-agent opcua trust <file>",
        ) from exc
    return store


def _password(device: str, cfg: OpcUaDevice) -> str:
    ident = cfg.identity
    if ident.password is not None:
        return ident.password.get_secret_value()
    assert ident.password_file is not None
    try:
        return ident.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise DriverError(
            f"cannot read the first line of password_file {str(ident.password_file)!r}",
            device=device,
            key="identity.password_file",
        ) from exc


def _application_uri(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def describe_error(exc: BaseException) -> str:
    """A short reason for a failed connect or request: the status name, 'timeout', or the OS error."""
    if isinstance(exc, UaStatusCodeError):
        return status_name(exc.code)
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, DriverError):
        return f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
