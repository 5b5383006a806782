"""``mine-backend receive``: the report and records modes, clear errors, and a real run stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.errors import AgentError
from agent.protocol.signing import BatchSigner, generate_key
from backend.cli import main
from backend.receiver import ReceiverStore, parse_broker_url
from tests.peers.mosquitto import Mosquitto
from tests.receiver.chain import Chain, register

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def signer() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def trust_file(tmp_path: Path, signer: BatchSigner) -> Path:
    path = tmp_path / "trust.txt"
    path.write_text(f"# the key registry\ngw-01 {signer.public_text}\n")
    return path


def _filled_db(tmp_path: Path, signer: BatchSigner, trust_file: Path) -> Path:
    db = tmp_path / "r.sqlite"
    chain = Chain(signer)
    frames = [chain.data().frame for _ in range(3)]
    with ReceiverStore(db) as store:
        register(store, signer)
        for f in (frames[0], frames[2]):
            store.ingest(f)
    return db


def test_report_prints_the_json_accounting(tmp_path: Path, signer: BatchSigner, trust_file: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--report prints the per-gateway JSON report of the database."""
    db = _filled_db(tmp_path, signer, trust_file)

    assert main(["receive", "--db", str(db), "--report"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gateways"]["gw-01"]["missing"] == [[2, 2]]


def test_records_prints_rows_of_one_tag(tmp_path: Path, signer: BatchSigner, trust_file: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--records --tag prints that tag's stored rows as JSON lines, newest first, at most --limit."""
    db = _filled_db(tmp_path, signer, trust_file)

    assert main(["receive", "--db", str(db), "--records", "--tag", "plc1.ch4", "--limit", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3
    assert {r["tag"] for r in rows} == {"plc1.ch4"}
    assert [r["ts"] for r in rows] == sorted((r["ts"] for r in rows), reverse=True)


def test_receiving_without_broker_says_what_is_missing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Receiving needs --broker; the error names it."""
    assert main(["receive", "--db", str(tmp_path / "r.sqlite")]) == 1
    assert "--broker required" in capsys.readouterr().err


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://127.0.0.1:1884", ("127.0.0.1", 1884, False)),
    ("mqtts://broker.example", ("broker.example", 8883, True)),
    ("mqtt://broker.example", ("broker.example", 1883, False)),
    ("mqtt://[::1]:1883", ("::1", 1883, False)),
])
def test_broker_urls_parse(url: str, expected: tuple[str, int, bool]) -> None:
    """mqtt:// and mqtts:// URLs give host, port (default 1883 / 8883) and TLS."""
    a = parse_broker_url(url)

    assert (a.host, a.port, a.tls) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("tcp://host:1883", "scheme must be mqtt or mqtts"),
    ("host:1883", "scheme must be mqtt or mqtts"),
    ("mqtt://:1883", "has no host name"),
    ("mqtt://host:99999", "out of range"),
    ("mqtt://host:port", "Port could not be cast"),
    ("mqtt://user:secret@host", "contains credentials"),
    ("mqtt://host/mine", "has a path or query"),
])
def test_bad_broker_urls_are_refused_clearly(url: str, message: str) -> None:
    """A bad broker URL is refused with what is wrong and the expected form."""
    with pytest.raises(AgentError, match=message) as info:
        parse_broker_url(url)

    assert "mqtt://HOST:PORT" in str(info.value) or "--password-file" in str(info.value)


async def test_receive_runs_until_sigterm(broker: Mosquitto, tmp_path: Path, signer: BatchSigner,
                                          trust_file: Path) -> None:
    """The command stores what is published and exits 0 on SIGTERM, with its database consistent."""
    db = tmp_path / "r.sqlite"
    generate_key(tmp_path / "archive", "archive")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend.cli", "receive", "--broker", broker.url, "--trust", str(trust_file),
        "--archive-key", str(tmp_path / "archive" / "archive.key"), "--db", str(db), "--client-id", "test-cli-receiver",
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        chain = Chain(signer)
        frames = [chain.data().frame for _ in range(3)]
        stored = 0
        async with asyncio.timeout(60), aiomqtt.Client(broker.host, broker.port, identifier="gw-01") as gw:
            while stored < 3:
                # Publish until the receiver is subscribed and has stored all: redelivery is only a duplicate.
                for f in frames:
                    await gw.publish("mine/gw-01/batch/data", f, qos=1)
                await asyncio.sleep(0.2)
                if db.exists():
                    with ReceiverStore(db) as s:
                        stored = s.report()["gateways"].get("gw-01", {}).get("batches", 0)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert (stored, proc.returncode) == (3, 0), err.decode()[-2000:]
    assert json.loads(err.decode().strip().splitlines()[-1])["stored"] == 3


def test_report_of_a_missing_database_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--report on a path with no database says so instead of reporting an empty one."""
    assert main(["receive", "--db", str(tmp_path / "typo.sqlite"), "--report"]) == 1
    assert "no receiver database here" in capsys.readouterr().err
    assert not (tmp_path / "typo.sqlite").exists()


def test_wildcard_prefix_is_refused(tmp_path: Path, trust_file: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A topic prefix with an MQTT wildcard is refused before connecting."""
    args = ["receive", "--db", str(tmp_path / "r.sqlite"), "--broker", "mqtt://127.0.0.1:1",
            "--trust", str(trust_file), "--prefix", "mine/#"]

    assert main(args) == 1
    assert "--prefix" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--max-refused-bytes", "--max-refused-bytes-total"])
@pytest.mark.parametrize("value", ["-1", "256MiB", ""])
def test_a_refusal_budget_that_is_not_a_byte_count_is_refused(tmp_path: Path, trust_file: Path, option: str,
                                                              value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The budgets for refused frames kept whole take a whole number of bytes; anything else stops at once."""
    args = ["receive", "--db", str(tmp_path / "r.sqlite"), "--broker", "mqtt://127.0.0.1:1", "--no-ack",
            "--trust", str(trust_file), option, value]

    with pytest.raises(SystemExit):
        main(args)
    assert "is not a byte count" in capsys.readouterr().err
    assert not (tmp_path / "r.sqlite").exists()


def test_receiving_with_no_registered_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A receiver whose registry is empty would refuse every batch: it says so and how to register keys."""
    args = ["receive", "--db", str(tmp_path / "r.sqlite"), "--broker", "mqtt://127.0.0.1:1", "--no-ack"]

    assert main(args) == 1
    assert "keys register" in capsys.readouterr().err


def test_version_1_trust_file_needs_its_gateway(tmp_path: Path, signer: BatchSigner,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """--trust with bare key lines (format version 1) is refused without --gateway, and imported with it."""
    old = tmp_path / "v1.trust"
    old.write_text(f"{signer.public_text}\n")
    db = tmp_path / "r.sqlite"
    base = ["receive", "--db", str(db), "--reverify", "--trust", str(old)]
    ReceiverStore(db).close()

    assert main(base) == 1
    assert "--gateway" in capsys.readouterr().err
    assert main([*base, "--gateway", "gw-01"]) == 0
    with ReceiverStore(db) as store:
        assert [(e.gw, e.kid) for e in store.registry.entries()] == [("gw-01", signer.kid)]


def test_audit_verifies_every_stored_batch(tmp_path: Path, signer: BatchSigner, trust_file: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--audit checks every stored batch again, exit 0 when all pass, 1 once its key is revoked back in time."""
    db = _filled_db(tmp_path, signer, trust_file)

    assert main(["receive", "--db", str(db), "--audit"]) == 0
    assert json.loads(capsys.readouterr().out) == {"checked": 2, "failed": []}
    assert main(["keys", "revoke", "--kid", signer.kid, "--at", "1970-01-01", "--reason", "test",
                 "--db", str(db)]) == 0
    assert main(["receive", "--db", str(db), "--audit"]) == 1
    assert [f["cause"] for f in json.loads(capsys.readouterr().out.split("\n", 1)[1])["failed"]] == ["revoked"] * 2
