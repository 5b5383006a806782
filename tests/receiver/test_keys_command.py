"""``mine-backend keys``: register, rotate, revoke, list and import, with clear errors; the receiver's --trust
keeps working by importing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import BatchSigner
from backend.cli import main
from backend.receiver import ReceiverStore
from tests.receiver.chain import Chain, register


def _key() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


def _keys(db: Path, capsys: pytest.CaptureFixture[str], gateway: str | None = None) -> list[dict]:
    args = ["keys", "list", "--json", "--db", str(db)] + (["--gateway", gateway] if gateway else [])
    capsys.readouterr()
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_register_then_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A registered key is listed with its gateway, validity, status and note; a .pub file works as --key."""
    db, k = tmp_path / "r.sqlite", _key()
    pub = tmp_path / "gateway.pub"
    pub.write_text(k.public_text + "\n")

    assert main(["keys", "register", "--gateway", "gw-01", "--key", str(pub), "--valid-until", "2099-01-01",
                 "--note", "shaft 3", "--db", str(db)]) == 0
    assert f"registered key {k.kid} for gateway gw-01" in capsys.readouterr().out
    (entry,) = _keys(db, capsys)
    assert {k_: entry[k_] for k_ in ("gw", "kid", "valid_until", "status", "note")} == {
        "gw": "gw-01", "kid": k.kid, "valid_until": "2099-01-01T00:00:00.000Z", "status": "valid",
        "note": "shaft 3"}


def test_a_key_of_another_gateway_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Registering gw-01's key for gw-02 fails with exit 1 and says which gateway holds it."""
    db, k = tmp_path / "r.sqlite", _key()
    main(["keys", "register", "--gateway", "gw-01", "--key", k.public_text, "--db", str(db)])

    assert main(["keys", "register", "--gateway", "gw-02", "--key", k.public_text, "--db", str(db)]) == 1
    assert "registered for gateway 'gw-01'" in capsys.readouterr().err


def test_rotate_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rotate adds the new key and bounds the old one; revoke marks a key revoked with its reason."""
    db, old, new = tmp_path / "r.sqlite", _key(), _key()
    main(["keys", "register", "--gateway", "gw-01", "--key", old.public_text, "--db", str(db)])

    assert main(["keys", "rotate", "--gateway", "gw-01", "--key", new.public_text, "--overlap-until",
                 "2020-01-01", "--db", str(db)]) == 0
    assert {e["kid"]: e["status"] for e in _keys(db, capsys)} == {old.kid: "expired", new.kid: "valid"}
    assert main(["keys", "revoke", "--kid", new.kid, "--reason", "lost", "--db", str(db)]) == 0
    assert {e["kid"]: e["status"] for e in _keys(db, capsys)}[new.kid] == "revoked"


@pytest.mark.parametrize(("args", "message"), [
    (["keys", "rotate", "--gateway", "gw-09", "--key", "{key}"], "no key to rotate from"),
    (["keys", "revoke", "--kid", "0123456789abcdef", "--reason", "x"], "no key '0123456789abcdef'"),
    (["keys", "register", "--gateway", "gw-01", "--key", "ed25519:AAAA"], "has 32 bytes"),
    (["keys", "register", "--gateway", "gw/01", "--key", "{key}"], "gateway id"),
    (["keys", "register", "--gateway", "gw-01", "--key", "{key}", "--valid-from", "soon"], "ISO 8601"),
    (["keys", "import", "{v1}"], "--gateway"),
])
def test_mistakes_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                            message: str) -> None:
    """Each mistake exits 1 with a message saying what is wrong."""
    db, k = tmp_path / "r.sqlite", _key()
    v1 = tmp_path / "v1.trust"
    v1.write_text(f"{_key().public_text}\n")
    main(["keys", "register", "--gateway", "gw-01", "--key", k.public_text, "--db", str(db)])
    capsys.readouterr()

    assert main([a.format(key=_key().public_text, v1=v1) for a in args] + ["--db", str(db)]) == 1
    assert message in capsys.readouterr().err


def test_list_needs_an_existing_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """list, rotate and revoke on a path with no database say so and create nothing."""
    assert main(["keys", "list", "--db", str(tmp_path / "typo.sqlite")]) == 1
    assert "no receiver database here" in capsys.readouterr().err
    assert not (tmp_path / "typo.sqlite").exists()


def test_import_registry_and_version_1_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A registry file brings its gateways' keys; a version 1 trust file brings its keys for --gateway; the
    text list output reads back as a registry file."""
    db, a, b, c = tmp_path / "r.sqlite", _key(), _key(), _key()
    registry = tmp_path / "keys.txt"
    registry.write_text(f"gw-01 {a.public_text}  # first\ngw-02 {b.public_text} revoked=2020-01-01\n")
    v1 = tmp_path / "v1.trust"
    v1.write_text(f"# gw-03's key\n{c.public_text}\n")

    assert main(["keys", "import", str(registry), "--db", str(db)]) == 0
    assert main(["keys", "import", str(v1), "--gateway", "gw-03", "--db", str(db)]) == 0
    assert {(e["gw"], e["kid"], e["status"]) for e in _keys(db, capsys)} == {
        ("gw-01", a.kid, "valid"), ("gw-02", b.kid, "revoked"), ("gw-03", c.kid, "valid")}
    assert main(["keys", "list", "--db", str(db)]) == 0
    listing = tmp_path / "listing.txt"
    listing.write_text(capsys.readouterr().out)
    other = tmp_path / "other.sqlite"
    assert main(["keys", "import", str(listing), "--db", str(other)]) == 0
    with ReceiverStore(db) as s1, ReceiverStore(other) as s2:
        assert s1.registry.entries() == s2.registry.entries()


def test_a_revocation_reaches_a_running_store_at_its_next_frame(tmp_path: Path) -> None:
    """The receiver's open store refuses the revoked key's next frame without a restart: the command changes the
    registry table the store reads for every frame."""
    db, k = tmp_path / "r.sqlite", _key()
    chain = Chain(k)
    with ReceiverStore(db) as running:
        register(running, k)
        assert running.ingest(chain.data().frame).status == "stored"
        assert main(["keys", "revoke", "--kid", k.kid, "--reason", "stolen", "--db", str(db)]) == 0

        assert running.ingest(chain.data().frame).cause == "revoked"
