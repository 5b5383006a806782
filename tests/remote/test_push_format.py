"""The signed push format (agent.protocol.push): what passes, and every reason something does not."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from agent.protocol.push import ConfigPush, PushLimits, PushRefused, open_push, push_id, sign_push
from agent.protocol.signing import BatchSigner, TrustStore, generate_key


@pytest.fixture
def operator(tmp_path: Path) -> BatchSigner:
    return generate_key(tmp_path, "operator")


NOW_MS = 1000 + 60_000  # the gateway's clock in these tests: a minute after the pushes were signed


def _open(payload: bytes, operator: BatchSigner, *, highest: int = 0, max_bytes: int = 1 << 20) -> ConfigPush:
    trust = TrustStore({operator.kid: operator.public_raw})
    return open_push(payload, trust=trust, gateway="gw-1", highest_version=highest, now_ms=NOW_MS,
                     limits=PushLimits(max_bytes=max_bytes))


def test_signed_push_opens_with_what_was_signed(operator: BatchSigner) -> None:
    """A push signed by a trusted key for this gateway returns its version, text, key and id."""
    payload = sign_push(operator, gateway="gw-1", version=3, toml="[gateway]\n", issued_ms=1000)

    push = _open(payload, operator)

    assert push == ConfigPush(id=push_id(payload), gateway="gw-1", version=3, issued_ms=1000, kid=operator.kid,
                              toml="[gateway]\n", trust=None)


def test_altered_text_breaks_the_signature(operator: BatchSigner) -> None:
    """Changing one byte of the signed document is refused for its signature alone."""
    payload = sign_push(operator, gateway="gw-1", version=3, toml="a = 1\n", issued_ms=1000)
    _, signed, sig = msgpack.unpackb(payload)
    altered = msgpack.packb([1, signed.replace(b"a = 1", b"a = 2"), sig], use_bin_type=True)

    with pytest.raises(PushRefused) as refused:
        _open(altered, operator)

    assert refused.value.reasons == ["signature refused: signature does not verify"]


def test_every_problem_of_an_authentic_push_is_listed(operator: BatchSigner) -> None:
    """Wrong gateway and an old version are both reported, so the operator fixes them in one go."""
    payload = sign_push(operator, gateway="gw-2", version=4, toml="", issued_ms=1000)

    with pytest.raises(PushRefused) as refused:
        _open(payload, operator, highest=9)

    assert refused.value.reasons == [
        "addressed to gateway 'gw-2', this is 'gw-1'",
        "version 4 is not newer than 9, the highest this gateway has tried (a replayed or older push)",
    ]


def test_oversized_push_is_refused_unread(operator: BatchSigner) -> None:
    """A payload over the limit is refused before it is decoded."""
    payload = sign_push(operator, gateway="gw-1", version=1, toml="#" * 5000, issued_ms=1000)

    with pytest.raises(PushRefused) as refused:
        _open(payload, operator, max_bytes=4096)

    assert refused.value.reasons == [f"push is {len(payload)} bytes, more than remote_config.max_push_bytes = 4096"]


def test_a_batch_frame_is_not_a_push(operator: BatchSigner) -> None:
    """A signed object of another type (here a map without type and toml) is refused even when its signature
    is good."""
    signed = msgpack.packb({"v": 1, "gw": "gw-1", "alg": "ed25519", "kid": operator.kid, "version": 5,
                            "issued": 1}, use_bin_type=True)
    payload = msgpack.packb([1, signed, operator.sign(signed)], use_bin_type=True)

    with pytest.raises(PushRefused) as refused:
        _open(payload, operator)

    assert refused.value.reasons == ["not a configuration push of format 1 (type None, v 1)",
                                     "the document carries no configuration text (toml)"]


HOUR_MS = 3_600_000
LIMITS = PushLimits(max_age_s=72 * 3600.0, clock_skew_s=300.0, max_version_step=86400)
T0_MS = 1_800_000_000_000  # the gateway's clock in the table below (Unix ms)
T0_S = T0_MS // 1000

# (issued relative to the gateway's clock in ms, version, highest version tried, the reasons; [] = accepted)
TIME_AND_VERSION: dict[str, tuple[int, int, int, list[str]]] = {
    "fresh, default version (Unix seconds)": (-5_000, T0_S, 0, []),
    "an hour old": (-HOUR_MS, 7, 6, []),
    "just inside age + skew": (-(72 * HOUR_MS + 300_000), 7, 6, []),
    "expired by a second": (-(72 * HOUR_MS + 301_000), 7, 6, [
        "expired: issued 259501 s ago by this gateway's clock, more than remote_config.max_push_age_s = "
        "259200 (+ clock_skew_s = 300); sign it again"]),
    "captured a year ago, replayed after the state was lost": (-365 * 24 * HOUR_MS, 5, 0, [
        "expired: issued 31536000 s ago by this gateway's clock, more than remote_config.max_push_age_s = "
        "259200 (+ clock_skew_s = 300); sign it again"]),
    "from the future within the skew": (299_000, 7, 6, []),
    "from the future beyond the skew": (301_000, 7, 6, [
        "issued 301 s in the future by this gateway's clock, more than remote_config.clock_skew_s = 300 "
        "(check the clocks of both sides)"]),
    "version at the step ceiling": (0, T0_S + 86400, 0, []),
    "version a step too far": (0, T0_S + 86401, 0, [
        f"version {T0_S + 86401} is more than remote_config.max_version_step = 86400 above {T0_S}, the larger "
        f"of the highest version tried and this gateway's clock in Unix seconds (use version 1 to "
        f"{T0_S + 86400})"]),
    "huge version (would lock out the rest)": (0, 2**63 - 1, 0, [
        f"version {2**63 - 1} is more than remote_config.max_version_step = 86400 above {T0_S}, the larger "
        f"of the highest version tried and this gateway's clock in Unix seconds (use version 1 to "
        f"{T0_S + 86400})"]),
    "step measured from a highest version ahead of the clock": (0, T0_S + 100_000, T0_S + 50_000, []),
    "small manual versions stay fine": (0, 3, 2, []),
    "old and expired: both reasons": (-100 * HOUR_MS, 2, 9, [
        "version 2 is not newer than 9, the highest this gateway has tried (a replayed or older push)",
        "expired: issued 360000 s ago by this gateway's clock, more than remote_config.max_push_age_s = "
        "259200 (+ clock_skew_s = 300); sign it again"]),
}


@pytest.mark.parametrize("case", list(TIME_AND_VERSION), ids=list(TIME_AND_VERSION))
def test_expiry_skew_and_version_step(operator: BatchSigner, case: str) -> None:
    """A push expires max_push_age_s (+ skew) after it was issued, may not come from further in the future than
    the skew, and its version may not jump more than max_version_step above the highest tried or the clock."""
    issued, version, highest, reasons = TIME_AND_VERSION[case]
    payload = sign_push(operator, gateway="gw-1", version=version, toml="", issued_ms=T0_MS + issued)
    trust = TrustStore({operator.kid: operator.public_raw})

    def opened() -> ConfigPush:
        return open_push(payload, trust=trust, gateway="gw-1", highest_version=highest, now_ms=T0_MS,
                         limits=LIMITS)

    if not reasons:
        assert opened().version == version
        return
    with pytest.raises(PushRefused) as refused:
        opened()
    assert refused.value.reasons == reasons


def _signed_document(operator: BatchSigner, **fields: object) -> bytes:
    document: dict[str, object] = {"type": "config-push", "v": 1, "gw": "gw-1", "version": 5, "issued": 1000,
                                   "alg": "ed25519", "kid": operator.kid, "toml": ""}
    document.update(fields)
    signed = msgpack.packb({k: v for k, v in document.items() if v is not _ABSENT}, use_bin_type=True)
    return msgpack.packb([1, signed, operator.sign(signed)], use_bin_type=True)


_ABSENT = object()
_LONG = "x" * 500

# Values of a signed document out of type or range: (fields, the reasons). An authentic key may still be a
# leaked one, so even signed claims are checked before use, and reasons quote them only shortened.
SIGNED_BUT_OUT_OF_RANGE: dict[str, tuple[dict[str, object], list[str]]] = {
    "version 2**64-1": ({"version": 2**64 - 1}, [
        f"version must be a whole number from 1 to {2**63 - 1}, got 18446744073709551615"]),
    "version 0": ({"version": 0}, [f"version must be a whole number from 1 to {2**63 - 1}, got 0"]),
    "version negative": ({"version": -1}, [f"version must be a whole number from 1 to {2**63 - 1}, got -1"]),
    "version a float": ({"version": 5.0}, [f"version must be a whole number from 1 to {2**63 - 1}, got 5.0"]),
    "version true": ({"version": True}, [f"version must be a whole number from 1 to {2**63 - 1}, got True"]),
    "version text": ({"version": _LONG}, [
        f"version must be a whole number from 1 to {2**63 - 1}, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..."]),
    "issued negative": ({"issued": -5}, [f"issued must be Unix milliseconds from 0 to {2**53}, got -5"]),
    "issued beyond 2**53": ({"issued": 2**53 + 1}, [
        f"issued must be Unix milliseconds from 0 to {2**53}, got {2**53 + 1}"]),
    "issued missing": ({"issued": _ABSENT}, [f"issued must be Unix milliseconds from 0 to {2**53}, got None"]),
    "issued a list": ({"issued": [1]}, [f"issued must be Unix milliseconds from 0 to {2**53}, got a list"]),
    "gw too long": ({"gw": _LONG}, [
        "the document names no target gateway (gw), or not as 1 to 128 characters"]),
    "gw a map": ({"gw": {"a": 1}}, ["the document names no target gateway (gw), or not as 1 to 128 characters"]),
    "type long text": ({"type": _LONG}, [
        "not a configuration push of format 1 (type 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx..., v 1)"]),
    "toml bytes": ({"toml": b"[gateway]"}, ["the document carries no configuration text (toml)"]),
    "trust empty": ({"trust": []}, ["trust must be a list of 1 to 64 public keys"]),
    "trust 65 keys": ({"trust": ["ed25519:" + "A" * 43 + "="] * 65}, ["trust must be a list of 1 to 64 public keys"]),
    "trust a text": ({"trust": "ed25519:AAAA"}, ["trust must be a list of 1 to 64 public keys"]),
    "trust line too long": ({"trust": ["ed25519:" + "A" * 300]}, [
        "trust[0] is not a public key line of at most 200 characters"]),
    "trust line a number": ({"trust": [7]}, ["trust[0] is not a public key line of at most 200 characters"]),
    "trust line of another algorithm": ({"trust": ["rsa:AAAA"]}, [
        "trust[0]: unsupported public key 'rsa:AAAA'"]),
}


@pytest.mark.parametrize("case", list(SIGNED_BUT_OUT_OF_RANGE), ids=list(SIGNED_BUT_OUT_OF_RANGE))
def test_signed_values_out_of_type_or_range_are_refused(operator: BatchSigner, case: str) -> None:
    fields, reasons = SIGNED_BUT_OUT_OF_RANGE[case]
    payload = _signed_document(operator, **fields)

    with pytest.raises(PushRefused) as refused:
        _open(payload, operator)

    assert refused.value.reasons == reasons
    assert all(len(reason) <= 300 for reason in refused.value.reasons)


def test_sign_push_refuses_versions_no_gateway_accepts(operator: BatchSigner) -> None:
    """The operator's side bounds the version and issued time too, before anything is published."""
    from agent.core.errors import RemoteConfigError

    for version, issued in ((0, 1000), (2**63, 1000), (1, -1), (1, 2**53 + 1)):
        with pytest.raises(RemoteConfigError):
            sign_push(operator, gateway="gw-1", version=version, toml="", issued_ms=issued)


def test_push_limits_default_to_the_schemas_defaults() -> None:
    """The decoder's defaults are [remote_config]'s, so a caller without a configuration gets the same rules."""
    from agent.remote.guard import push_limits
    from config.schema import RemoteConfig

    assert PushLimits() == push_limits(RemoteConfig())
