"""Secure channels, user identities and the server-certificate trust list, against a real asyncua server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from agent import cli
from agent.core.sample import Quality
from drivers.opcua.pki import Pki, create_client_certificate
from drivers.opcua.tests.helpers import device, running
from drivers.opcua.tests.peer import PASSWORD, USERNAME, PlcServer, free_port, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
CLIENT_URI = "urn:mine-agent:test-client"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def plc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PlcServer]:
    server = PlcServer(free_port(), tmp_path_factory.mktemp("server-pki"), n_vars=2)
    await server.start()
    yield server
    await server.stop()


def client_pki(tmp_path: Path, plc: PlcServer, *, trusted: bool) -> Path:
    pki = Pki(tmp_path / "pki")
    create_client_certificate(pki, CLIENT_URI, hostname="127.0.0.1")
    if trusted:
        pki.trust(plc.pki.own_cert)
    return pki.root


def tag(plc: PlcServer) -> list[dict[str, str]]:
    return [{"name": "t", "node": f"ns={plc.ns};s=Plc.v1"}]


@pytest.mark.parametrize(
    ("policy", "mode"),
    [
        ("Basic256Sha256", "SignAndEncrypt"),
        ("Aes128Sha256RsaOaep", "Sign"),
        ("Aes256Sha256RsaPss", "SignAndEncrypt"),
    ],
)
async def test_secure_policy_with_trusted_server_delivers_values(
    plc: PlcServer, tmp_path: Path, policy: str, mode: str
) -> None:
    """Each supported policy and mode connects to a trusted server and delivers GOOD values."""
    security = {"policy": policy, "mode": mode, "pki_dir": str(client_pki(tmp_path, plc, trusted=True))}
    async with running("d", device(plc.url, tag(plc), security=security)) as (driver, sink):
        await wait_for(lambda: sink.has("d.t", quality=Quality.GOOD))

    assert driver.stats.connected


async def test_untrusted_server_is_rejected_saved_and_trusted_with_one_command(
    plc: PlcServer, tmp_path: Path
) -> None:
    """An unknown server certificate is refused and saved; `opcua trust` lets the next attempt in."""
    pki_dir = client_pki(tmp_path, plc, trusted=False)
    security = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "pki_dir": str(pki_dir)}
    cfg = device(plc.url, tag(plc), security=security, reconnect_max_s=1.0)
    with capture_logs() as logs:
        async with running("d", cfg) as (_, sink):
            await wait_for(lambda: sink.has("d.t", quality=Quality.BAD))
            rejected = sorted((pki_dir / "rejected").iterdir())
            refused = sink.last("d.t")
            assert not any(s.quality is Quality.GOOD for s in sink.samples)
            assert cli.main(["opcua", "trust", str(rejected[0]), "--pki-dir", str(pki_dir)]) == 0
            await wait_for(lambda: sink.has("d.t", quality=Quality.GOOD))

    assert refused is not None
    assert "BadCertificateUntrusted" in (refused.reason or "")
    assert f"mine-agent opcua trust {rejected[0]}" in (refused.reason or "")
    assert len([e for e in logs if e["log_level"] == "warning" and e["event"] == "opcua_connect_failed"]) == 1


async def test_username_from_password_file_is_accepted(plc: PlcServer, tmp_path: Path) -> None:
    """A username with its password read from password_file opens a session."""
    secret = tmp_path / "opcua.password"
    secret.write_text(PASSWORD + "\n")
    identity = {"kind": "username", "username": USERNAME, "password_file": str(secret)}
    async with running("d", device(plc.url, tag(plc), identity=identity)) as (_, sink):
        await wait_for(lambda: sink.has("d.t", quality=Quality.GOOD))

    assert sink.has("d.t", 1.0)


async def test_wrong_password_is_bad_samples_and_never_logged(plc: PlcServer) -> None:
    """A refused password gives BAD samples naming the refusal, and the password appears in no log event."""
    identity = {"kind": "username", "username": USERNAME, "password": "wrong-pass-123"}
    with capture_logs() as logs:
        async with running("d", device(plc.url, tag(plc), identity=identity)) as (_, sink):
            await wait_for(lambda: sink.has("d.t", quality=Quality.BAD))

    bad = sink.last("d.t")
    assert bad is not None
    assert "BadUserAccessDenied" in (bad.reason or "") or "BadIdentityTokenRejected" in (bad.reason or "")
    assert "wrong-pass-123" not in repr(logs)


async def test_certificate_user_identity_is_accepted(plc: PlcServer, tmp_path: Path) -> None:
    """A user certificate identity over a secured channel opens a session."""
    user = Pki(tmp_path / "user")
    create_client_certificate(user, "urn:mine-agent:operator", hostname="127.0.0.1")
    security = {
        "policy": "Basic256Sha256",
        "mode": "Sign",
        "pki_dir": str(client_pki(tmp_path, plc, trusted=True)),
    }
    identity = {"kind": "certificate", "cert_file": str(user.own_cert), "key_file": str(user.own_key)}
    async with running("d", device(plc.url, tag(plc), security=security, identity=identity)) as (_, sink):
        await wait_for(lambda: sink.has("d.t", quality=Quality.GOOD))

    assert sink.has("d.t", 1.0)


async def test_missing_client_certificate_names_the_command_that_creates_it(
    plc: PlcServer, tmp_path: Path
) -> None:
    """A secured device without a client certificate reports how to create one."""
    security = {"policy": "Basic256Sha256", "mode": "Sign", "pki_dir": str(tmp_path / "empty")}
    async with running("d", device(plc.url, tag(plc), security=security)) as (_, sink):
        await wait_for(lambda: sink.has("d.t", quality=Quality.BAD))

    assert f"mine-agent opcua cert --pki-dir {tmp_path / 'empty'}" in (sink.last("d.t").reason or "")  # type: ignore[union-attr]
