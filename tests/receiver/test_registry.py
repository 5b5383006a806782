"""The key registry: one key, one gateway; validity and revocation; the text format and version 1 trust files."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import AgentError
from agent.protocol.signing import BatchSigner
from backend.registry import KeyRefused, KeyRegistry, entry_for, format_entry, parse_registry, parse_time
from tests.fuzzing import FUZZ_EXAMPLES

DAY = 86_400_000
T = parse_time("2026-06-01")


def _key() -> BatchSigner:
    return BatchSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def registry() -> Iterator[KeyRegistry]:
    db = sqlite3.connect(":memory:", isolation_level=None)
    yield KeyRegistry(db)
    db.close()


def _refusal(registry: KeyRegistry, **frame: object) -> str:
    args = {"gw": "gw-01", "alg": "ed25519", "created_ms": T, "arrival_ms": T, **frame}
    with pytest.raises(KeyRefused) as info:
        registry.lookup(**args)  # type: ignore[arg-type]
    return info.value.cause


def test_a_key_speaks_only_for_its_gateway(registry: KeyRegistry) -> None:
    """A kid registered for gw-01 is found for gw-01, refused as wrong_gateway for gw-02, unknown otherwise."""
    k = _key()
    registry.register(entry_for("gw-01", k.public_text), now_ms=T)

    assert registry.lookup(gw="gw-01", kid=k.kid, alg="ed25519", created_ms=T, arrival_ms=T) is not None
    assert _refusal(registry, gw="gw-02", kid=k.kid) == "wrong_gateway"
    assert _refusal(registry, kid=_key().kid) == "unknown_key"
    assert _refusal(registry, kid=k.kid, alg="sm2") == "signature"


def test_one_key_cannot_be_registered_for_two_gateways(registry: KeyRegistry) -> None:
    """Registering a key already registered for another gateway is an error, and nothing changes."""
    k = _key()
    registry.register(entry_for("gw-01", k.public_text), now_ms=T)

    with pytest.raises(AgentError, match="registered for gateway 'gw-01'"):
        registry.register(entry_for("gw-02", k.public_text), now_ms=T)
    assert [e.gw for e in registry.entries()] == ["gw-01"]


def test_validity_is_judged_by_created_and_revocation_by_arrival(registry: KeyRegistry) -> None:
    """Created outside [from, until] -> key_not_valid; arrived at or after revoked_at -> revoked."""
    k = _key()
    registry.register(entry_for("gw-01", k.public_text, valid_from_ms=T, valid_until_ms=T + DAY), now_ms=T)

    assert _refusal(registry, kid=k.kid, created_ms=T - 1) == "key_not_valid"
    assert _refusal(registry, kid=k.kid, created_ms=T + DAY + 1) == "key_not_valid"
    assert _refusal(registry, kid=k.kid, created_ms=2**53) == "key_not_valid"  # beyond any calendar
    registry.revoke(k.kid, at_ms=T + 10, reason="stolen")
    assert _refusal(registry, kid=k.kid, created_ms=T, arrival_ms=T + 10) == "revoked"
    assert registry.lookup(gw="gw-01", kid=k.kid, alg="ed25519", created_ms=T, arrival_ms=T + 9) is not None


def test_registry_file_round_trips(registry: KeyRegistry) -> None:
    """format_entry writes what parse_registry reads: gateway, key, from, until, revoked and the note."""
    k = _key()
    text = (f"# the registry\n\ngw-01 {k.public_text} from=2026-01-01 until=2026-12-31T23:59:59Z "
            "revoked=2026-07-01T00:00:00+08:00  # shaft 3\n")
    (entry,) = parse_registry(text)

    assert (entry.gw, entry.kid, entry.note) == ("gw-01", k.kid, "shaft 3")
    assert (entry.valid_from_ms, entry.revoked_at_ms) == (parse_time("2026-01-01"),
                                                          parse_time("2026-06-30T16:00:00"))
    assert parse_registry(format_entry(entry)) == [entry]


def test_version_1_trust_file_needs_the_gateway() -> None:
    """Bare key lines are refused without --gateway (with a hint), and belong to it with --gateway."""
    k1, k2 = _key(), _key()
    text = f"# old trust file\n{k1.public_text}\n{k2.public_text}\n"

    with pytest.raises(AgentError, match="without a gateway id") as info:
        parse_registry(text, path="trust.txt")
    assert (info.value.line, "--gateway" in (info.value.hint or "")) == (2, True)
    assert [(e.gw, e.kid) for e in parse_registry(text, gateway="gw-07")] == [("gw-07", k1.kid),
                                                                             ("gw-07", k2.kid)]


@pytest.mark.parametrize(("line", "message"), [
    ("gw-01", "without a key"),
    ("gw-01 ed25519:AAAA", "has 32 bytes"),
    ("gw-01 rsa:AAAA", "unsupported public key"),
    ("gw/01 ed25519:AAAA", "gateway id"),
    ("gw-01 {key} when=2026-01-01", "unknown option"),
    ("gw-01 {key} from=yesterday", "not an ISO 8601"),
    ("gw-01 {key} from=2026-02-01 until=2026-01-01", "until= is before from="),
])
def test_malformed_registry_lines_are_refused_with_their_line(line: str, message: str) -> None:
    """Each malformed line is an error naming the file and line."""
    with pytest.raises(AgentError, match=message) as info:
        parse_registry("# header\n" + line.format(key=_key().public_text), path="keys.txt")

    assert (info.value.path, info.value.line) == ("keys.txt", 2)


def test_import_adds_and_narrows_but_never_widens(registry: KeyRegistry) -> None:
    """Importing again cannot lift a revocation or extend validity; it can add keys and narrow them."""
    k, new = _key(), _key()
    registry.register(entry_for("gw-01", k.public_text, valid_until_ms=T), now_ms=T)
    registry.revoke(k.kid, at_ms=T, reason="test")
    result = registry.import_entries(parse_registry(f"gw-01 {k.public_text}\ngw-01 {new.public_text}\n"),
                                     now_ms=T)

    assert ([e.kid for e in result.added], result.narrowed, [e.kid for e in result.unchanged]) == (
        [new.kid], [], [k.kid])
    assert (registry.get(k.kid).valid_until_ms, registry.get(k.kid).revoked_at_ms) == (T, T)  # type: ignore[union-attr]


def test_import_is_all_or_nothing(registry: KeyRegistry) -> None:
    """A file giving a registered key to another gateway fails, and adds none of its other keys."""
    k = _key()
    registry.register(entry_for("gw-01", k.public_text), now_ms=T)

    with pytest.raises(AgentError, match="one key belongs to exactly one gateway"):
        registry.import_entries(parse_registry(f"gw-02 {_key().public_text}\ngw-02 {k.public_text}\n"), now_ms=T)
    assert [e.gw for e in registry.entries()] == ["gw-01"]


def test_rotation_bounds_the_old_key(registry: KeyRegistry) -> None:
    """rotate registers the new key and ends the old one's validity at the overlap's end."""
    old, new = _key(), _key()
    registry.register(entry_for("gw-01", old.public_text), now_ms=T)
    narrowed = registry.rotate("gw-01", entry_for("gw-01", new.public_text), overlap_until_ms=T + DAY, now_ms=T)

    assert [(e.kid, e.valid_until_ms) for e in narrowed] == [(old.kid, T + DAY)]
    assert {e.kid: e.status(T + 2 * DAY) for e in registry.entries("gw-01")} == {old.kid: "expired",
                                                                               new.kid: "valid"}


_LINE_PARTS = st.sampled_from(["gw-01", "ed25519:", _key().public_text, "from=2026-01-01", "until=", "revoked=x",
                               "#", "=", ":", " ", "\t", "\n", "ed25519:AAAA", "é", "\x00"])


@pytest.mark.fuzz
@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(st.lists(st.one_of(_LINE_PARTS, st.text(max_size=30)), max_size=30).map("".join),
       st.sampled_from([None, "gw-07"]))
def test_fuzz_registry_text_gives_entries_or_a_located_error(text: str, gateway: str | None) -> None:
    """Whatever a key file holds, reading it gives well-formed entries or an AgentError naming the line."""
    located: tuple[str | None, int | None] = ("keys.txt", 0)
    entries = []
    try:
        entries = parse_registry(text, gateway=gateway, path="keys.txt")
    except AgentError as exc:
        located = (exc.path, exc.line)
    assert located[0] == "keys.txt"
    assert located[1] is not None
    for e in entries:
        assert len(e.public_key) == 32
        assert e.valid_until_ms is None or e.valid_until_ms >= e.valid_from_ms
        assert parse_registry(format_entry(e)) == [e]
