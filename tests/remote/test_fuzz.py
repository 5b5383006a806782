"""Property-based fuzzing of the two decoders of remote configuration at a trust boundary: the gateway's push
decoder (agent.protocol.push.open_push) and the operator tool's status parser (backend.operator.parse_status).

Whatever arrives, the push decoder either returns a push whose every field has its type and range, or refuses
it with short reasons; it never raises anything else. The status parser returns None or a status with checked
fields, never raises, and ``mine-backend config push`` can always print what it returns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocol.config_status import sign_status
from agent.protocol.push import (
    MAX_ISSUED_MS,
    MAX_VERSION,
    ConfigPush,
    PushLimits,
    PushRefused,
    authenticate_push,
    open_push,
    sign_push,
)
from agent.protocol.signing import BatchSigner, TrustStore, generate_key
from backend.operator import STATES, parse_status, read_status
from tests.fuzzing import FUZZ_EXAMPLES

pytestmark = pytest.mark.fuzz

NOW_MS = 1_800_000_000_000
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> BatchSigner:
    return generate_key(tmp_path_factory.mktemp("op"), "operator")


def _open(payload: bytes, operator: BatchSigner) -> ConfigPush:
    return open_push(payload, trust=TrustStore({operator.kid: operator.public_raw}), gateway="gw-1",
                     highest_version=3, now_ms=NOW_MS, limits=PushLimits(max_bytes=64 * 1024))


def _check(payload: bytes, operator: BatchSigner) -> None:
    try:
        push = _open(payload, operator)
    except PushRefused as exc:
        refused = exc
    else:
        refused = None
    if refused is not None:
        assert refused.reasons
        assert all(isinstance(r, str) and len(r) <= 400 for r in refused.reasons), refused.reasons
        assert refused.version is None or 1 <= refused.version <= MAX_VERSION
        return
    assert push.gateway == "gw-1"
    assert 3 < push.version <= MAX_VERSION
    assert 0 <= push.issued_ms <= MAX_ISSUED_MS
    assert isinstance(push.toml, str)
    assert push.trust is None or all(isinstance(line, str) and line.startswith("ed25519:") for line in push.trust)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
    | st.text(max_size=50) | st.binary(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
field_values = {
    "type": st.sampled_from(["config-push", "batch"]) | msgpack_values,
    "v": st.sampled_from([1, 2]) | msgpack_values,
    "gw": st.sampled_from(["gw-1", "gw-2", "g" * 200]) | msgpack_values,
    "version": st.integers(min_value=-(2**63), max_value=2**64 - 1) | msgpack_values,
    "issued": st.integers(min_value=NOW_MS - 10**9, max_value=NOW_MS + 10**9) | msgpack_values,
    "toml": st.text(max_size=100) | msgpack_values,
    "trust": st.lists(st.text(max_size=60) | st.just("ed25519:" + "A" * 43 + "="), max_size=70) | msgpack_values,
}


@FUZZ
@given(payload=st.binary(max_size=2048))
def test_push_decoder_survives_any_bytes(operator: BatchSigner, payload: bytes) -> None:
    _check(payload, operator)


@FUZZ
@given(fields=st.fixed_dictionaries({}, optional=field_values), extra=st.dictionaries(st.text(max_size=6),
                                                                                      msgpack_values, max_size=3))
def test_push_decoder_checks_every_signed_value(operator: BatchSigner, fields: dict[str, object],
                                                extra: dict[str, object]) -> None:
    """Authentically signed documents with any values: a leaked key must not crash the gateway either."""
    document = {**extra, "alg": "ed25519", "kid": operator.kid, **fields}
    signed = msgpack.packb(document, use_bin_type=True)
    _check(msgpack.packb([1, signed, operator.sign(signed)], use_bin_type=True), operator)


@FUZZ
@given(version=st.integers(min_value=1, max_value=MAX_VERSION), issued=st.integers(0, MAX_ISSUED_MS),
       flips=st.lists(st.integers(min_value=0, max_value=10**6), max_size=4))
def test_push_decoder_survives_corrupted_pushes(operator: BatchSigner, version: int, issued: int,
                                                flips: list[int]) -> None:
    payload = bytearray(sign_push(operator, gateway="gw-1", version=version, toml="[gateway]\n", issued_ms=issued))
    for flip in flips:
        payload[flip % len(payload)] ^= 1 + flip % 255
    _check(bytes(payload), operator)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)
status_fields = {
    "state": st.sampled_from(sorted(STATES)) | json_values,
    "push": st.sampled_from(["93c1fbbc14ffe818"]) | json_values,
    "version": json_values, "reasons": st.lists(json_values, max_size=5) | json_values,
    "changed": st.dictionaries(st.sampled_from(["started", "restarted", "x"]), json_values) | json_values,
    "ts": json_values, "repeat": json_values, "gateway": json_values, "kid": json_values,
}


def _check_status(payload: object) -> None:
    status = parse_status(payload)
    if status is None:
        return
    assert status["state"] in STATES
    assert isinstance(status["push"], str)
    assert isinstance(status["reasons"], list)
    assert all(isinstance(r, str) for r in status["reasons"])
    for key in ("version", "received_ms", "ts", "running_version"):
        assert status[key] is None or (isinstance(status[key], int) and 0 <= status[key] < 2**63)
    assert isinstance(status["repeat"], bool)
    assert all(isinstance(v, list) for v in status["changed"].values())
    json.dumps(status)  # what the operator's tool prints


@FUZZ
@given(payload=st.binary(max_size=1024) | st.text(max_size=200))
def test_status_parser_survives_any_payload(payload: bytes | str) -> None:
    _check_status(payload)


@FUZZ
@given(fields=st.fixed_dictionaries({}, optional=status_fields))
def test_status_parser_checks_every_field(fields: dict[str, object]) -> None:
    _check_status(json.dumps(fields).encode())


@pytest.mark.parametrize("payload", [
    b"[" * 100_000 + b"]" * 100_000,  # nesting deeper than the JSON parser's recursion
    b'{"state": ["applied"], "push": "p"}',  # an unhashable state once raised TypeError in the tool
    b'{"state": "applied", "push": "p", "version": 1e999, "ts": NaN, "reasons": "x"}',
    b'{"state": "applied", "push": "p", "version": ' + b"9" * 5000 + b"}",  # beyond int parsing limits
    b" " * (300 * 1024),
    None,
    12,
], ids=["deep", "unhashable state", "non-finite", "huge int", "oversized", "none", "int"])
def test_status_parser_hostile_examples(payload: object) -> None:
    _check_status(payload)


def test_status_parser_keeps_a_valid_status(tmp_path: Path) -> None:
    status = {"gateway": "gw-01", "source": "remote", "version": 12, "push": "93c1fbbc14ffe818", "kid": "k",
              "state": "applied", "reasons": [], "received_ms": 1, "ts": 2, "running_version": 12,
              "changed": {"started": [], "stopped": [], "restarted": ["device:plc2"]}, "repeat": False,
              "suppressed": 0}
    assert parse_status(json.dumps(status).encode()) == status


_STATUS = {"gateway": "gw-1", "push": "93c1fbbc14ffe818", "state": "applied", "reasons": [], "version": 3}


@FUZZ
@given(cut=st.integers(min_value=0, max_value=400), flip=st.integers(min_value=0, max_value=400),
       extra=st.binary(max_size=8))
def test_signed_status_reader_survives_damaged_envelopes(operator: BatchSigner, cut: int, flip: int,
                                                         extra: bytes) -> None:
    """A signed status truncated, with a byte changed or bytes appended: the reader returns None or a checked
    status, and calls it verified only when it is the intact message signed by the key."""
    key = TrustStore({operator.kid: operator.public_raw})
    intact = sign_status(operator, _STATUS)
    damaged = bytearray(intact[:max(1, len(intact) - cut % len(intact))] + extra)
    damaged[flip % len(damaged)] ^= 1 + flip % 255
    for payload in (bytes(damaged), intact[:len(intact) - cut % len(intact)]):
        _check_status(payload)
        status = read_status(payload, key=key)
        assert status is None or status["verified"] is (payload == intact)
    good = read_status(intact, key=key)
    assert good is not None
    assert (good["state"], good["verified"]) == ("applied", True)


@FUZZ
@given(payload=st.binary(max_size=512) | st.builds(
    lambda body, sig: msgpack.packb([1, body, sig], use_bin_type=True), st.binary(max_size=256),
    st.binary(max_size=80)))
def test_signed_status_reader_survives_any_payload(operator: BatchSigner, payload: bytes) -> None:
    status = read_status(payload, key=TrustStore({operator.kid: operator.public_raw}))
    assert status is None or status["verified"] is False
    if status is not None:
        json.dumps(status)


@FUZZ
@given(payload=st.binary(max_size=2048), flip=st.integers(min_value=0, max_value=4096))
def test_authentication_agrees_with_the_full_check(operator: BatchSigner, payload: bytes, flip: int) -> None:
    """What the gateway screens before queueing (authenticate_push) refuses exactly the payloads that
    open_push refuses as unauthenticated, and every such refusal is marked so (they are written nowhere)."""
    genuine = bytearray(sign_push(operator, gateway="gw-1", version=5, toml="x", issued_ms=NOW_MS))
    genuine[flip % len(genuine)] ^= 1 + flip % 255
    trust = TrustStore({operator.kid: operator.public_raw})
    limits = PushLimits(max_bytes=64 * 1024)
    for candidate in (payload, bytes(genuine)):
        screened = _refusal(lambda c=candidate: authenticate_push(c, trust=trust, limits=limits))
        full = _refusal(lambda c=candidate: _open(c, operator))
        if screened is not None:
            assert screened.authentic is False
            assert full is not None
            assert full.authentic is False
        elif full is not None:
            assert full.authentic is True


def _refusal(check: Callable[[], object]) -> PushRefused | None:
    try:
        check()
    except PushRefused as exc:
        return exc
    return None
