"""The archive key's commands: ``mine-backend keys archive-init`` / ``archive-public`` and the receiver's
``--archive-key``, without which it refuses to acknowledge."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.protocol.signing import load_signer
from backend.cli import main


def test_archive_init_writes_a_private_key_only_its_owner_reads_and_the_public_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """archive-init makes DIR/archive.key (0600) and DIR/archive.pub, and prints the line gateways need."""
    assert main(["keys", "archive-init", str(tmp_path / "archive")]) == 0

    key = tmp_path / "archive" / "archive.key"
    public = (tmp_path / "archive" / "archive.pub").read_text().strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert public == load_signer(key).public_text
    assert public in capsys.readouterr().out


def test_archive_init_never_overwrites_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second archive-init in the same directory fails and leaves the first key as it was."""
    assert main(["keys", "archive-init", str(tmp_path)]) == 0
    before = (tmp_path / "archive.key").read_bytes()

    assert main(["keys", "archive-init", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "archive.key").read_bytes() == before


def test_archive_public_prints_exactly_the_gateways_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """archive-public prints one 'ed25519:<base64>' line, the same as archive.pub."""
    main(["keys", "archive-init", str(tmp_path)])
    capsys.readouterr()

    assert main(["keys", "archive-public", "--key", str(tmp_path / "archive.key")]) == 0
    assert capsys.readouterr().out == (tmp_path / "archive.pub").read_text()


@pytest.mark.parametrize(("extra", "names"), [
    ([], "--archive-key"),
    (["--archive-key", "archive.key", "--no-ack"], "--no-ack"),
])
def test_receiving_without_an_archive_key_is_refused_naming_the_flag(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], names: str) -> None:
    """Without --archive-key (or with it and --no-ack) the receiver does not start, and says which flag."""
    trust = tmp_path / "trust.txt"
    trust.write_text("ed25519:" + "A" * 43 + "=\n")
    args = ["receive", "--db", str(tmp_path / "r.sqlite"), "--broker", "mqtt://127.0.0.1:1", "--trust", str(trust),
            *extra]

    assert main(args) == 1
    err = capsys.readouterr().err
    assert names in err
    assert "--archive-key" in err
    assert not (tmp_path / "r.sqlite").exists()
